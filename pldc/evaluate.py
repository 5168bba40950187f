"""Score a compiled ruleset with a student on a dataset and compute its metrics."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from pldc.compile import compile_prompt
from pldc.data import Dataset
from pldc.metrics import Metrics, compute_metrics
from pldc.openai_backend import OpenAIBackend
from pldc.pipeline import CheckedRuleset
from pldc.student import Student, content_free

# The prediction of an example whose every label scores minus infinity (an answer that names no label).
NO_LABEL = "(no label)"

logger = logging.getLogger("pldc")


@dataclass(frozen=True)
class Prediction:
    example_id: str
    gold: str
    predicted: str
    scores: dict[str, float]


@dataclass(frozen=True)
class EvalResult:
    """One scored run: the prompt variant, its metrics, predictions and throughput."""

    variant: str
    metrics: Metrics
    predictions: list[Prediction]
    seconds: float
    prompt_tokens: int | None
    calibration: dict[str, float] | None

    @property
    def examples_per_second(self) -> float:
        return len(self.predictions) / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "variant": self.variant,
            "metrics": self.metrics.to_json(),
            "examples": len(self.predictions),
            "seconds": round(self.seconds, 3),
            "examples_per_second": round(self.examples_per_second, 3),
            "prompt_tokens": self.prompt_tokens,
            "calibration": self.calibration,
        }


def evaluate(
    checked: CheckedRuleset,
    dataset: Dataset,
    student: Student | OpenAIBackend,
    include_rules: bool = True,
    calibrate: bool = True,
    template: str = "default",
    use_cache: bool = True,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Score every example and return metrics over the task's labels.

    With ``calibrate``, each label's log-probability on a content-free input (every input
    ``N/A``) is subtracted from its score, which counters a small model's bias toward one label.
    """
    task = checked.ruleset.task
    assert task is not None
    labels = [label.name.value for label in task.labels]
    input_names = [i.name.value for i in task.inputs]
    prompt = compile_prompt(checked.ruleset, checked.ordered, template, include_rules=include_rules)
    started = time.perf_counter()
    offsets = [0.0] * len(labels)
    if calibrate:
        [offsets] = student.score(prompt.text, [content_free(dataset.examples[0])], labels, input_names)
    if isinstance(student, Student):
        raw = student.score(prompt.text, dataset.examples, labels, input_names, progress=progress, use_cache=use_cache)
    else:
        raw = student.score(prompt.text, dataset.examples, labels, input_names, progress=progress)
    seconds = time.perf_counter() - started
    predictions: list[Prediction] = []
    for example, row in zip(dataset.examples, raw, strict=True):
        adjusted = [score - offset for score, offset in zip(row, offsets, strict=True)]
        best = max(range(len(labels)), key=adjusted.__getitem__)
        predicted = labels[best] if adjusted[best] > -math.inf else NO_LABEL
        predictions.append(Prediction(example.id, example.label, predicted, dict(zip(labels, adjusted, strict=True))))
    metrics = compute_metrics([p.gold for p in predictions], [p.predicted for p in predictions], labels)
    return EvalResult(
        variant="rules" if include_rules else "no-rules",
        metrics=metrics,
        predictions=predictions,
        seconds=seconds,
        # A server does not tokenize a prompt on its own, so only the transformers student counts its tokens.
        prompt_tokens=len(student.encode(prompt.text)) if isinstance(student, Student) else None,
        calibration=dict(zip(labels, offsets, strict=True)) if calibrate else None,
    )
