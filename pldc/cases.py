"""Evaluate conditions, decide labels under the hit policy, and run a file's cases.

Cases are decision-table tests: they fix feature values and expect a label, with no model
involved. A boolean feature a case does not mention is false; a one-of feature it does not
mention has no value, so every ``is`` test on it is false.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pldc import ast
from pldc.errors import Diagnostic

Assignment = Mapping[str, "bool | str"]


def holds(condition: ast.Condition, values: Assignment) -> bool:
    """Evaluate ``condition`` under the feature values ``values``."""
    if isinstance(condition, ast.Predicate):
        return values.get(condition.feature.value) is True
    if isinstance(condition, ast.IsValue):
        return values.get(condition.feature.value) == condition.value.value
    if isinstance(condition, ast.Not):
        return not holds(condition.operand, values)
    if isinstance(condition, ast.And):
        return all(holds(operand, values) for operand in condition.operands)
    return any(holds(operand, values) for operand in condition.operands)


@dataclass(frozen=True)
class Decision:
    """The label a ruleset concludes for one assignment, and the rule that decided it."""

    label: str
    rule: ast.Rule | None
    tied: tuple[ast.Rule, ...] = ()


def decide(
    task: ast.Task, ordered: Sequence[ast.Rule], values: Assignment, priorities: Mapping[str, int] | None = None
) -> Decision:
    """Apply the hit policy to the rules in compiled order.

    Under both policies the first rule in compiled order whose condition is true decides, because
    the order runs from highest to lowest effective priority (``priorities``). Under ``priority``,
    rules of the same effective priority have no precedence between them, so when such a rule
    also holds and concludes another label, ``tied`` lists it.
    """
    default = task.default.value if task.default else ""
    fired = [r for r in ordered if r.condition is not None and r.label is not None and holds(r.condition, values)]
    if not fired:
        return Decision(default, None)
    winner = fired[0]
    assert winner.label is not None
    if task.hit_policy != "priority":
        return Decision(winner.label.value, winner)
    rank = priorities or {r.id.value: r.effective_priority for r in ordered}
    top = rank[winner.id.value]
    tied = tuple(
        r for r in fired[1:] if rank[r.id.value] == top and r.label is not None and r.label.value != winner.label.value
    )
    return Decision(winner.label.value, winner, tied)


def case_values(case: ast.Case) -> dict[str, bool | str]:
    return {a.feature.value: a.value if isinstance(a.value, bool) else a.value.value for a in case.given}


def run_cases(
    ruleset: ast.Ruleset, ordered: Sequence[ast.Rule], priorities: Mapping[str, int] | None = None
) -> list[Diagnostic]:
    """Run every case; return a diagnostic per failing case."""
    task = ruleset.task
    if task is None:
        return []
    failures: list[Diagnostic] = []
    for case in ruleset.cases:
        if case.expect is None:
            continue
        decision = decide(task, ordered, case_values(case), priorities)
        decided_by = f"rule {decision.rule.id.value}" if decision.rule else "the default"
        if decision.tied:
            others = ", ".join(r.id.value for r in decision.tied)
            failures.append(
                Diagnostic(
                    "E202",
                    f"case {case.name.value}: rules {decision.rule.id.value if decision.rule else '?'} and {others} "
                    f"fire with equal priority and conclude different labels",
                    case.name.span,
                    hint="give one of the rules a higher priority, or add 'overrides'",
                )
            )
        elif decision.label != case.expect.value:
            failures.append(
                Diagnostic(
                    "E200",
                    f"case {case.name.value}: expected {case.expect.value}, got {decision.label} from {decided_by}",
                    case.expect.span,
                )
            )
        elif case.by is not None and (decision.rule is None or decision.rule.id.value != case.by.value):
            failures.append(
                Diagnostic(
                    "E201",
                    f"case {case.name.value}: expected rule {case.by.value} to decide, but {decided_by} did",
                    case.by.span,
                )
            )
    return failures
