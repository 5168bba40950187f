"""The rule graph of a ruleset, and its rendering as DOT, Mermaid, SVG or PNG.

Nodes are rules, features and labels. Edges mean that a rule tests a feature, concludes a label
or overrides another rule, and the analysis adds an edge for each conflict or order-dependent
pair (red) and each shadowed or subsumed rule (dashed). Rules are clustered by group.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Literal

import networkx as nx

from pldc import ast
from pldc.analysis import Analysis
from pldc.analysis.logic import features_of
from pldc.errors import PldError

GraphFormat = Literal["dot", "mermaid", "svg", "png"]
_FINDING_EDGES = {"conflict": "red", "order-dependent": "red", "shadowed": "gray40", "subsumed": "gray40"}


def build_graph(
    ruleset: ast.Ruleset, ordered: list[ast.Rule], analysis: Analysis | None = None
) -> nx.MultiDiGraph[str]:
    """Build one directed multigraph with ``rule:ID``, ``feature:NAME`` and ``label:NAME`` nodes."""
    graph: nx.MultiDiGraph[str] = nx.MultiDiGraph()
    for feature in ruleset.features:
        graph.add_node(f"feature:{feature.name.value}", kind="feature", name=feature.name.value)
    if ruleset.task is not None:
        for label in ruleset.task.labels:
            graph.add_node(f"label:{label.name.value}", kind="label", name=label.name.value)
    for position, rule in enumerate(ordered, 1):
        node = f"rule:{rule.id.value}"
        graph.add_node(node, kind="rule", name=rule.id.value, title=rule.title, group=rule.group, position=position)
        if rule.condition is not None:
            for tested in sorted(features_of(rule.condition)):
                graph.add_edge(node, f"feature:{tested}", kind="tests")
        if rule.label is not None:
            graph.add_edge(node, f"label:{rule.label.value}", kind="concludes")
        for target in rule.overrides:
            graph.add_edge(node, f"rule:{target.value}", kind="overrides")
        if rule.priority is not None:
            graph.nodes[node]["priority"] = rule.priority
    for finding, _ in analysis.findings + analysis.allowed if analysis else []:
        if finding.kind in _FINDING_EDGES and len(finding.rules) >= 2:
            for other in finding.rules[1:]:
                graph.add_edge(f"rule:{finding.rules[0]}", f"rule:{other}", kind=finding.kind)
    return graph


def to_dot(graph: nx.MultiDiGraph[str], name: str = "ruleset") -> str:
    """DOT text: rules as boxes clustered by group, features as ellipses, labels as notes."""
    lines = [f"digraph {_quote(name)} {{", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=11];']
    groups: dict[str | None, list[str]] = {}
    for node, data in graph.nodes(data=True):
        if data["kind"] == "rule":
            groups.setdefault(data.get("group"), []).append(node)
    for index, (group, members) in enumerate(sorted(groups.items(), key=lambda item: str(item[0]))):
        indent = "  "
        if group is not None:
            lines += [f"  subgraph cluster_{index} {{", f"    label={_quote(group)};", "    style=rounded;"]
            indent = "    "
        for node in members:
            data = graph.nodes[node]
            text = f"{data['position']}. {data['name']}\\n{_shorten(data['title'])}"
            lines.append(f"{indent}{_quote(node)} [shape=box, style=rounded, label={_quote(text)}];")
        if group is not None:
            lines.append("  }")
    for node, data in graph.nodes(data=True):
        if data["kind"] == "feature":
            lines.append(f"  {_quote(node)} [shape=ellipse, color=steelblue, label={_quote(data['name'])}];")
        elif data["kind"] == "label":
            lines.append(
                f"  {_quote(node)} [shape=note, style=filled, fillcolor=lightyellow, label={_quote(data['name'])}];"
            )
    for source, target, data in graph.edges(data=True):
        kind = data["kind"]
        colour = _FINDING_EDGES.get(kind, "black")
        style = {
            "tests": "color=steelblue, arrowhead=none",
            "concludes": "color=black",
            "overrides": 'color=darkgreen, penwidth=2, label="overrides"',
        }.get(kind, f"color={colour}, style=dashed, label={_quote(kind)}, fontcolor={colour}")
        lines.append(f"  {_quote(source)} -> {_quote(target)} [{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(graph: nx.MultiDiGraph[str]) -> str:
    """Render the graph as a Mermaid flowchart."""
    ids = {node: f"n{index}" for index, node in enumerate(graph.nodes)}
    lines = ["flowchart LR"]
    for node, data in graph.nodes(data=True):
        text = data["name"].replace('"', "'")
        if data["kind"] == "rule":
            lines.append(f'  {ids[node]}["{data["position"]}. {text}"]')
        elif data["kind"] == "feature":
            lines.append(f'  {ids[node]}(["{text}"])')
        else:
            lines.append(f'  {ids[node]}[/"{text}"/]')
    red = []
    for index, (source, target, data) in enumerate(graph.edges(data=True)):
        arrow = {"tests": "---", "concludes": "-->", "overrides": "==>|overrides|"}.get(
            data["kind"], f"-.->|{data['kind']}|"
        )
        lines.append(f"  {ids[source]} {arrow} {ids[target]}")
        if data["kind"] in ("conflict", "order-dependent"):
            red.append(str(index))
    if red:
        lines.append(f"  linkStyle {','.join(red)} stroke:red,color:red")
    return "\n".join(lines) + "\n"


def render_image(dot: str, output_format: Literal["svg", "png"]) -> bytes:
    """Lay out DOT text with Graphviz's ``dot`` program."""
    program = shutil.which("dot")
    if program is None:
        raise PldError("Graphviz is not installed (the `dot` program); install it, or use --format dot or mermaid")
    result = subprocess.run([program, f"-T{output_format}"], input=dot.encode(), capture_output=True, check=False)
    if result.returncode != 0:
        raise PldError(f"Graphviz failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'.replace("\\\\n", "\\n")


def _shorten(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
