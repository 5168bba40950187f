"""Index rules by the feature values their conditions require, to skip pairs that cannot overlap.

A condition *requires* a literal when every way of satisfying it sets that feature to that
value (``f`` requires ``f=true``; ``a and f is x`` requires both). Two rules whose required
literals contradict each other can never fire together, so they are never compared. Rules are
bucketed by the one-of feature that most rules require; a pair is compared only within a bucket,
or when one rule leaves that feature free.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence

from pldc import ast
from pldc.analysis.logic import Value


def required_literals(condition: ast.Condition) -> dict[str, Value]:
    """Feature values that every satisfying assignment of ``condition`` has."""
    if isinstance(condition, ast.Predicate):
        return {condition.feature.value: True}
    if isinstance(condition, ast.IsValue):
        return {condition.feature.value: condition.value.value}
    if isinstance(condition, ast.Not):
        if isinstance(condition.operand, ast.Predicate):
            return {condition.operand.feature.value: False}
        return {}
    parts = [required_literals(operand) for operand in condition.operands]
    if isinstance(condition, ast.And):
        merged: dict[str, Value] = {}
        for part in parts:
            merged.update(part)
        return merged
    common = dict(parts[0])
    for part in parts[1:]:
        common = {name: value for name, value in common.items() if part.get(name) == value}
    return common


def contradict(left: dict[str, Value], right: dict[str, Value]) -> bool:
    if len(right) < len(left):
        left, right = right, left
    return any(name in right and right[name] != value for name, value in left.items())


class OverlapIndex:
    """Candidate pairs of rules that may fire together, in file order of the first rule."""

    def __init__(self, rules: Sequence[ast.Rule], one_of_features: set[str]) -> None:
        self.rules = list(rules)
        self.required = [required_literals(r.condition) if r.condition is not None else {} for r in self.rules]
        counts = Counter(name for req in self.required for name in req if name in one_of_features)
        self.partition = counts.most_common(1)[0][0] if counts else None
        self.buckets: dict[Value, list[int]] = defaultdict(list)
        self.free: list[int] = []
        for position, req in enumerate(self.required):
            if self.partition is not None and self.partition in req:
                self.buckets[req[self.partition]].append(position)
            else:
                self.free.append(position)

    def pairs(self) -> Iterator[tuple[int, int]]:
        """Yield ``(i, j)`` with ``i < j`` for every pair whose required values agree."""
        seen_free = set(self.free)
        for members in self.buckets.values():
            group = sorted(members)
            for a, i in enumerate(group):
                for j in group[a + 1 :]:
                    if not contradict(self.required[i], self.required[j]):
                        yield i, j
        everyone = range(len(self.rules))
        for i in self.free:
            for j in everyone:
                if j == i or (j in seen_free and j < i):
                    continue
                if not contradict(self.required[i], self.required[j]):
                    yield (i, j) if i < j else (j, i)

    def candidates(self, position: int) -> list[int]:
        """Rules that may fire together with the rule at ``position``."""
        required = self.required[position]
        if self.partition is None or self.partition not in required or position in self.free:
            pool: Sequence[int] = range(len(self.rules))
        else:
            pool = sorted(self.buckets[required[self.partition]] + self.free)
        return [j for j in pool if j != position and not contradict(required, self.required[j])]


def literal_conjunction(condition: ast.Condition) -> bool:
    """Whether ``condition`` is a conjunction of ``f``, ``not f`` and ``f is v`` literals only.

    Such a condition is true exactly when its required literals do, which makes overlap and
    implication tests between two of them set operations. A conjunction that contradicts itself
    (``a and not a``) is not one, because it is never true.
    """
    literals: dict[str, Value] = {}
    for leaf in _conjuncts(condition):
        if leaf is None:
            return False
        name, value = leaf
        if literals.setdefault(name, value) != value:
            return False
    return True


def _conjuncts(condition: ast.Condition) -> Iterator[tuple[str, Value] | None]:
    if isinstance(condition, ast.Predicate):
        yield condition.feature.value, True
    elif isinstance(condition, ast.IsValue):
        yield condition.feature.value, condition.value.value
    elif isinstance(condition, ast.Not) and isinstance(condition.operand, ast.Predicate):
        yield condition.operand.feature.value, False
    elif isinstance(condition, ast.And):
        for operand in condition.operands:
            yield from _conjuncts(operand)
    else:
        yield None
