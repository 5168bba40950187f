"""Score a compiled ruleset with a student on a dataset and compute its metrics.

Scoring modes:

- ``logprob``: the student scores every label by its log-probability and the best label wins,
  optionally calibrated against a content-free input. Needs a backend with log-probabilities.
- ``generate``: the student answers freely (greedy decoding) and ``pldc.answers`` parses the
  answer into a label, as a deployed system would.
- ``cot``: the prompt asks the student to reason first and end with ``Answer: LABEL``; the
  last such line is parsed. Unparseable answers count as wrong in both generation modes.

Every model call goes through the call cache (see ``pldc.calls``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pldc.answers import UNPARSEABLE, label_spellings, parse_answer
from pldc.backend import StudentBackend
from pldc.cache import CallCache
from pldc.calls import DEFAULT_CHUNK_SIZE, CachedRun, call_parts, run_cached
from pldc.compile import compile_prompt
from pldc.data import Dataset, Example
from pldc.errors import UsageError
from pldc.metrics import Metrics, compute_metrics
from pldc.pipeline import CheckedRuleset
from pldc.student import Student, content_free

logger = logging.getLogger("pldc")

SCORING_MODES = ("logprob", "generate", "cot")
# Generation budgets per mode: a direct answer is one label; a reasoned answer needs room
# for the reasoning and its final line.
DEFAULT_MAX_NEW_TOKENS = {"generate": 16, "cot": 256}


@dataclass(frozen=True)
class Prediction:
    """One example's gold and predicted label, label scores (``logprob``) or generated answer."""

    example_id: str
    gold: str
    predicted: str
    scores: dict[str, float]
    answer: str | None = None


@dataclass(frozen=True)
class EvalResult:
    """One scored run: the prompt variant, its metrics, predictions, cost and cache use.

    ``latency_seconds`` is the mean model time per example, measured when each result was
    computed (cached results keep their original time). ``seconds`` is this run's wall time.
    ``tokens_processed`` and ``tokens_lower_bound`` are known for the transformers student only.
    """

    variant: str
    metrics: Metrics
    predictions: list[Prediction]
    seconds: float
    prompt_tokens: int | None
    calibration: dict[str, float] | None
    scoring: str = "logprob"
    shots: int = 0
    cache_hits: int = 0
    computed: int = 0
    latency_seconds: float = 0.0
    generated_tokens: int = 0
    unparseable: tuple[str, ...] = ()
    tokens_processed: int | None = None
    tokens_lower_bound: int | None = None

    @property
    def examples_per_second(self) -> float:
        return len(self.predictions) / self.seconds if self.seconds > 0 else 0.0

    @property
    def generated_tokens_per_example(self) -> float:
        return self.generated_tokens / len(self.predictions) if self.predictions else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "variant": self.variant,
            "scoring": self.scoring,
            "shots": self.shots,
            "metrics": self.metrics.to_json(),
            "examples": len(self.predictions),
            "seconds": round(self.seconds, 3),
            "examples_per_second": round(self.examples_per_second, 3),
            "latency_seconds_per_example": round(self.latency_seconds, 4),
            "generated_tokens": self.generated_tokens,
            "generated_tokens_per_example": round(self.generated_tokens_per_example, 2),
            "unparseable": {"count": len(self.unparseable), "ids": list(self.unparseable)},
            "prompt_tokens": self.prompt_tokens,
            "calibration": self.calibration,
            "cache": {"hits": self.cache_hits, "computed": self.computed},
            "tokens_processed": self.tokens_processed,
            "tokens_lower_bound": self.tokens_lower_bound,
        }


