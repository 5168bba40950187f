"""Conditions as unions of boxes, and an exact cover test between them.

A *box* maps some features to the set of values they may take; a feature it does not name may
take any value. A condition becomes a list of boxes (its disjunctive normal form over value
sets): ``f is a`` is ``{f: {a}}``, ``not f is a`` is ``{f: every other value}``, and ``and``
intersects boxes feature by feature. Whether rules ``C1..Cn`` cover a box ``B`` is then decided
by splitting ``B`` on the feature the overlapping boxes constrain most, until a piece is inside
one ``Ci`` (covered) or meets none (uncovered: any point of it is a witness). On rule
conditions, which are short conjunctions, this settles shadowing and gaps in a few splits where
a search over single assignments would try every combination of the unrelated features.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from pldc import ast
from pldc.analysis.logic import BudgetExceeded, Value

Box = dict[str, frozenset[Value]]
Domains = Mapping[str, Sequence[Value]]

#: Conditions whose normal form has more boxes than this are left to the search in ``logic``.
BOX_LIMIT = 256


def to_boxes(condition: ast.Condition, domains: Domains, negated: bool = False) -> list[Box] | None:
    """Return ``condition`` (or its negation) as a union of non-empty boxes, or None past :data:`BOX_LIMIT`."""
    if isinstance(condition, (ast.Predicate, ast.IsValue)):
        name = condition.feature.value
        wanted: Value = True if isinstance(condition, ast.Predicate) else condition.value.value
        if not negated:
            # Resolution has checked that the value belongs to the feature.
            return [{name: frozenset((wanted,))}]
        values = frozenset(v for v in domains[name] if v != wanted)
        return [{name: values}] if values else []
    if isinstance(condition, ast.Not):
        return to_boxes(condition.operand, domains, not negated)
    conjunctive = isinstance(condition, ast.And) != negated
    parts = [to_boxes(operand, domains, negated) for operand in condition.operands]
    if any(part is None for part in parts):
        return None
    if not conjunctive:
        union = [box for part in parts for box in part or ()]
        return union if len(union) <= BOX_LIMIT else None
    product: list[Box] = [{}]
    for part in parts:
        product = [joined for left in product for right in part or () if (joined := intersect(left, right)) is not None]
        if len(product) > BOX_LIMIT:
            return None
    return product


def intersect(left: Box, right: Box) -> Box | None:
    """Return the common part of two boxes, or None when they are disjoint."""
    joined = dict(left)
    for name, values in right.items():
        common = joined[name] & values if name in joined else values
        if not common:
            return None
        joined[name] = common
    return joined


def _meets(box: Box, other: Box) -> bool:
    return all(name not in box or box[name] & values for name, values in other.items())


def uncovered(box: Box, covers: Sequence[Box], domains: Domains, budget: list[int] | None = None) -> Box | None:
    """Return a part of ``box`` that no box in ``covers`` meets, or None when they cover all of it.

    ``budget`` is a one-element list of remaining split steps, shared across calls; the search
    raises :class:`~pldc.analysis.logic.BudgetExceeded` when it runs out.
    """
    if budget is not None:
        budget[0] -= 1
        if budget[0] < 0:
            raise BudgetExceeded
    relevant = [cover for cover in covers if _meets(box, cover)]
    if not relevant:
        return box
    # Count, per feature, the overlapping boxes that restrict it beyond what ``box`` allows; a
    # box restricting nothing beyond ``box`` contains it.
    counts: Counter[str] = Counter()
    for cover in relevant:
        restricts = False
        for name, values in cover.items():
            own = box.get(name)
            if len(values) < len(domains[name]) if own is None else not own <= values:
                counts[name] += 1
                restricts = True
        if not restricts:
            return None
    # Split on the feature the most overlapping boxes restrict, trying first the value that the
    # fewest of them accept: it is the likeliest way out.
    name = min(counts, key=lambda n: (-counts[n], n))
    allowed = box.get(name)
    options = [value for value in domains[name] if allowed is None or value in allowed]
    accepting: Counter[Value] = Counter()
    for cover in relevant:
        accepting.update(cover[name] if name in cover else options)
    for value in sorted(options, key=accepting.__getitem__):
        found = uncovered({**box, name: frozenset((value,))}, relevant, domains, budget)
        if found is not None:
            return found
    return None


def witness(box: Box, domains: Domains) -> dict[str, Value]:
    """Return one point of ``box``, naming only the features the box restricts."""
    return {name: _first(box[name], domains[name]) for name in sorted(box) if len(box[name]) < len(domains[name])}


def _first(values: frozenset[Value], domain: Sequence[Value]) -> Value:
    if len(values) == 1:
        (value,) = values
        return value
    return next(v for v in domain if v in values)


def implied_literals(boxes: Sequence[Box]) -> dict[str, Value]:
    """Return the features that every point of the union of ``boxes`` sets to one same value."""
    if not boxes:
        return {}
    literals: dict[str, Value] = {}
    for name, values in boxes[0].items():
        if len(values) == 1:
            (value,) = values
            if all(box.get(name) == values for box in boxes[1:]):
                literals[name] = value
    return literals


def box_implies(narrow: Sequence[Box], wide: Sequence[Box], domains: Domains) -> bool:
    """Test whether the union ``narrow`` lies inside the union ``wide``."""
    return all(uncovered(box, wide, domains) is None for box in narrow)
