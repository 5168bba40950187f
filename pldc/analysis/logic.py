"""A small exact decision procedure for rule conditions.

Conditions are propositional formulas over typed features: a bool feature is true or false, and
a one-of feature takes exactly one of its values, so ``f is a`` and ``f is b`` exclude each other.
:func:`solve` searches assignments feature by feature with three-valued evaluation, pruning a
branch as soon as the formula is false under the partial assignment. The search is exact: it
returns a satisfying assignment when one exists and ``None`` when none does.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pldc import ast

Value = bool | str


@dataclass(frozen=True)
class Formula:
    """A Boolean combination of rule conditions: ``op`` is ``and``, ``or`` or ``not``."""

    op: str
    operands: tuple[Formula | ast.Condition, ...]


Term = Formula | ast.Condition


def conj(*terms: Term) -> Formula:
    return Formula("and", terms)


def disj(*terms: Term) -> Formula:
    return Formula("or", terms)


def neg(term: Term) -> Formula:
    return Formula("not", (term,))


def features_of(term: Term) -> set[str]:
    """Return the names of the features a formula or condition tests."""
    if isinstance(term, (ast.Predicate, ast.IsValue)):
        return {term.feature.value}
    if isinstance(term, ast.Not):
        return features_of(term.operand)
    if isinstance(term, (ast.And, ast.Or)):
        return set().union(*(features_of(o) for o in term.operands))
    return set().union(*(features_of(o) for o in term.operands))


def evaluate(term: Term, values: Mapping[str, Value]) -> bool | None:
    """Three-valued evaluation: ``None`` when the partial assignment does not decide ``term``."""
    if isinstance(term, ast.Predicate):
        value = values.get(term.feature.value)
        return None if value is None else value is True
    if isinstance(term, ast.IsValue):
        value = values.get(term.feature.value)
        return None if value is None else value == term.value.value
    if isinstance(term, ast.Not) or (isinstance(term, Formula) and term.op == "not"):
        inner = evaluate(term.operand if isinstance(term, ast.Not) else term.operands[0], values)
        return None if inner is None else not inner
    conjunctive = isinstance(term, ast.And) or (isinstance(term, Formula) and term.op == "and")
    unknown = False
    for operand in term.operands:
        result = evaluate(operand, values)
        if result is None:
            unknown = True
        elif result is not conjunctive:
            return result
    return None if unknown else conjunctive


class BudgetExceeded(Exception):
    """The search visited more partial assignments than its budget allowed."""


def solve(term: Term, domains: Mapping[str, Sequence[Value]], budget: int | None = None) -> dict[str, Value] | None:
    """Return an assignment of the formula's features that makes it true, or ``None``.

    With ``budget``, raise :class:`BudgetExceeded` after that many search steps instead of
    searching on: large disjunctions can make the exact search exponential.
    """
    # The most tested features first: fixing them decides the most leaves and prunes early.
    counts = _leaf_counts(term)
    names = sorted(counts, key=lambda name: (-counts[name], name))
    values: dict[str, Value] = {}
    steps = 0

    def search(position: int) -> bool:
        nonlocal steps
        steps += 1
        if budget is not None and steps > budget:
            raise BudgetExceeded
        verdict = evaluate(term, values)
        if verdict is not None:
            return verdict
        name = names[position]
        for value in domains[name]:
            values[name] = value
            if search(position + 1):
                return True
        del values[name]
        return False

    if not search(0):
        return None
    # Drop every feature whose value does not matter, so the witness shows only what does.
    for name in reversed(names):
        if name in values:
            kept = values.pop(name)
            if evaluate(term, values) is not True:
                values[name] = kept
    return {name: values[name] for name in names if name in values}


def _leaf_counts(term: Term, counts: dict[str, int] | None = None) -> dict[str, int]:
    counts = {} if counts is None else counts
    if isinstance(term, (ast.Predicate, ast.IsValue)):
        counts[term.feature.value] = counts.get(term.feature.value, 0) + 1
    elif isinstance(term, ast.Not):
        _leaf_counts(term.operand, counts)
    else:
        for operand in term.operands:
            _leaf_counts(operand, counts)
    return counts


def implies(left: Term, right: Term, domains: Mapping[str, Sequence[Value]]) -> bool:
    return solve(conj(left, neg(right)), domains) is None


def domains_of(ruleset: ast.Ruleset) -> dict[str, list[Value]]:
    """Return each feature's possible values: false then true, or the one-of values in order.

    Trying false first makes witnesses read naturally, with as few features set as possible.
    """
    return {f.name.value: [False, True] if f.is_bool else list(f.value_names) for f in ruleset.features}


@contextmanager
def existing_objects_frozen() -> Iterator[None]:
    """Keep the garbage collector from rescanning the objects that exist on entry.

    Ordering and analysis allocate many small, short-lived objects. Every full collection they
    trigger would otherwise walk the whole syntax tree again, which makes large rulesets cost
    more than linear time (about 4x at 10,000 rules).
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