def evaluate(
    checked: CheckedRuleset,
    dataset: Dataset,
    student: StudentBackend,
    include_rules: bool = True,
    calibrate: bool = True,
    template: str = "default",
    use_cache: bool = True,
    progress: Callable[[int], None] | None = None,
    *,
    scoring: str = "logprob",
    max_new_tokens: int | None = None,
    shots: Sequence[Example] = (),
    cache: CallCache | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> EvalResult:
    """Score every example with ``student`` and return metrics over the task's labels.

    Args:
        include_rules: render the ruleset's features and rules; False gives the zero-shot prompt.
        calibrate: in ``logprob`` mode, subtract each label's log-probability on a content-free
            input (every input ``N/A``), which counters a small model's bias toward one label.
            Generation modes ignore it.
        use_cache: let the transformers student reuse the key/value cache of the prompt; False
            selects its naive path. Other backends ignore it.
        scoring: ``logprob``, ``generate`` or ``cot`` (see the module docstring).
        max_new_tokens: generation budget; the default depends on the mode (16 or 256).
        shots: labelled examples rendered into the prompt (a k-shot prompt).
        cache: the call cache; None opens the default one (``PLDC_CALL_CACHE``) for reading
            and writing. Pass ``CallCache(mode=CacheMode.OFF)`` to call the model for everything.
        chunk_size: examples computed between writes to the cache.

    Raises:
        UsageError: an unknown mode, or calibrated ``logprob`` scoring with a backend that has no
            log-probabilities.
    """
    if scoring not in SCORING_MODES:
        raise UsageError(f"unknown scoring mode {scoring!r}; use one of: {', '.join(SCORING_MODES)}")
    if scoring == "logprob" and not student.supports_logprobs and calibrate:
        # Such a backend scores the label it chose 0 and the others minus infinity, which
        # content-free calibration cannot correct.
        raise UsageError(
            f"backend {student.name!r} returns no log-probabilities, so calibration cannot run; "
            "pass --no-calibration, or use --scoring generate or --scoring cot"
        )
    task = checked.ruleset.task
    assert task is not None
    labels = [label.name.value for label in task.labels]
    input_names = [i.name.value for i in task.inputs]
    prompt = compile_prompt(
        checked.ruleset, checked.ordered, template, include_rules=include_rules, shots=shots, reasoning=scoring == "cot"
    )
    budget = max_new_tokens if max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS.get(scoring, 0)
    if scoring != "logprob" and budget < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    call_cache = cache if cache is not None else CallCache()
    try:
        tokens_before = student.stats.tokens_processed if isinstance(student, Student) else 0
        started = time.perf_counter()
        if scoring == "logprob":
            run = _LogprobRun(student, call_cache, prompt.text, labels, input_names, use_cache, chunk_size)
            predictions, calibration, computed_examples = run.predict(dataset.examples, calibrate, progress)
            hits, computed, latency, generated = run.hits, run.computed, run.latency, 0
            unparseable: tuple[str, ...] = ()
        else:
            mode = {"mode": scoring, "decoding": "greedy", "max_new_tokens": budget}
            parts = [
                call_parts("generate", student.identity(), mode, prompt.text, example, input_names, labels)
                for example in dataset.examples
            ]

            def compute(chunk: list[Example]) -> list[dict[str, Any]]:
                generations = student.generate(prompt.text, chunk, input_names, budget, progress=progress)
                return [{"text": g.text, "tokens": g.tokens} for g in generations]

            generation = run_cached(dataset.examples, parts, compute, call_cache, chunk_size, progress)
            predictions = _parse_predictions(
                dataset.examples, generation.results, label_spellings(task), scoring == "cot"
            )
            calibration, computed_examples = None, [dataset.examples[i] for i in generation.computed]
            hits, computed = generation.hits, len(generation.computed)
            latency = _mean([float(result["seconds"]) for result in generation.results])
            generated = sum(int(result["tokens"]) for result in generation.results)
            unparseable = tuple(p.example_id for p in predictions if p.predicted == UNPARSEABLE)
    finally:
        if cache is None:
            call_cache.close()
    seconds = time.perf_counter() - started
    if unparseable:
        logger.warning("%d answers name no single label and count as wrong", len(unparseable))
    processed: int | None = None
    bound: int | None = None
    if isinstance(student, Student):
        processed = student.stats.tokens_processed - tokens_before
        if scoring == "logprob":
            bound = (
                student.token_lower_bound(prompt.text, computed_examples, labels, input_names)
                if computed_examples
                else 0
            )
    metrics = compute_metrics([p.gold for p in predictions], [p.predicted for p in predictions], labels)
    return EvalResult(
        variant="rules" if include_rules else "no-rules",
        metrics=metrics,
        predictions=predictions,
        seconds=seconds,
        prompt_tokens=len(student.encode(prompt.text)) if isinstance(student, Student) else None,
        calibration=calibration,
        scoring=scoring,
        shots=len(shots),
        cache_hits=hits,
        computed=computed,
        latency_seconds=latency,
        generated_tokens=generated,
        unparseable=unparseable,
        tokens_processed=processed,
        tokens_lower_bound=bound,
    )


class _LogprobRun:
    """Label log-probability scoring of one prompt, calibration included, through the cache."""

    def __init__(
        self,
        student: StudentBackend,
        cache: CallCache,
        prompt: str,
        labels: list[str],
        input_names: list[str],
        use_cache: bool,
        chunk_size: int,
    ) -> None:
        self.student = student
        self.cache = cache
        self.prompt = prompt
        self.labels = labels
        self.input_names = input_names
        self.use_cache = use_cache
        self.chunk_size = chunk_size
        self.hits = 0
        self.computed = 0
        self.latency = 0.0

    def predict(
        self, examples: list[Example], calibrate: bool, progress: Callable[[int], None] | None
    ) -> tuple[list[Prediction], dict[str, float] | None, list[Example]]:
        """Return predictions, the calibration offsets and the examples computed in this run."""
        computed_examples: list[Example] = []
        offsets = [0.0] * len(self.labels)
        if calibrate:
            neutral = content_free(examples[0])
            calibration_run = self._scores([neutral], None)
            offsets = list(calibration_run.results[0]["scores"])
            computed_examples.extend(neutral for _ in calibration_run.computed)
        run = self._scores(examples, progress)
        computed_examples.extend(examples[i] for i in run.computed)
        self.latency = _mean([float(result["seconds"]) for result in run.results])
        predictions: list[Prediction] = []
        for example, result in zip(examples, run.results, strict=True):
            adjusted = [score - offset for score, offset in zip(result["scores"], offsets, strict=True)]
            best = max(range(len(self.labels)), key=adjusted.__getitem__)
            scores = dict(zip(self.labels, adjusted, strict=True))
            # Every label at minus infinity: a backend without log-probabilities named no label.
            predicted = self.labels[best] if adjusted[best] > -math.inf else UNPARSEABLE
            predictions.append(Prediction(example.id, example.label, predicted, scores))
        calibration = dict(zip(self.labels, offsets, strict=True)) if calibrate else None
        return predictions, calibration, computed_examples

    def _scores(self, examples: list[Example], progress: Callable[[int], None] | None) -> CachedRun:
        identity = self.student.identity()
        mode = {"mode": "logprob"}
        parts = [
            call_parts("score", identity, mode, self.prompt, example, self.input_names, self.labels)
            for example in examples
        ]
        run = run_cached(
            examples, parts, lambda chunk: self._compute(chunk, progress), self.cache, self.chunk_size, progress
        )
        self.hits += run.hits
        self.computed += len(run.computed)
        return run

    def _compute(self, chunk: list[Example], progress: Callable[[int], None] | None) -> list[dict[str, Any]]:
        if isinstance(self.student, Student):
            rows = self.student.score(
                self.prompt, chunk, self.labels, self.input_names, progress=progress, use_cache=self.use_cache
            )
        else:
            rows = self.student.score(self.prompt, chunk, self.labels, self.input_names, progress=progress)
        return [{"scores": row} for row in rows]


def _parse_predictions(
    examples: Sequence[Example], results: Sequence[dict[str, Any]], spellings: dict[str, str], reasoning: bool
) -> list[Prediction]:
    predictions = []
    for example, result in zip(examples, results, strict=True):
        text = str(result["text"])
        label = parse_answer(text, spellings, reasoning=reasoning)
        predictions.append(Prediction(example.id, example.label, label or UNPARSEABLE, {}, text))
    return predictions


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
