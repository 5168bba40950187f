"""Leave-one-out ablation: score a ruleset without each rule (or group) and measure what it is worth.

A variant's prompt is the full ruleset's compiled prompt without the rules it leaves out; the
remaining rules keep their compiled order. Every variant is scored on the same examples as the
full ruleset, so each difference is paired. The paired bootstrap resamples examples (with
replacement), scores the full ruleset and the variant on the same draw, and takes the 2.5th and
97.5th percentiles of the difference as the 95% interval.

A rule's verdict follows from the interval of the change in macro-F1 when it is left out
(variant minus full ruleset):

- ``helpful``: the whole interval is below 0, so leaving the rule out lowers macro-F1.
- ``harmful``: the whole interval is above 0, so leaving the rule out raises macro-F1.
- ``inert``: the interval contains 0, so this data cannot tell the rule's effect from noise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from pldc.data import Dataset
from pldc.evaluate import EvalResult, evaluate
from pldc.pipeline import CheckedRuleset
from pldc.student import Student

logger = logging.getLogger("pldc")

CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0

Verdict = Literal["helpful", "harmful", "inert"]
VariantKind = Literal["rule", "group"]

VERDICT_CRITERIA: dict[str, str] = {
    "helpful": "the 95% interval of the macro-F1 change without it lies wholly below 0",
    "harmful": "the 95% interval of the macro-F1 change without it lies wholly above 0",
    "inert": "the 95% interval of the macro-F1 change without it contains 0",
}

# Opens a progress bar for one scoring pass: called with a description and the number of
# examples, it returns a context manager that yields the callback `evaluate` reports to.
ProgressFactory = Callable[[str, int], AbstractContextManager[Callable[[int], None] | None]]


@dataclass(frozen=True)
class Effect:
    """Change of one score when a variant's rules are left out (variant minus full), with its interval."""

    delta: float
    low: float
    high: float

    def to_json(self) -> dict[str, float]:
        return {"delta": self.delta, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Flip:
    """An example whose prediction changes when a variant's rules are left out."""

    example_id: str
    gold: str
    before: str
    after: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.example_id, "gold": self.gold, "before": self.before, "after": self.after}


@dataclass(frozen=True)
class Variant:
    """A rule or a group to leave out, with the ids of the rules it covers."""

    name: str
    kind: VariantKind
    removed: tuple[str, ...]


@dataclass(frozen=True)
class VariantResult:
    """The scored run of one variant, compared with the full ruleset."""

    variant: Variant
    result: EvalResult
    macro_f1: Effect
    per_class: dict[str, Effect]
    flips: tuple[Flip, ...]
    verdict: Verdict

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.variant.name,
            "kind": self.variant.kind,
            "removed": list(self.variant.removed),
            "verdict": self.verdict,
            "macro_f1": self.macro_f1.to_json(),
            "per_class": {label: effect.to_json() for label, effect in self.per_class.items()},
            "flips": [flip.to_json() for flip in self.flips],
            "result": self.result.to_json(),
        }


@dataclass(frozen=True)
class Ablation:
    """The full ruleset's run and one result per variant, in the order they were planned."""

    full: EvalResult
    variants: tuple[VariantResult, ...]
    resamples: int
    seed: int

    def rule_results(self) -> tuple[VariantResult, ...]:
        return tuple(v for v in self.variants if v.variant.kind == "rule")


def plan_variants(checked: CheckedRuleset, groups: bool = False) -> list[Variant]:
    """List one variant per rule in compiled order, then, with ``groups``, one per non-empty group."""
    variants = [Variant(rule.id.value, "rule", (rule.id.value,)) for rule in checked.ordered]
    if groups:
        for group in checked.ruleset.groups:
            removed = tuple(rule.id.value for rule in checked.ordered if rule.group == group.name.value)
            if removed:
                variants.append(Variant(group.name.value, "group", removed))
    return variants


def without_rules(checked: CheckedRuleset, removed: Sequence[str]) -> CheckedRuleset:
    """Return ``checked`` with ``removed`` rule ids left out of the compiled order."""
    leave_out = set(removed)
    return replace(checked, ordered=[rule for rule in checked.ordered if rule.id.value not in leave_out])


