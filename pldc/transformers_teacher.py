"""A local causal language model as the teacher, run in-process through transformers.

The model is the embedded SmolLM2-135M-Instruct by default, or a model folder or a Hugging Face
id already in the local cache (see :func:`pldc.student.load_student`). It is loaded on the first
generation, so a run whose answers are all in the call cache loads no model.

Each request is rendered with the model's chat template: the system instruction, with the
response schema appended as JSON Schema because plain generation cannot enforce it, then the
user turn and, after a rejected answer, that answer and the re-ask turn. A template that rejects
a system role gets the system instruction at the start of the first user turn. Decoding is
greedy and stops at an end-of-sequence token or after ``max_new_tokens`` tokens. One Markdown
code fence around the whole answer is removed before the answer is parsed.

Greedy decoding returns the same text for the same conversation, so besides the accepted
answers that every teacher caches, this teacher stores each generation in the call cache,
keyed by the model reference, ``max_new_tokens`` and the conversation. A re-run replays
rejected answers from there instead of generating them again, and so fails the same way
without loading the model; ``--refresh`` generates anew.

Answers are recorded as ``transformers:MODEL``, where MODEL is the ``--model`` value.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pldc.cache import CallCache
from pldc.embedded import EMBEDDED_NAME
from pldc.errors import ModelError, UsageError
from pldc.teacher import (
    Answer,
    CallStats,
    Reply,
    TeacherRequest,
    Turn,
    ask_through_cache,
    strip_code_fence,
    system_with_schema,
)

if TYPE_CHECKING:
    from pldc.student import Student

logger = logging.getLogger("pldc")

T = TypeVar("T")

MODEL_PREFIX = "transformers:"
# An extraction answer (rationale, rule and up to four feature definitions) is a few hundred
# tokens; this leaves room for long definitions without letting a looping model run for minutes.
DEFAULT_MAX_NEW_TOKENS = 1024


@dataclass(frozen=True)
class TransformersTeacherSettings:
    """The model reference and the generation limits."""

    model: str = EMBEDDED_NAME
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    max_reasks: int = 2

    def __post_init__(self) -> None:
        if not self.model:
            raise UsageError("--model is empty; give 'embedded', a model folder or a Hugging Face id")
        if self.max_new_tokens < 1:
            raise UsageError("--max-new-tokens must be at least 1")
        if self.max_reasks < 0:
            raise UsageError("--max-reasks must be 0 or more")


class TransformersTeacher:
    """Answers :class:`TeacherRequest` s with a local model, greedily, through the call cache.

    ``generations`` counts the texts the model generated and ``replayed`` those read back from
    the call cache. Generation runs one request at a time, whatever the number of workers.
    """

    def __init__(
        self,
        settings: TransformersTeacherSettings,
        cache: CallCache,
        load: Callable[[str], Student] | None = None,
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.stats = CallStats()
        self.generations = 0
        self.replayed = 0
        self._load = load
        self._student: Student | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return MODEL_PREFIX + self.settings.model

    def ask(self, request_id: str, request: TeacherRequest, parse: Callable[[str], T]) -> Answer[T]:
        """Return the parsed answer to ``request``, from the cache or from the model.

        ``parse`` turns the answer text into a value or raises :class:`~pldc.teacher.RejectedAnswer`.
        ``request_id`` (an example id) names the request in logs and errors.
        """
        parameters = {"decoding": "greedy", "max_new_tokens": self.settings.max_new_tokens}
        return ask_through_cache(
            request_id,
            request,
            parse,
            send=lambda turns: self._generate(request, turns),
            cache=self.cache,
            cache_parts=request.cache_parts("transformers", self.settings.model, parameters),
            stats=self.stats,
            model=self.model,
            max_reasks=self.settings.max_reasks,
            hint="greedy decoding repeats these answers on a re-run, so raise --max-new-tokens or --max-reasks, "
            "or use a larger --model",
        )

    def max_new_tokens(self, request: TeacherRequest) -> int:
        """Return the generation limit: ``--max-new-tokens``, lowered to the request's own limit if it sets one."""
        if request.max_output_tokens is None:
            return self.settings.max_new_tokens
        return min(request.max_output_tokens, self.settings.max_new_tokens)

    def _generate(self, request: TeacherRequest, turns: Sequence[Turn]) -> Reply:
        messages = [{"role": "system", "content": system_with_schema(request)}]
        messages += [{"role": turn.role, "content": turn.text} for turn in turns]
        limit = self.max_new_tokens(request)
        # NOTE: the key names the model by its reference, not by its weights. After the files of a
        # model folder change, the old generations are still replayed until a run with --refresh.
        parts = {"backend": "transformers-generation", "model": self.settings.model, "max_new_tokens": limit}
        parts["messages"] = messages
        stored = self.cache.get(parts)
        if stored is not None:
            with self._lock:
                self.replayed += 1
            return Reply(strip_code_fence(stored["text"]), int(stored["tokens"]))
        with self._lock:
            text, tokens = self._greedy(messages, limit)
            self.generations += 1
        self.stats.add(requests=1)
        self.cache.put(parts, {"text": text, "tokens": tokens})
        return Reply(strip_code_fence(text), tokens)

    def _student_model(self) -> Student:
        if self._student is None:
            if self._load is None:
                from pldc.student import load_student

                self._student = load_student(self.settings.model)
            else:
                self._student = self._load(self.settings.model)
        return self._student

    def _greedy(self, messages: list[dict[str, str]], max_new_tokens: int) -> tuple[str, int]:
        """Generate greedily after the chat-formatted ``messages``; return the text and the token count."""
        import torch

        student = self._student_model()
        prompt = render_chat(student, messages)
        encoded = student.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        encoded = encoded.to(student.model.device)
        pad = student.tokenizer.pad_token_id
        if pad is None:
            pad = student.tokenizer.eos_token_id
        with torch.inference_mode():
            output = student.model.generate(
                **encoded, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, pad_token_id=pad
            )
        generated = output[0, encoded["input_ids"].shape[1] :]
        text = str(student.tokenizer.decode(generated, skip_special_tokens=True))
        return text, int(generated.shape[0])


def render_chat(student: Student, messages: list[dict[str, str]]) -> str:
    """Render ``messages`` with the model's chat template, ending with the assistant header.

    A template that raises on the system role gets the system message folded into the first
    user turn.
    """
    from jinja2 import TemplateError

    if getattr(student.tokenizer, "chat_template", None) is None:
        raise ModelError(f"model {student.name!r} has no chat template; the teacher must be a chat model")
    try:
        return str(student.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    except TemplateError as error:
        logger.info(
            "chat template of %s rejects a system role (%s); folding it into the user turn", student.name, error
        )
    system, first, *rest = messages
    folded: list[dict[str, Any]] = [{"role": "user", "content": f"{system['content']}\n\n{first['content']}"}, *rest]
    return str(student.tokenizer.apply_chat_template(folded, tokenize=False, add_generation_prompt=True))
