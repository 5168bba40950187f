"""Findings of the rule analysis and how severe each kind is."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pldc.analysis.logic import Value
from pldc.errors import Diagnostic, Severity, Span

KINDS: dict[str, tuple[str, str]] = {
    # kind: (code, default severity)
    "conflict": ("A001", "error"),
    "order-dependent": ("A002", "warning"),
    "duplicate": ("A003", "warning"),
    "subsumed": ("A004", "warning"),
    "shadowed": ("A005", "warning"),
    "gap": ("A006", "info"),
    "unused-feature": ("A007", "warning"),
    "unused-label": ("A008", "warning"),
    "unsatisfiable": ("A009", "warning"),
    "undecided": ("A010", "info"),
}
LEVELS = ("off", "info", "warning", "error")


@dataclass(frozen=True)
class Finding:
    """One analysis result: its kind, the rules involved with their spans, and a witness.

    The witness is an assignment of feature values at which the finding shows: where two
    rules both fire, or where no rule fires.
    """

    kind: str
    message: str
    rules: tuple[str, ...]
    spans: tuple[Span, ...]
    hint: str
    witness: dict[str, Value] | None = None
    subject: str | None = None

    @property
    def code(self) -> str:
        return KINDS[self.kind][0]

    def to_json(self, severity: str, allowed: str | None = None) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "code": self.code,
            "severity": severity,
            "message": self.message,
            "rules": list(self.rules),
            "subject": self.subject,
            "spans": [s.model_dump() for s in self.spans],
            "witness": self.witness,
            "hint": self.hint,
            "allowed": allowed,
        }


@dataclass
class AnalysisConfig:
    """Severity per finding kind; ``strict`` turns warnings into errors."""

    levels: dict[str, str] = field(default_factory=lambda: {kind: level for kind, (_, level) in KINDS.items()})
    strict: bool = False

    def set_level(self, kinds: Iterable[str], level: str) -> None:
        for kind in kinds:
            if kind not in KINDS:
                raise ValueError(f"unknown finding kind {kind!r}; kinds: {', '.join(KINDS)}")
            self.levels[kind] = level

    def level(self, kind: str) -> str:
        level = self.levels[kind]
        if self.strict and level == "warning":
            return "error"
        return level


def format_witness(witness: dict[str, Value] | None) -> str:
    if not witness:
        return ""
    parts = []
    for name, value in witness.items():
        if value is True:
            parts.append(name)
        elif value is False:
            parts.append(f"not {name}")
        else:
            parts.append(f"{name} = {value}")
    return ", ".join(parts)


def to_diagnostic(finding: Finding, level: str) -> Diagnostic:
    severity = {"error": Severity.ERROR, "warning": Severity.WARNING}.get(level, Severity.NOTE)
    message = finding.message
    if finding.witness:
        message += f" (for example: {format_witness(finding.witness)})"
    span = finding.spans[0] if finding.spans else Span()
    return Diagnostic(finding.code, message, span, severity=severity, hint=finding.hint)