def ablate(
    checked: CheckedRuleset,
    dataset: Dataset,
    student: Student,
    *,
    groups: bool = False,
    calibrate: bool = True,
    template: str = "default",
    use_cache: bool = True,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    progress: ProgressFactory | None = None,
) -> Ablation:
    """Score the full ruleset, then every variant, and compare each variant with the full run.

    Variants that leave out the same rules (a group of one rule and that rule) are scored once.
    """
    task = checked.ruleset.task
    assert task is not None
    labels = [label.name.value for label in task.labels]
    total = len(dataset.examples)

    def run(description: str, variant_ruleset: CheckedRuleset) -> EvalResult:
        opener = progress(description, total) if progress is not None else nullcontext(None)
        with opener as callback:
            return evaluate(
                variant_ruleset,
                dataset,
                student,
                include_rules=True,
                calibrate=calibrate,
                template=template,
                use_cache=use_cache,
                progress=callback,
            )

    full = run("full ruleset", checked)
    logger.info("full ruleset: macro-F1 %.4f", full.metrics.macro_f1)
    scored: dict[frozenset[str], EvalResult] = {}
    results: list[VariantResult] = []
    for variant in plan_variants(checked, groups):
        key = frozenset(variant.removed)
        if key not in scored:
            scored[key] = run(f"without {variant.name}", without_rules(checked, variant.removed))
        result = scored[key]
        results.append(compare(variant, full, result, labels, resamples, seed))
        logger.info("without %s: macro-F1 %+.4f", variant.name, results[-1].macro_f1.delta)
    return Ablation(full, tuple(results), resamples, seed)


def compare(
    variant: Variant, full: EvalResult, result: EvalResult, labels: Sequence[str], resamples: int, seed: int
) -> VariantResult:
    """Compare a variant's predictions with the full run's, example by example."""
    gold = [p.gold for p in full.predictions]
    before = [p.predicted for p in full.predictions]
    after = [p.predicted for p in result.predictions]
    macro, per_class = paired_bootstrap(gold, before, after, labels, resamples, seed)
    flips = tuple(
        Flip(a.example_id, a.gold, a.predicted, b.predicted)
        for a, b in zip(full.predictions, result.predictions, strict=True)
        if a.predicted != b.predicted
    )
    return VariantResult(variant, result, macro, per_class, flips, classify(macro))


def classify(effect: Effect) -> Verdict:
    """Judge a rule by the interval of the macro-F1 change when it is left out (see the module docstring)."""
    if effect.high < 0:
        return "helpful"
    if effect.low > 0:
        return "harmful"
    return "inert"


def paired_bootstrap(
    gold: Sequence[str],
    before: Sequence[str],
    after: Sequence[str],
    labels: Sequence[str],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> tuple[Effect, dict[str, Effect]]:
    """Return the change from ``before`` to ``after`` in macro-F1 and in each label's F1.

    Each effect's point estimate is the change on the data as given, and its interval contains the
    central 95% of the changes over ``resamples`` paired resamples of the examples. The same
    ``seed`` draws the same resamples, so variants scored on the same data share their draws.
    """
    if not len(gold) == len(before) == len(after):
        raise ValueError("gold, before and after must have one entry per example")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    index = {label: position for position, label in enumerate(labels)}
    gold_ids = np.array([index[label] for label in gold])
    before_ids = np.array([index[label] for label in before])
    after_ids = np.array([index[label] for label in after])
    size = len(gold)
    observed = np.ones((1, size))
    rng = np.random.default_rng(seed)
    # Row b counts how often each example appears in resample b.
    counts = rng.multinomial(size, np.full(size, 1.0 / size), size=resamples).astype(float)
    width = len(labels)
    point_class, point_macro = _weighted_f1(observed, gold_ids, after_ids, width)
    base_class, base_macro = _weighted_f1(observed, gold_ids, before_ids, width)
    draws_class, draws_macro = _weighted_f1(counts, gold_ids, after_ids, width)
    draws_base_class, draws_base_macro = _weighted_f1(counts, gold_ids, before_ids, width)
    tail = (1.0 - CONFIDENCE) / 2 * 100
    percentiles = [tail, 100 - tail]

    def effect(point: float, draws: np.ndarray) -> Effect:
        low, high = np.percentile(draws, percentiles)
        return Effect(float(point), float(low), float(high))

    macro = effect(point_macro[0] - base_macro[0], draws_macro - draws_base_macro)
    per_class = {
        label: effect(
            point_class[0, column] - base_class[0, column], draws_class[:, column] - draws_base_class[:, column]
        )
        for column, label in enumerate(labels)
    }
    return macro, per_class


def _weighted_f1(
    counts: np.ndarray, gold: np.ndarray, predicted: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-label F1 and macro-F1 for each row of example weights.

    Macro-F1 averages over the labels with gold support in that row, as
    :func:`pldc.metrics.compute_metrics` does, and a label with no gold and no predicted
    examples has F1 0.
    """
    identity = np.eye(width)
    gold_hot = identity[gold]
    predicted_hot = identity[predicted]
    true_positives = counts @ (gold_hot * predicted_hot)
    support = counts @ gold_hot
    predicted_total = counts @ predicted_hot
    # 2·TP + FP + FN equals the gold support plus the predicted count.
    denominator = support + predicted_total
    f1 = np.divide(2 * true_positives, denominator, out=np.zeros_like(true_positives), where=denominator > 0)
    present = support > 0
    macro = (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    return f1, macro
