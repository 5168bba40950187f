"""The analysis passes, each a function from a checked ruleset to findings, run in order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import networkx as nx

from pldc import ast
from pldc.analysis.cubes import Box, intersect, to_boxes, uncovered
from pldc.analysis.cubes import witness as box_witness
from pldc.analysis.findings import Finding
from pldc.analysis.index import OverlapIndex, literal_conjunction
from pldc.analysis.logic import BudgetExceeded, Value, conj, disj, domains_of, features_of, implies, neg, solve
from pldc.analysis.sat import covered


@dataclass
class Context:
    """Inputs shared by every pass: the rules in compiled order, their index and the feature domains."""

    ruleset: ast.Ruleset
    ordered: list[ast.Rule]
    priorities: dict[str, int]
    domains: dict[str, list[Value]]
    index: OverlapIndex
    overrides: nx.DiGraph[str]
    boxes: list[list[Box] | None]

    @classmethod
    def build(cls, ruleset: ast.Ruleset, ordered: list[ast.Rule], priorities: dict[str, int]) -> Context:
        one_of = {f.name.value for f in ruleset.features if not f.is_bool}
        graph: nx.DiGraph[str] = nx.DiGraph()
        graph.add_nodes_from(r.id.value for r in ruleset.rules)
        graph.add_edges_from((r.id.value, t.value) for r in ruleset.rules for t in r.overrides)
        domains = domains_of(ruleset)
        index = OverlapIndex(ordered, one_of)
        boxes = [to_boxes(r.condition, domains) if r.condition is not None else None for r in index.rules]
        return cls(ruleset, ordered, priorities, domains, index, graph, boxes)

    def position(self, rule: ast.Rule) -> int:
        return self.index.rules.index(rule)


def _pair_overlaps(context: Context) -> list[tuple[ast.Rule, ast.Rule, dict[str, Value]]]:
    """Pairs of rules (earlier, later in compiled order) that can fire together, with a witness."""
    found = []
    rules = context.index.rules
    simple = [literal_conjunction(r.condition) for r in rules]  # type: ignore[arg-type]
    for i, j in context.index.pairs():
        first, second = rules[i], rules[j]
        assert first.condition is not None and second.condition is not None
        if simple[i] and simple[j]:
            # The index already checked that the required literals agree, so both can hold at once.
            merged = {**context.index.required[i], **context.index.required[j]}
            witness: dict[str, Value] | None = {name: merged[name] for name in sorted(merged)}
        else:
            witness = _overlap(context, i, j)
        if witness is not None:
            found.append((first, second, witness))
    return found


def find_conflicts(context: Context) -> list[Finding]:
    """Overlapping rules with different labels whose precedence is not stated.

    Precedence is stated by ``overrides`` (directly or through other rules) or by different
    effective priorities. Under ``hit priority`` an unstated precedence is a conflict; under
    ``hit first`` file order decides, which is reported as order-dependent.
    """
    task = context.ruleset.task
    policy = task.hit_policy if task else "first"
    findings = []
    for first, second, witness in _pair_overlaps(context):
        assert first.label is not None and second.label is not None
        if first.label.value == second.label.value:
            continue
        a, b = first.id.value, second.id.value
        if context.priorities[a] != context.priorities[b]:
            continue
        if nx.has_path(context.overrides, a, b) or nx.has_path(context.overrides, b, a):
            continue
        if policy == "priority":
            kind = "conflict"
            message = (
                f"rules {a} ({first.label.value}) and {b} ({second.label.value}) can both apply "
                f"with equal priority {context.priorities[a]}"
            )
        else:
            kind = "order-dependent"
            message = (
                f"rules {a} ({first.label.value}) and {b} ({second.label.value}) can both apply; "
                f"nothing but rule order makes {a} win"
            )
        hint = f"add `overrides {b}` to {a} (or the reverse), give one a higher priority, or narrow a condition"
        findings.append(Finding(kind, message, (a, b), (first.span, second.span), hint, witness))
    return findings


def find_redundant(context: Context) -> list[Finding]:
    """Rules with the same label where one condition implies the other."""
    findings = []
    rules = context.index.rules
    for i, j in context.index.pairs():
        first, second = rules[i], rules[j]
        assert first.condition is not None and second.condition is not None
        assert first.label is not None and second.label is not None
        if first.label.value != second.label.value:
            continue
        forward = _may_imply(context, i, j) and _implies(context, i, j)
        backward = _may_imply(context, j, i) and _implies(context, j, i)
        a, b = first.id.value, second.id.value
        if forward and backward:
            message = f"rules {a} and {b} have equivalent conditions and the same label {first.label.value}"
            findings.append(
                Finding("duplicate", message, (b, a), (second.span, first.span), f"remove {b} or merge it into {a}")
            )
        elif forward or backward:
            narrow, wide = (first, second) if forward else (second, first)
            message = (
                f"rule {narrow.id.value} is subsumed by {wide.id.value}: its condition implies "
                f"{wide.id.value}'s and both conclude {first.label.value}"
            )
            hint = f"remove {narrow.id.value}, or merge its provenance into {wide.id.value}"
            witness = _example(context, i if forward else j)
            findings.append(
                Finding("subsumed", message, (narrow.id.value, wide.id.value), (narrow.span, wide.span), hint, witness)
            )
    return findings


SHADOW_BUDGET = 2_000


def _may_imply(context: Context, narrow: int, wide: int) -> bool:
    """Test cheaply whether rule ``narrow`` can imply rule ``wide``: it must test every feature ``wide`` requires."""
    condition = context.index.rules[narrow].condition
    tested = features_of(condition) if condition is not None else set()
    return all(name in tested for name in context.index.required[wide])


def _overlap(context: Context, first: int, second: int) -> dict[str, Value] | None:
    """Return a witness that the rules at ``first`` and ``second`` can fire together, or None."""
    left, right = context.boxes[first], context.boxes[second]
    if left is None or right is None:
        rules = context.index.rules
        return solve(conj(rules[first].condition, rules[second].condition), context.domains)  # type: ignore[arg-type]
    for a in left:
        for b in right:
            common = intersect(a, b)
            if common is not None:
                return box_witness(common, context.domains)
    return None


def _example(context: Context, position: int) -> dict[str, Value] | None:
    """Return an assignment under which the rule at ``position`` fires, or None if none exists."""
    boxes = context.boxes[position]
    if boxes is None:
        return solve(context.index.rules[position].condition, context.domains)  # type: ignore[arg-type]
    return box_witness(boxes[0], context.domains) if boxes else None


def _implies(context: Context, narrow: int, wide: int) -> bool:
    """Test whether rule ``narrow``'s condition implies rule ``wide``'s."""
    narrow_boxes, wide_boxes = context.boxes[narrow], context.boxes[wide]
    if narrow_boxes is None or wide_boxes is None:
        rules = context.index.rules
        return implies(rules[narrow].condition, rules[wide].condition, context.domains)  # type: ignore[arg-type]
    return all(uncovered(box, wide_boxes, context.domains) is None for box in narrow_boxes)


def _covered(context: Context, position: int, earlier: list[int]) -> bool:
    """Test whether the rules at ``earlier`` cover the whole condition of the rule at ``position``.

    Boxes go to the SAT solver, which is exact and, unlike splitting boxes, quick to prove that
    many small rules together cover a large one. A condition too large for boxes goes to the
    search in ``logic``, which raises :class:`BudgetExceeded` after :data:`SHADOW_BUDGET` steps.
    """
    boxes = context.boxes[position]
    covers = [context.boxes[j] for j in earlier]
    if boxes is None or any(c is None for c in covers):
        rules = context.index.rules
        cover = disj(*(rules[j].condition for j in earlier))  # type: ignore[arg-type]
        term = conj(rules[position].condition, neg(cover))  # type: ignore[arg-type]
        return solve(term, context.domains, budget=SHADOW_BUDGET) is None
    flat = [box for boxes_of in covers for box in boxes_of or ()]
    return all(covered(box, flat, context.domains) for box in boxes)


def find_shadowed(context: Context) -> list[Finding]:
    """Rules that never decide, because rules ordered before them cover their whole condition.

    The cover test searches at most :data:`SHADOW_BUDGET` steps per rule; rules it cannot
    decide within that are named in one ``undecided`` note rather than skipped silently.
    """
    findings = []
    undecided: list[ast.Rule] = []
    rules = context.index.rules
    for position, rule in enumerate(rules):
        assert rule.condition is not None
        if _example(context, position) is None:
            message = f"rule {rule.id.value} can never apply: its condition is unsatisfiable"
            hint = "fix the condition; a one-of feature takes one value and `x and not x` never holds"
            findings.append(Finding("unsatisfiable", message, (rule.id.value,), (rule.span,), hint))
            continue
        positions = [j for j in context.index.candidates(position) if j < position]
        if not positions:
            continue
        try:
            if not _covered(context, position, positions):
                continue
        except BudgetExceeded:
            undecided.append(rule)
            continue
        # Name only the earlier rules that actually overlap this one.
        covering = [rules[j] for j in positions if _overlap(context, position, j) is not None]
        names = ", ".join(r.id.value for r in covering)
        message = f"rule {rule.id.value} never decides: rules before it ({names}) cover its whole condition"
        witness = _example(context, position)
        hint = f"move {rule.id.value} earlier with `overrides` or a higher priority, or remove it"
        findings.append(
            Finding(
                "shadowed",
                message,
                (rule.id.value, *(r.id.value for r in covering)),
                (rule.span, *(r.span for r in covering)),
                hint,
                witness,
            )
        )
    if undecided:
        names = ", ".join(r.id.value for r in undecided[:10]) + (", ..." if len(undecided) > 10 else "")
        message = f"shadowing of {len(undecided)} rules was not decided within the search budget: {names}"
        hint = "split large groups of overlapping rules, or check these rules by hand"
        findings.append(Finding("undecided", message, (), (undecided[0].span,), hint, subject="shadowed"))
    return findings


def find_gaps(context: Context) -> list[Finding]:
    """Find a feature assignment under which no rule applies, so the default label decides."""
    task = context.ruleset.task
    conditions = [r.condition for r in context.ordered if r.condition is not None]
    if not conditions or task is None:
        return []
    try:
        if any(boxes is None for boxes in context.boxes):
            found = solve(neg(disj(*conditions)), context.domains, budget=SHADOW_BUDGET * 10)
        else:
            flat = [box for boxes in context.boxes for box in boxes or ()]
            region = uncovered({}, flat, context.domains, [SHADOW_BUDGET * 10])
            found = None if region is None else box_witness(region, context.domains)
    except BudgetExceeded:
        message = "whether some inputs match no rule was not decided within the search budget"
        return [
            Finding("undecided", message, (), (task.span,), "check the default label's region by hand", subject="gap")
        ]
    if found is None:
        return []
    default = task.default.value if task.default else "?"
    message = f"some inputs match no rule, so the default label {default} applies"
    hint = "add rules for the region, or accept it (`--allow gap`)"
    return [Finding("gap", message, (), (task.span,), hint, found, subject=default)]


def find_unused(context: Context) -> list[Finding]:
    """Features no rule tests and labels that no rule concludes and that are not the default."""
    findings = []
    tested = set().union(*(features_of(r.condition) for r in context.ordered if r.condition is not None))
    for feature in context.ruleset.features:
        if feature.name.value not in tested:
            message = f"feature {feature.name.value!r} is not tested by any rule"
            findings.append(
                Finding("unused-feature", message, (), (feature.name.span,), "remove it or use it in a rule")
            )
    task = context.ruleset.task
    if task is not None:
        concluded = {r.label.value for r in context.ordered if r.label is not None}
        default = task.default.value if task.default else None
        for label in task.labels:
            if label.name.value not in concluded and label.name.value != default:
                message = f"label {label.name.value!r} is concluded by no rule and is not the default"
                findings.append(
                    Finding("unused-label", message, (), (label.name.span,), "add a rule that concludes it")
                )
    return findings


PASSES: tuple[Callable[[Context], list[Finding]], ...] = (
    find_conflicts,
    find_redundant,
    find_shadowed,
    find_gaps,
    find_unused,
)
