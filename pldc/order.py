"""Order the rules of a ruleset for compilation.

A rule comes before every rule it ``overrides``; otherwise higher priority comes first, then
specificity (of two rules with equal priority, one whose condition strictly implies the other's
comes first), and file order breaks the remaining ties. A rule's *effective* priority is the
highest priority among itself and the rules it overrides, directly or through others, so
overriding a rule lifts the overriding rule to at least that rule's place. The compiled order
therefore never lists a lower effective priority before a higher one. The constraints form a
directed graph, so a cycle of ``overrides`` is reported with the rules on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from pldc import ast
from pldc.analysis.index import contradict, required_literals
from pldc.errors import Diagnostic


@dataclass(frozen=True)
class Ordering:
    """Rules in compiled order with their effective priorities, or the cycle errors."""

    rules: list[ast.Rule]
    priorities: dict[str, int]
    errors: list[Diagnostic]


def order_rules(ruleset: ast.Ruleset) -> Ordering:
    """Order the rules; on a cycle, keep file order and return ``E120`` diagnostics."""
    rules = ruleset.rules
    index = {rule.id.value: position for position, rule in enumerate(rules)}
    graph: nx.DiGraph[str] = nx.DiGraph()
    graph.add_nodes_from(index)
    for rule in rules:
        for target in rule.overrides:
            if target.value in index and target.value != rule.id.value:
                graph.add_edge(rule.id.value, target.value)

    errors: list[Diagnostic] = []
    for cycle in nx.simple_cycles(graph):
        first = min(cycle, key=index.__getitem__)
        start = cycle.index(first)
        ordered = cycle[start:] + cycle[:start]
        path = " -> ".join([*ordered, first])
        errors.append(
            Diagnostic(
                "E120",
                f"rules override each other in a cycle: {path}",
                rules[index[first]].id.span,
                hint="remove one of the 'overrides' on the cycle",
            )
        )
        if len(errors) >= 20:
            break
    if errors:
        return Ordering(list(rules), {r.id.value: r.effective_priority for r in rules}, errors)

    effective = effective_priorities(rules, graph)
    from pldc.analysis.logic import existing_objects_frozen

    with existing_objects_frozen():
        _add_specificity(ruleset, rules, graph, effective)

    def key(rule_id: str) -> tuple[int, int]:
        return (-effective[rule_id], index[rule_id])

    ordered_ids = list(nx.lexicographical_topological_sort(graph, key=key))
    return Ordering([rules[index[rule_id]] for rule_id in ordered_ids], effective, [])


def effective_priorities(rules: tuple[ast.Rule, ...], graph: nx.DiGraph[str]) -> dict[str, int]:
    """Map each rule id to the highest priority of itself and every rule it overrides."""
    own = {rule.id.value: rule.effective_priority for rule in rules}
    effective: dict[str, int] = {}
    # Reverse topological order visits the overridden rules before the rules overriding them.
    for rule_id in reversed(list(nx.topological_sort(graph))):
        effective[rule_id] = max([own[rule_id], *(effective[t] for t in graph.successors(rule_id))])
    return effective


def _add_specificity(
    ruleset: ast.Ruleset, rules: tuple[ast.Rule, ...], graph: nx.DiGraph[str], effective: dict[str, int]
) -> None:
    """Add an edge from each rule to every equal-priority rule its condition strictly implies."""
    from pldc.analysis.cubes import box_implies, implied_literals, to_boxes
    from pldc.analysis.logic import domains_of, implies

    usable = [r for r in rules if r.condition is not None]
    domains = domains_of(ruleset)
    if any(name not in domains for r in usable for name in _features(r)):
        return  # undefined features are reported by resolve; ordering them is meaningless
    boxes = [to_boxes(r.condition, domains) for r in usable]  # type: ignore[arg-type]
    required = [
        implied_literals(b) if b is not None else required_literals(r.condition)  # type: ignore[arg-type]
        for r, b in zip(usable, boxes, strict=True)
    ]
    tested = [_features(r) for r in usable]
    # A condition implies another only if it implies every literal the other requires. Literals
    # read off the boxes are exact, so rules are pooled by the literals they imply; a rule too
    # large for boxes may imply more than it is known to require and joins every pool.
    implying: dict[tuple[str, object], set[int]] = {}
    unknown = {position for position, b in enumerate(boxes) if b is None}
    tested_by: dict[str, set[int]] = {}
    for position, names in enumerate(tested):
        for name in names:
            tested_by.setdefault(name, set()).add(position)
        for literal in required[position].items():
            implying.setdefault(literal, set()).add(position)

    def implication(narrow: int, wide: int) -> bool:
        left, right = boxes[narrow], boxes[wide]
        if left is None or right is None:
            return implies(usable[narrow].condition, usable[wide].condition, domains)  # type: ignore[arg-type]
        return box_implies(left, right, domains)

    overrides = graph.copy()
    added: list[tuple[str, str]] = []
    unsatisfiable = {position for position, b in enumerate(boxes) if b == []}
    for j, wide in enumerate(usable):
        if j in unsatisfiable:
            continue  # implied by everything and implying everything; analysis reports it
        if required[j]:
            pools = sorted((implying.get(literal, set()) for literal in required[j].items()), key=len)
            candidates = set.intersection(*pools) | unknown
        else:
            # A disjunction or negation requires nothing; compare with rules sharing a feature.
            # NOTE: a rule sharing no feature with it can still imply it only if it is a
            # tautology, which is left unordered.
            candidates = set().union(*(tested_by.get(name, set()) for name in tested[j]))
        for i in candidates:
            if i == j or i in unsatisfiable:
                continue
            narrow = usable[i]
            a, b = narrow.id.value, wide.id.value
            if effective[a] != effective[b] or contradict(required[i], required[j]):
                continue
            if not implication(i, j):
                continue
            if implication(j, i):
                continue  # equivalent conditions: file order decides
            if not nx.has_path(overrides, b, a):
                graph.add_edge(a, b)
                added.append((a, b))
    # Overrides and specificity together can close a cycle; specificity then gives way.
    while added and not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        for edge in cycle:
            if (edge[0], edge[1]) in added:
                graph.remove_edge(edge[0], edge[1])
                added.remove((edge[0], edge[1]))
                break
        else:
            break


def _features(rule: ast.Rule) -> set[str]:
    from pldc.analysis.logic import features_of

    return features_of(rule.condition) if rule.condition is not None else set()
