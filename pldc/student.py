"""A transformers student that scores every label by its log-probability or generates an answer.

The chat prompt is laid out so that what examples share comes first: the system prompt, then
the inputs that neighbouring examples share (a ContractNLI document), then the example's own
inputs and the assistant header. The shared prefix is encoded once and its key/value cache is
reused; the cache of a shared input is reused while consecutive examples share it. A label's
score is the sum of the log-probabilities of all its tokens after the assistant header.

The student keeps at most one system-prompt cache and one shared-input cache between calls, so
scoring a split in chunks encodes the prompt once, and memory grows with the longest prompt
and document, never with the number of examples.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pldc.backend import Generation
from pldc.data import Example
from pldc.errors import ModelError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("pldc")

_PLACEHOLDER = "\u2063PLDC-USER-CONTENT\u2063"
CONTENT_FREE = "N/A"
# Shared inputs longer than this many tokens are encoded in pieces, which bounds the
# activation memory of one forward pass on a long document.
ENCODE_PIECE_TOKENS = 1024
# Values sampled per weight tensor for the model's identity digest.
_DIGEST_SAMPLES = 4096


@dataclass
class ScoreStats:
    """Cost of scoring and generation: forward passes, tokens run through the model, wall time."""

    forward_calls: int = 0
    tokens_processed: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class ChatFrame:
    """Text before and after the user content, with the system prompt folded in."""

    before: str
    after: str
    system_folded: bool


@dataclass
class Student:
    """A causal language model loaded through transformers, with its tokenizer."""

    name: str
    model: Any
    tokenizer: Any
    batch_size: int = 16
    stats: ScoreStats = field(default_factory=ScoreStats)
    supports_logprobs: bool = field(default=True, init=False)
    _identity: dict[str, Any] | None = field(default=None, init=False, repr=False)
    # The most recent system-prompt cache and shared-input cache, keyed by their token ids.
    _prefix_memo: tuple[tuple[int, ...], Any] | None = field(default=None, init=False, repr=False)
    _shared_memo: tuple[tuple[int, ...], Any] | None = field(default=None, init=False, repr=False)

    @property
    def model_type(self) -> str:
        return str(getattr(self.model.config, "model_type", ""))

    def identity(self) -> dict[str, Any]:
        """Describe the model for the call cache: backend, name, dtype, device and a weights digest.

        The digest covers the model config, the tokenizer's vocabulary and chat template, and a
        strided sample of every weight tensor, so computing it reads a few thousand values per
        tensor rather than the whole model. It is computed once per student.
        NOTE: two models that differ only in weights the sample skips get the same digest; a
        fine-tune changes nearly every value, so the sample distinguishes fine-tunes.
        """
        if self._identity is None:
            parameter = next(self.model.parameters())
            self._identity = {
                "backend": "transformers",
                "model": self.name,
                "dtype": str(parameter.dtype).removeprefix("torch."),
                "device": parameter.device.type,
                "weights_sha256": _weights_digest(self.model, self.tokenizer),
            }
        return dict(self._identity)

    def clear_cache(self) -> None:
        """Free the kept system-prompt and shared-input caches."""
        self._prefix_memo = None
        self._shared_memo = None

    # -- prompt layout ----------------------------------------------------

    def chat_frame(self, system_prompt: str) -> ChatFrame:
        """Split the chat template's rendering around the user content.

        Gemma chat templates have no system role, so for Gemma (and any template that rejects a
        system message) the system prompt opens the first user turn instead.
        """
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ModelError(f"model {self.name!r} has no chat template; pldc needs a chat (instruction-tuned) model")
        fold = self.model_type.startswith("gemma")
        if not fold:
            try:
                rendered = self._render_chat(
                    [{"role": "system", "content": system_prompt}, {"role": "user", "content": _PLACEHOLDER}]
                )
            except Exception as error:  # noqa: BLE001 - templates raise arbitrary errors for unknown roles
                logger.info(
                    "chat template of %s rejects a system role (%s); folding it into the user turn", self.name, error
                )
                fold = True
        if fold:
            rendered = self._render_chat([{"role": "user", "content": f"{system_prompt}\n\n{_PLACEHOLDER}"}])
        before, found, after = rendered.partition(_PLACEHOLDER)
        if not found:
            raise ModelError(f"chat template of {self.name!r} dropped the user message")
        return ChatFrame(before, after, fold)

    def _render_chat(self, messages: list[dict[str, str]]) -> str:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return str(text)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def label_ids(self, labels: Sequence[str]) -> list[list[int]]:
        encoded = [self.encode(label) for label in labels]
        for label, ids in zip(labels, encoded, strict=True):
            if not ids:
                raise ModelError(f"label {label!r} encodes to no tokens")
        seen: dict[tuple[int, ...], str] = {}
        for label, ids in zip(labels, encoded, strict=True):
            if tuple(ids) in seen:
                raise ModelError(f"labels {seen[tuple(ids)]!r} and {label!r} encode to the same tokens")
            seen[tuple(ids)] = label
        return encoded

    # -- scoring ------------------------------------------------------------

    def score(
        self,
        system_prompt: str,
        examples: Sequence[Example],
        labels: Sequence[str],
        input_names: Sequence[str],
        progress: Callable[[int], None] | None = None,
        use_cache: bool = True,
    ) -> list[list[float]]:
        """Return, per example, the log-probability of each label (in ``labels`` order)."""
        layout = PromptLayout.build(self, system_prompt, input_names)
        label_ids = self.label_ids(labels)
        started = time.perf_counter()
        import torch

        with torch.inference_mode():
            if use_cache:
                scores = self._score_cached(layout, examples, label_ids, progress)
            else:
                scores = self._score_naive(layout, examples, label_ids, progress)
        self.stats.seconds += time.perf_counter() - started
        return scores

    def _forward(self, input_ids: torch.Tensor, past: Any = None, keep: int | torch.Tensor | None = None) -> Any:
        self.stats.forward_calls += 1
        self.stats.tokens_processed += int(input_ids.numel())
        kwargs: dict[str, Any] = {"input_ids": input_ids, "use_cache": True}
        if past is not None:
            kwargs["cache"] = past
        if keep is not None:
            kwargs["logits_to_keep"] = keep
        return self.model(**kwargs)

    def _score_naive(
        self,
        layout: PromptLayout,
        examples: Sequence[Example],
        label_ids: list[list[int]],
        progress: Callable[[int], None] | None,
    ) -> list[list[float]]:
        import torch

        results: list[list[float]] = []
        for example in examples:
            context = layout.prefix + layout.shared(example) + layout.own(example)
            row: list[float] = []
            for ids in label_ids:
                sequence = torch.tensor([context + ids])
                # The last len(ids) + 1 positions include the len(ids) that predict the label.
                logits = self._forward(sequence, keep=len(ids) + 1).logits[0].float()
                logprobs = torch.log_softmax(logits[: len(ids)], dim=-1)
                row.append(float(sum(logprobs[j, token] for j, token in enumerate(ids))))
            results.append(row)
            if progress:
                progress(1)
        return results

    def _score_cached(
        self,
        layout: PromptLayout,
        examples: Sequence[Example],
        label_ids: list[list[int]],
        progress: Callable[[int], None] | None,
    ) -> list[list[float]]:
        base = self._prefix_cache(layout.prefix)
        # Sliding-window layers keep only recent keys, which a packed row cannot address.
        packed = not any(getattr(layer, "is_sliding", False) for layer in base.layers)
        score_chunk = self._score_chunk_packed if packed else self._score_chunk
        results: list[list[float]] = [[] for _ in examples]
        for shared_ids, positions in _shared_groups(layout, examples):
            cache = self._shared_cache(base, shared_ids)
            for start in range(0, len(positions), self.batch_size):
                chunk = positions[start : start + self.batch_size]
                own = [layout.own(examples[i]) for i in chunk]
                for index, scores in zip(chunk, score_chunk(cache, own, label_ids), strict=True):
                    results[index] = scores
                if progress:
                    progress(len(chunk))
        return results

    def _prefix_cache(self, prefix: list[int]) -> Any:
        """Return the key/value cache of ``prefix``, encoding it unless it is the kept one."""
        import torch

        key = tuple(prefix)
        if self._prefix_memo is not None and self._prefix_memo[0] == key:
            return self._prefix_memo[1]
        self.clear_cache()
        cache = _returned_cache(self._forward(torch.tensor([prefix]), keep=1))
        self._prefix_memo = (key, cache)
        return cache

    def _shared_cache(self, base: Any, shared_ids: list[int]) -> Any:
        """Return ``base`` extended by ``shared_ids``, encoding them unless they are the kept ones.

        The extension is encoded in pieces of ``ENCODE_PIECE_TOKENS`` tokens. Only the last
        position's logits are computed, so a long document never needs logits for all its tokens.
        """
        import torch

        if not shared_ids:
            return base
        key = tuple(shared_ids)
        if self._shared_memo is not None and self._shared_memo[0] == key:
            return self._shared_memo[1]
        self._shared_memo = None
        cache = _expand(base, 1)
        for start in range(0, len(shared_ids), ENCODE_PIECE_TOKENS):
            piece = shared_ids[start : start + ENCODE_PIECE_TOKENS]
            cache = _returned_cache(self._forward(torch.tensor([piece]), past=cache, keep=1))
        self._shared_memo = (key, cache)
        return cache

    def token_lower_bound(
        self, system_prompt: str, examples: Sequence[Example], labels: Sequence[str], input_names: Sequence[str]
    ) -> int:
        """Count the tokens any exact scorer must run through the model at least once.

        They are the system prompt once, each distinct shared input once, and each example's
        own tokens (its inputs and the assistant header). Each example also needs each distinct
        proper prefix of the labels' tokens, because that prefix predicts the label's next token.
        """
        layout = PromptLayout.build(self, system_prompt, input_names)
        heads = {tuple(ids[:end]) for ids in self.label_ids(labels) for end in range(1, len(ids))}
        shared_texts: dict[tuple[str, ...], Example] = {}
        for example in examples:
            names = layout.input_names[: example.shared]
            shared_texts.setdefault(tuple(example.inputs[name] for name in names), example)
        total = len(layout.prefix)
        total += sum(len(layout.shared(example)) for example in shared_texts.values())
        total += sum(len(layout.own(example)) + len(heads) for example in examples)
        return total

    # -- generation -------------------------------------------------------------

    def generate(
        self,
        system_prompt: str,
        examples: Sequence[Example],
        input_names: Sequence[str],
        max_new_tokens: int,
        progress: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """Generate a greedy answer per example, reusing the prompt and shared-input caches.

        Generation stops at an end-of-sequence token of the model or after ``max_new_tokens``
        tokens. ``Generation.tokens`` counts every generated token, the stop token included, and
        ``Generation.seconds`` is the time of the example's own forward passes.
        """
        import torch

        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        layout = PromptLayout.build(self, system_prompt, input_names)
        stop = self._stop_ids()
        results: list[Generation | None] = [None] * len(examples)
        started = time.perf_counter()
        with torch.inference_mode():
            base = self._prefix_cache(layout.prefix)
            for shared_ids, positions in _shared_groups(layout, examples):
                cache = self._shared_cache(base, shared_ids)
                for index in positions:
                    example_started = time.perf_counter()
                    tokens = self._greedy(cache, layout.own(examples[index]), max_new_tokens, stop)
                    answer = [token for token in tokens if token not in stop]
                    text = str(self.tokenizer.decode(answer, skip_special_tokens=True))
                    results[index] = Generation(text, len(tokens), time.perf_counter() - example_started)
                    if progress:
                        progress(1)
        self.stats.seconds += time.perf_counter() - started
        return [generation for generation in results if generation is not None]

    def _greedy(self, cache: Any, own: list[int], max_new_tokens: int, stop: frozenset[int]) -> list[int]:
        import torch

        output = self._forward(torch.tensor([own]), past=_expand(cache, 1), keep=1)
        tokens: list[int] = []
        while True:
            token = int(output.logits[0, -1].argmax())
            tokens.append(token)
            if token in stop or len(tokens) >= max_new_tokens:
                break
            output = self._forward(torch.tensor([[token]]), past=_returned_cache(output), keep=1)
        self.stats.generated_tokens += len(tokens)
        return tokens

    def _stop_ids(self) -> frozenset[int]:
        """Collect the end-of-sequence ids of the generation config and the tokenizer."""
        ids: set[int] = set()
        sources = [getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)]
        sources.append(self.tokenizer.eos_token_id)
        for source in sources:
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, list | tuple):
                ids.update(int(value) for value in source)
        if not ids:
            raise ModelError(f"model {self.name!r} declares no end-of-sequence token, so generation cannot stop")
        return frozenset(ids)

    def _score_chunk(self, cache: Any, own: list[list[int]], label_ids: list[list[int]]) -> list[list[float]]:
        """Score all labels of several examples in one forward pass over a shared cache."""
        import torch

        contexts = _label_contexts(label_ids)
        rows: list[list[int]] = []
        for ids in own:
            rows.extend(ids + extension for extension in contexts)
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # Right padding: causal attention keeps every real position blind to the padding after it.
        batch = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        needed = sorted({len(ids) - 1 + j for ids in own for ext in contexts for j in range(len(ext) + 1)})
        keep = torch.tensor(needed)
        column = {position: c for c, position in enumerate(needed)}
        logits = self._forward(batch, past=_expand(cache, len(rows)), keep=keep).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        scores: list[list[float]] = []
        for e, ids in enumerate(own):
            row_scores: list[float] = []
            for label in label_ids:
                c = _context_for(contexts, label)
                row = e * len(contexts) + c
                total = 0.0
                for j, token in enumerate(label):
                    total += float(logprobs[row, column[len(ids) - 1 + j], token])
                row_scores.append(total)
            scores.append(row_scores)
        return scores

    def _score_chunk_packed(self, cache: Any, own: list[list[int]], label_ids: list[list[int]]) -> list[list[float]]:
        """Score several examples and all their labels in one packed row over a batch-1 cache.

        The row contains each example's tokens followed by one branch per multi-token label. A
        4D attention mask lets every token see the cached prefix, its own example and earlier
        tokens of its own branch, and position ids restart after the prefix for each example,
        so each token is computed exactly as in its own sequence. Nothing is processed twice.
        """
        import torch

        prefix = cache.get_seq_length()
        tokens: list[int] = []
        positions: list[int] = []
        blocks: list[tuple[int, int, int, int]] = []  # (start, end, parent start, parent end)
        # For each example and label: the row index that predicts each label token.
        predictors: list[list[list[int]]] = []
        for ids in own:
            start = len(tokens)
            tokens.extend(ids)
            positions.extend(range(prefix, prefix + len(ids)))
            end = len(tokens)
            blocks.append((start, end, start, start))
            per_label: list[list[int]] = []
            for label in label_ids:
                branch_start = len(tokens)
                head = label[:-1]
                tokens.extend(head)
                positions.extend(range(prefix + len(ids), prefix + len(ids) + len(head)))
                if head:
                    blocks.append((branch_start, len(tokens), start, end))
                per_label.append([end - 1, *range(branch_start, branch_start + len(head))])
            predictors.append(per_label)
        width = len(tokens)
        allowed = torch.zeros(width, prefix + width, dtype=torch.bool)
        allowed[:, :prefix] = True
        for start, end, parent_start, parent_end in blocks:
            allowed[start:end, prefix + parent_start : prefix + parent_end] = True
            allowed[start:end, prefix + start : prefix + end] = torch.tril(
                torch.ones(end - start, end - start, dtype=torch.bool)
            )
        dtype = next(self.model.parameters()).dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        needed = sorted({row for per_label in predictors for rows in per_label for row in rows})
        column = {row: c for c, row in enumerate(needed)}
        self.stats.forward_calls += 1
        self.stats.tokens_processed += width
        output = self.model(
            input_ids=torch.tensor([tokens]),
            position_ids=torch.tensor([positions]),
            attention_mask=mask[None, None],
            cache=_expand(cache, 1),
            use_cache=True,
            logits_to_keep=torch.tensor(needed),
        )
        logprobs = torch.log_softmax(output.logits[0].float(), dim=-1)
        return [
            [
                sum(float(logprobs[column[row], token]) for row, token in zip(rows, label, strict=True))
                for rows, label in zip(per_label, label_ids, strict=True)
            ]
            for per_label in predictors
        ]


@dataclass(frozen=True)
class PromptLayout:
    """Token ids of the prompt pieces: shared prefix, then per-input segments, then the suffix."""

    prefix: list[int]
    input_names: tuple[str, ...]
    suffix: list[int]
    student: Student

    @classmethod
    def build(cls, student: Student, system_prompt: str, input_names: Sequence[str]) -> PromptLayout:
        frame = student.chat_frame(system_prompt)
        return cls(student.encode(frame.before), tuple(input_names), student.encode(frame.after), student)

    def segment(self, example: Example, position: int) -> list[int]:
        name = self.input_names[position]
        separator = "\n\n" if position < len(self.input_names) - 1 else ""
        return self.student.encode(f"{name}: {example.inputs[name]}{separator}")

    def shared(self, example: Example) -> list[int]:
        ids: list[int] = []
        for position in range(min(example.shared, len(self.input_names))):
            ids.extend(self.segment(example, position))
        return ids

    def own(self, example: Example) -> list[int]:
        ids: list[int] = []
        for position in range(min(example.shared, len(self.input_names)), len(self.input_names)):
            ids.extend(self.segment(example, position))
        return ids + self.suffix


def content_free(example: Example) -> Example:
    """Return the same example with every input replaced by ``N/A`` (for calibration)."""
    return Example("content-free", {name: CONTENT_FREE for name in example.inputs}, example.label, 0)


def _shared_groups(layout: PromptLayout, examples: Sequence[Example]) -> Iterator[tuple[list[int], list[int]]]:
    """Group consecutive examples that share their leading inputs."""
    current_key: tuple[str, ...] | None = None
    positions: list[int] = []
    shared_ids: list[int] = []
    for index, example in enumerate(examples):
        names = layout.input_names[: example.shared]
        key = tuple(example.inputs[n] for n in names)
        if key != current_key and positions:
            yield shared_ids, positions
            positions = []
        if key != current_key:
            current_key = key
            shared_ids = layout.shared(example)
        positions.append(index)
    if positions:
        yield shared_ids, positions


def _label_contexts(label_ids: list[list[int]]) -> list[list[int]]:
    """Return the minimum set of label prefixes whose positions cover every token of every label."""
    heads = sorted({tuple(ids[:-1]) for ids in label_ids}, key=len, reverse=True)
    kept: list[tuple[int, ...]] = []
    for head in heads:
        if not any(other[: len(head)] == head for other in kept):
            kept.append(head)
    return [list(head) for head in kept]


def _context_for(contexts: list[list[int]], label: list[int]) -> int:
    head = label[:-1]
    for index, context in enumerate(contexts):
        if context[: len(head)] == head:
            return index
    raise AssertionError("label context missing")


def _returned_cache(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    if cache is None:
        raise ModelError("the model returned no key/value cache; rerun with --no-prefix-cache")
    return cache


def _expand(cache: Any, rows: int) -> Any:
    """Return a cache whose layers view ``cache``'s tensors repeated ``rows`` times, without copying.

    Cache layers grow by concatenation, which allocates new tensors, so the views in the
    returned cache never write into ``cache``.
    """
    expanded = copy.copy(cache)
    layers = []
    for layer in cache.layers:
        clone = copy.copy(layer)
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            clone.keys = layer.keys.expand(rows, *layer.keys.shape[1:])
            clone.values = layer.values.expand(rows, *layer.values.shape[1:])
        layers.append(clone)
    expanded.layers = layers
    return expanded


def load_student(reference: str | None = None, batch_size: int = 16, device: str = "cpu") -> Student:
    """Load the embedded default (``None`` or ``embedded``), a local folder or a cached Hub id."""
    from pldc.embedded import EMBEDDED_NAME, prepare_embedded

    if reference in (None, EMBEDDED_NAME):
        path: str = str(prepare_embedded())
        name = "SmolLM2-135M-Instruct (embedded)"
    else:
        path = reference
        name = reference
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as transformers_logging
    except ImportError:
        raise ModelError(
            "transformers is not installed; install pldc with the 'model' extra: pip install 'pldc[model]'"
        ) from None
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    local = Path(path).is_dir()
    looks_like_path = path.startswith((".", "/", "~")) or path.count("/") > 1
    if looks_like_path and not local:
        raise ModelError(f"{path}: model folder not found")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype="float32")
    except (OSError, ValueError, KeyError) as error:
        # transformers reports a missing or unusable model with OSError, ValueError or KeyError.
        where = "folder" if local else "Hugging Face id (looked only in the local cache; no download)"
        raise ModelError(f"cannot load model {reference!r} as a {where}: {error}".splitlines()[0]) from None
    model = model.to(device)  # type: ignore[arg-type]
    model.eval()
    logger.info("loaded %s (%s, %.1fM parameters)", name, type(model).__name__, _parameters(model) / 1e6)
    return Student(name=name, model=model, tokenizer=tokenizer, batch_size=batch_size)


def _weights_digest(model: Any, tokenizer: Any) -> str:
    """Hash the config, the tokenizer and a strided sample of every weight tensor (see ``identity``)."""
    digest = hashlib.sha256()
    # The load path and the transformers version do not change what the model computes.
    config = {k: v for k, v in model.config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(str(getattr(tokenizer, "chat_template", "")).encode())
    digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // _DIGEST_SAMPLES)
        sample = flat[::step][:_DIGEST_SAMPLES].float().cpu().numpy()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()


def _parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def softmax(scores: Sequence[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]
