"""Run the front-end stages on a file: parse, resolve, order and the in-file cases."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pldc import ast
from pldc.cases import run_cases
from pldc.errors import Diagnostic, DiagnosticError
from pldc.order import order_rules
from pldc.parse import ParseResult, parse, read_source
from pldc.resolve import resolve


@dataclass(frozen=True)
class CheckedRuleset:
    """A ruleset that parsed, with its compiled rule order and any remaining diagnostics."""

    parsed: ParseResult
    ordered: list[ast.Rule]
    priorities: dict[str, int]
    diagnostics: list[Diagnostic]

    @property
    def ruleset(self) -> ast.Ruleset:
        return self.parsed.ruleset

    @property
    def ok(self) -> bool:
        return not self.diagnostics


def check_source(source: str, path: str) -> CheckedRuleset:
    """Parse and check ``source``; a syntax error raises :class:`DiagnosticError`."""
    parsed = parse(source, path)
    diagnostics = [*parsed.diagnostics, *resolve(parsed.ruleset)]
    diagnostics.sort(key=lambda d: (d.span.line, d.span.column))
    ordering = order_rules(parsed.ruleset)
    diagnostics.extend(ordering.errors)
    if not diagnostics:
        diagnostics.extend(run_cases(parsed.ruleset, ordering.rules, ordering.priorities))
    return CheckedRuleset(parsed, ordering.rules, ordering.priorities, diagnostics)


def check_file(path: str | Path) -> CheckedRuleset:
    return check_source(read_source(path), str(path))


def load_ruleset(path: str | Path) -> CheckedRuleset:
    """Check a file and raise :class:`DiagnosticError` unless it is clean."""
    checked = check_file(path)
    if checked.diagnostics:
        raise DiagnosticError(checked.diagnostics, {str(path): checked.parsed.source})
    return checked


def first_error(text: str, path: str) -> tuple[CheckedRuleset, str | None]:
    """Check a generated ruleset and return it with its first error, or None when it has none.

    An error is a diagnostic of :func:`check_source` or an analysis finding at error level.
    """
    from pldc.analysis import analyze

    checked = check_source(text, path)
    if checked.diagnostics:
        first = checked.diagnostics[0]
        return checked, f"does not check: {first.code}: {first.message}"
    analysis = analyze(checked.ruleset, checked.ordered, checked.priorities)
    errors = [finding for finding, level in analysis.findings if level == "error"]
    if errors:
        return checked, f"fails the analysis: {errors[0].kind}: {errors[0].message}"
    return checked, None
