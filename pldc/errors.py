"""Source spans, diagnostics and the exceptions pldc raises.

A :class:`Diagnostic` is a structured error with a code and a span; the command line renders
it as ``FILE:LINE:COL: error[CODE]: message`` followed by the source line and a caret, the way
compilers do. Callers that need the fields (tests, JSON output) read them directly and never
parse the rendered text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Span(BaseModel):
    """A region of a source file: 1-based lines and columns, end column exclusive."""

    model_config = ConfigDict(frozen=True)

    path: str = "<unknown>"
    line: int = 0
    column: int = 0
    end_line: int = 0
    end_column: int = 0

    @classmethod
    def unknown(cls) -> Span:
        return cls()

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a source file, with the code documented in ``docs/language.md``."""

    code: str
    message: str
    span: Span
    severity: Severity = Severity.ERROR
    hint: str | None = None

    def render(self, source: str | None = None) -> str:
        """Format the diagnostic with the offending source line and a caret under it."""
        head = f"{self.span}: {self.severity.value}[{self.code}]: {self.message}"
        lines = [head]
        snippet = _snippet(source, self.span) if source is not None else None
        if snippet:
            lines.append(snippet)
        if self.hint:
            lines.append(f"  = help: {self.hint}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "path": self.span.path,
            "line": self.span.line,
            "column": self.span.column,
            "end_line": self.span.end_line,
            "end_column": self.span.end_column,
            "hint": self.hint,
        }


def _snippet(source: str, span: Span) -> str | None:
    lines = source.split("\n")
    if not 1 <= span.line <= len(lines):
        return None
    text = lines[span.line - 1].expandtabs(1)
    gutter = f"{span.line:>4} | "
    width = 1
    if span.end_line == span.line and span.end_column > span.column:
        width = span.end_column - span.column
    caret = " " * (len(gutter) - 2) + "| " + " " * max(span.column - 1, 0) + "^" * width
    return f"{gutter}{text}\n{caret}"


class PldError(Exception):
    """Base class of every error pldc raises on purpose."""

    exit_code = 1


@dataclass
class DiagnosticError(PldError):
    """Raised when a source file has errors; carries all of them and the source text."""

    diagnostics: list[Diagnostic]
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render(self.sources.get(d.span.path)) for d in self.diagnostics)


class InputError(PldError):
    """A missing or unreadable file, or data that does not fit the task."""

    exit_code = 3


class UsageError(PldError):
    """An invalid command-line value or combination of options."""

    exit_code = 2


class ModelError(PldError):
    """A student model that cannot be found, loaded or run."""

    exit_code = 4


class CheckFailed(PldError):
    """A ``--check`` comparison found a difference."""

    exit_code = 1
