"""Order the rules of a ruleset for compilation.

A rule comes before every rule it ``overrides``; otherwise higher ``priority`` comes first and
file order breaks ties. The constraints form a directed graph, so a cycle of ``overrides`` is
reported with the rules on it.
"""

from __future__ import annotations

import networkx as nx

from pldc import ast
from pldc.errors import Diagnostic


def order_rules(ruleset: ast.Ruleset) -> tuple[list[ast.Rule], list[Diagnostic]]:
    """Return the rules in compiled order, or the ``E120`` cycle diagnostics."""
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
        return list(rules), errors

    def key(rule_id: str) -> tuple[int, int]:
        rule = rules[index[rule_id]]
        return (-rule.effective_priority, index[rule_id])

    ordered_ids = list(nx.lexicographical_topological_sort(graph, key=key))
    return [rules[index[rule_id]] for rule_id in ordered_ids], []
