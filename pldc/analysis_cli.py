"""``pldc graph`` and ``pldc explain``: the rule graph as a picture, and one rule in context."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pldc.errors import InputError, UsageError


def add_analysis_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    graph = commands.add_parser("graph", help="draw the rule graph (DOT, Mermaid, SVG or PNG)")
    graph.add_argument("file", type=Path, metavar="FILE")
    graph.add_argument("--format", choices=("dot", "mermaid", "svg", "png"), default="dot")
    graph.add_argument("-o", "--output", type=Path, help="write to this file (required for png)")
    graph.set_defaults(handler=run_graph)

    explain = commands.add_parser("explain", help="show one rule: provenance, precedence and overlaps")
    explain.add_argument("file", type=Path, metavar="FILE")
    explain.add_argument("rule", metavar="RULE")
    explain.add_argument("--format", choices=("text", "json"), default="text")
    explain.set_defaults(handler=run_explain)


def run_graph(args: argparse.Namespace) -> int:
    from pldc.analysis import analyze
    from pldc.graph import build_graph, render_image, to_dot, to_mermaid
    from pldc.pipeline import load_ruleset

    checked = load_ruleset(args.file)
    analysis = analyze(checked.ruleset, checked.ordered, checked.priorities)
    graph = build_graph(checked.ruleset, checked.ordered, analysis)
    name = checked.ruleset.task.name.value if checked.ruleset.task else args.file.stem
    if args.format == "mermaid":
        data: bytes = to_mermaid(graph).encode()
    elif args.format == "dot":
        data = to_dot(graph, name).encode()
    else:
        if args.format == "png" and args.output is None:
            raise UsageError("--format png needs -o FILE")
        data = render_image(to_dot(graph, name), args.format)
    if args.output is None:
        sys.stdout.write(data.decode())
        return 0
    try:
        args.output.write_bytes(data)
    except OSError as error:
        raise InputError(f"{args.output}: cannot write: {error.strerror}") from None
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from pldc.analysis import analyze
    from pldc.analysis.findings import format_witness
    from pldc.format import format_condition
    from pldc.pipeline import load_ruleset

    checked = load_ruleset(args.file)
    rules = {r.id.value: r for r in checked.ruleset.rules}
    rule = rules.get(args.rule)
    if rule is None:
        raise InputError(f"{args.file}: no rule {args.rule!r}; rules: {', '.join(sorted(rules))}")
    order = [r.id.value for r in checked.ordered]
    overridden_by = sorted(
        r.id.value for r in checked.ruleset.rules if any(t.value == rule.id.value for t in r.overrides)
    )
    analysis = analyze(checked.ruleset, checked.ordered, checked.priorities)
    related = [(f, level) for f, level in analysis.findings if rule.id.value in f.rules]
    related += [(f, f"allowed: {reason}") for f, reason in analysis.allowed if rule.id.value in f.rules]
    report = {
        "rule": rule.id.value,
        "title": rule.title,
        "span": rule.span.model_dump(),
        "condition": format_condition(rule.condition) if rule.condition is not None else None,
        "label": rule.label.value if rule.label else None,
        "rationale": rule.rationale,
        "position": order.index(rule.id.value) + 1,
        "of": len(order),
        "priority": rule.priority,
        "effective_priority": checked.priorities[rule.id.value],
        "overrides": [t.value for t in rule.overrides],
        "overridden_by": overridden_by,
        "provenance": {
            "examples": list(rule.examples),
            "support": rule.support,
            "confidence": rule.confidence,
            "teacher": rule.teacher,
        },
        "group": rule.group,
        "tags": [t.value for t in rule.tags],
        "findings": [f.to_json(level) for f, level in related],
    }
    if args.format == "json":
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    print(f'rule {rule.id.value} "{rule.title}"  ({rule.span})')
    print(f"  when {report['condition']}")
    print(f"  then {report['label']}")
    if rule.rationale:
        print(f"  because {rule.rationale}")
    print(
        f"  compiled position {report['position']} of {report['of']}, effective priority {report['effective_priority']}"
    )
    print(
        f"  overrides: {', '.join(t.value for t in rule.overrides) or 'none'}; "
        f"overridden by: {', '.join(overridden_by) or 'none'}"
    )
    examples = ", ".join(rule.examples) or "none"
    print(f"  provenance: examples {examples}; support {rule.support}; confidence {rule.confidence}", end="")
    print(f"; teacher {rule.teacher}")
    if not related:
        print("  overlaps: none reported")
    for finding, level in related:
        witness = f" (for example: {format_witness(finding.witness)})" if finding.witness else ""
        print(f"  {level} {finding.kind}: {finding.message}{witness}")
    return 0
