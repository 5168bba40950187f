"""Static analysis of a ruleset: conflicts, redundancy, shadowing, gaps and unused names.

Conditions are decided exactly (see :mod:`pldc.analysis.logic`), with one-of features mutually
exclusive. Each pass in :data:`~pldc.analysis.passes.PASSES` returns findings; the configuration
sets how severe each kind is, and ``allow KIND "reason"`` in a rule (or the task, for findings
that name no rule) accepts a finding on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

from pldc import ast
from pldc.analysis.findings import AnalysisConfig, Finding, to_diagnostic
from pldc.analysis.logic import existing_objects_frozen
from pldc.analysis.passes import PASSES, Context
from pldc.errors import Diagnostic

__all__ = ["Analysis", "AnalysisConfig", "Finding", "analyze"]


@dataclass(frozen=True)
class Analysis:
    """Findings with their severity, and the ones accepted by an ``allow`` with its reason."""

    findings: list[tuple[Finding, str]]
    allowed: list[tuple[Finding, str]]

    @property
    def errors(self) -> int:
        return sum(1 for _, level in self.findings if level == "error")

    def diagnostics(self) -> list[Diagnostic]:
        return [to_diagnostic(finding, level) for finding, level in self.findings]


def analyze(
    ruleset: ast.Ruleset, ordered: list[ast.Rule], priorities: dict[str, int], config: AnalysisConfig | None = None
) -> Analysis:
    """Run every pass on a ruleset that resolved without errors."""
    config = config or AnalysisConfig()
    reasons = _allowances(ruleset)
    findings: list[tuple[Finding, str]] = []
    allowed: list[tuple[Finding, str]] = []
    with existing_objects_frozen():
        context = Context.build(ruleset, ordered, priorities)
        results = [finding for run in PASSES for finding in run(context)]
    for finding in results:
        level = config.level(finding.kind)
        if level == "off":
            continue
        reason = _allowed_by(finding, reasons)
        if reason is not None:
            allowed.append((finding, reason))
        else:
            findings.append((finding, level))
    return Analysis(findings, allowed)


def _allowances(ruleset: ast.Ruleset) -> dict[tuple[str | None, str], str]:
    reasons: dict[tuple[str | None, str], str] = {}
    task = ruleset.task
    for allowance in task.allows if task else ():
        reasons[(None, allowance.kind.value)] = allowance.reason
    for rule in ruleset.rules:
        for allowance in rule.allows:
            reasons[(rule.id.value, allowance.kind.value)] = allowance.reason
    return reasons


def _allowed_by(finding: Finding, reasons: dict[tuple[str | None, str], str]) -> str | None:
    if not finding.rules:
        return reasons.get((None, finding.kind))
    for rule_id in finding.rules:
        reason = reasons.get((rule_id, finding.kind))
        if reason is not None:
            return reason
    return None
