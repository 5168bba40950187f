"""Render analysis results as the lines the fixture ``.expected`` files hold."""

from __future__ import annotations

from pathlib import Path

from pldc.analysis import Finding, analyze
from pldc.analysis.findings import format_witness
from pldc.errors import DiagnosticError
from pldc.pipeline import check_file


def report_lines(path: Path) -> list[str]:
    """One line per finding: ``KIND RULES | WITNESS``; accepted ones start with ``allowed``."""
    try:
        checked = check_file(path)
    except DiagnosticError as error:
        return [f"error {d.code} {d.message}" for d in error.diagnostics]
    if checked.diagnostics:
        return [f"error {d.code} {d.message}" for d in checked.diagnostics]
    analysis = analyze(checked.ruleset, checked.ordered, checked.priorities)
    lines = [_line(f) for f, _ in analysis.findings]
    lines += [f"allowed {_line(f)}" for f, _ in analysis.allowed]
    lines.append("order " + " ".join(r.id.value for r in checked.ordered))
    return lines


def _line(finding: Finding) -> str:
    subject = ",".join(finding.rules) or finding.subject or "-"
    witness = f" | {format_witness(finding.witness)}" if finding.witness else ""
    return f"{finding.kind} {subject}{witness}"
