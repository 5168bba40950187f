"""Remove rules from a parsed ruleset and print the result with the canonical formatter.

Removing a rule also removes what would stop the file from checking: its id in other rules'
``overrides``, a group left with no rules, and every case that can no longer pass. A case is
removed when its ``by`` names a removed rule, or when, with the rules removed, it decides
another label or another rule than it expects. Each removal is returned with its reason, so the
caller can report it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

from pldc import ast
from pldc.ablate import Ablation
from pldc.cases import run_cases
from pldc.errors import PldError, Span
from pldc.format import format_source
from pldc.order import order_rules
from pldc.parse import ParseResult
from pldc.pipeline import CheckedRuleset, first_error

logger = logging.getLogger("pldc")

PRUNE_CRITERION = (
    "a rule is pruned when the lower end of the 95% interval of the macro-F1 change without it is at least 0"
)


def prunable_rules(ablation: Ablation) -> tuple[str, ...]:
    """Return the rules that meet :data:`PRUNE_CRITERION`, in compiled order.

    Leave-one-out effects are measured one rule at a time and do not add up, so removing several
    rules together is only safe when no single removal shows a plausible loss. A point-estimate
    criterion (change at least 0) would also drop rules whose worth is hidden in the noise, and
    several such drops can add up to a real loss.
    """
    return tuple(v.variant.name for v in ablation.rule_results() if v.macro_f1.low >= 0)


class PruneFailed(PldError):
    """A pruned ruleset that would not pass ``pldc check``."""


@dataclass(frozen=True)
class Removal:
    """One construct removed from the file, and why."""

    kind: str
    name: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "reason": self.reason}


@dataclass(frozen=True)
class PrunedRuleset:
    """The canonical text of the pruned file, and every removal and edit made to it."""

    text: str
    removals: tuple[Removal, ...]


def prune(parsed: ParseResult, remove: Collection[str], path: str = "<pruned>") -> PrunedRuleset:
    """Remove the rules ``remove`` from ``parsed`` and return the pruned file's canonical text.

    Raises :class:`PruneFailed` when an id in ``remove`` is not a rule of the file, or when the
    pruned file does not pass the checks of ``pldc check`` (parse, resolve, order, cases and the
    analysis at its default levels).
    """
    ruleset = parsed.ruleset
    known = {rule.id.value for rule in ruleset.rules}
    unknown = sorted(set(remove) - known)
    if unknown:
        raise PruneFailed(f"cannot prune {', '.join(unknown)}: no such rule in {ruleset.path}")
    leave_out = set(remove)
    removals: list[Removal] = []
    dropped_spans: list[Span] = []
    items: list[ast.Item] = []
    for item in ruleset.items:
        if isinstance(item, ast.Rule):
            kept_rule = _keep_rule(item, leave_out, removals, dropped_spans)
            if kept_rule is not None:
                items.append(kept_rule)
        elif isinstance(item, ast.Group):
            rules = [r for r in (_keep_rule(rule, leave_out, removals, dropped_spans) for rule in item.rules) if r]
            if rules:
                items.append(item.model_copy(update={"rules": tuple(rules)}))
            else:
                removals.append(Removal("group", item.name.value, "all of its rules were pruned"))
                dropped_spans.append(item.span)
        elif isinstance(item, ast.Case) and item.by is not None and item.by.value in leave_out:
            removals.append(Removal("case", item.name.value, f"it expects the pruned rule {item.by.value} to decide"))
            dropped_spans.append(item.span)
        else:
            items.append(item)
    pruned = ruleset.model_copy(update={"items": tuple(items)})
    pruned = _drop_failing_cases(pruned, removals, dropped_spans)
    comments = tuple(c for c in parsed.comments if not any(_inside(c.line, span) for span in dropped_spans))
    # NOTE: a comment on the lines just above a pruned rule is kept and now precedes the next item.
    text = format_source(ParseResult(pruned, comments, parsed.source))
    checked = _verify(text, path)
    expected = [rule.id.value for rule in order_rules(ruleset).rules if rule.id.value not in leave_out]
    if [rule.id.value for rule in checked.ordered] != expected:
        # Dropping a rule also drops the overrides that ran through it, which can reorder the rest.
        logger.warning("the pruned file orders its rules differently from the ablation run; score it again")
    return PrunedRuleset(text, tuple(removals))


def _keep_rule(
    rule: ast.Rule, leave_out: set[str], removals: list[Removal], dropped_spans: list[Span]
) -> ast.Rule | None:
    if rule.id.value in leave_out:
        removals.append(Removal("rule", rule.id.value, "pruned"))
        dropped_spans.append(rule.span)
        return None
    overrides = tuple(name for name in rule.overrides if name.value not in leave_out)
    if len(overrides) == len(rule.overrides):
        return rule
    pruned_ids = ", ".join(name.value for name in rule.overrides if name.value in leave_out)
    removals.append(Removal("overrides", rule.id.value, f"no longer overrides the pruned {pruned_ids}"))
    return rule.model_copy(update={"overrides": overrides})


def _drop_failing_cases(ruleset: ast.Ruleset, removals: list[Removal], dropped_spans: list[Span]) -> ast.Ruleset:
    ordering = order_rules(ruleset)
    if ordering.errors:
        raise PruneFailed(f"pruned ruleset cannot be ordered: {ordering.errors[0].message}")
    failures = run_cases(ruleset, ordering.rules, ordering.priorities)
    failing: dict[str, str] = {}
    for case in ruleset.cases:
        for failure in failures:
            if _inside(failure.span.line, case.span) and case.name.value not in failing:
                failing[case.name.value] = failure.message
    if not failing:
        return ruleset
    items: list[ast.Item] = []
    for item in ruleset.items:
        if isinstance(item, ast.Case) and item.name.value in failing:
            message = failing[item.name.value].removeprefix(f"case {item.name.value}: ")
            removals.append(Removal("case", item.name.value, f"it fails without the pruned rules ({message})"))
            dropped_spans.append(item.span)
        else:
            items.append(item)
    return ruleset.model_copy(update={"items": tuple(items)})


def _inside(line: int, span: Span) -> bool:
    return span.line <= line <= span.end_line


def _verify(text: str, path: str) -> CheckedRuleset:
    checked, error = first_error(text, path)
    if error is not None:
        raise PruneFailed(f"pruned ruleset {error}; prune fewer rules")
    return checked
