"""Parse ``.pld`` source text into a :class:`~pldc.ast.Ruleset`.

The grammar lives in ``grammar/pld.lark``. Syntax errors become :class:`Diagnostic` objects
with codes ``E001``-``E009``; the parser stops at the first syntax error in a file, because
later errors after a broken token are rarely real.
"""

from __future__ import annotations

import re
import textwrap
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from pldc import ast
from pldc.errors import Diagnostic, DiagnosticError, Span
from pldc.files import read_text
from pldc.resources import resource_dir

SUPPORTED_VERSIONS = ("1", "1.0")
KEYWORDS = frozenset(
    "pld meta task description input label spelled default hit feature bool one of group rule when then "
    "because priority overrides examples support confidence teacher tags allow not and or is case given "
    "expect by".split()
)

_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}

# Friendly names for terminals in "expected ..." messages.
_TERMINAL_NAMES = {
    "NAME": "a name",
    "STRING": "a string",
    "LONG_STRING": "a string",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LSQB": "'['",
    "RSQB": "']'",
    "LPAR": "'('",
    "RPAR": "')'",
    "COLON": "':'",
    "COMMA": "','",
    "EQUAL": "'='",
    "VERSION": "a version number",
    "INT": "a whole number",
    "SIGNED_INT": "a whole number",
    "NUMBER": "a number",
    "$END": "end of file",
}


@dataclass(frozen=True)
class Comment:
    """A ``#`` comment with its position; the formatter puts it back where it was."""

    text: str
    line: int
    column: int


@dataclass(frozen=True)
class ParseResult:
    ruleset: ast.Ruleset
    comments: tuple[Comment, ...]
    source: str
    # Errors found while building the tree (bad escapes, repeated fields, ranges).
    diagnostics: tuple[Diagnostic, ...] = ()


# Comments of the parse in progress; Lark calls the lexer callback for each one.
_comments: ContextVar[list[Comment]] = ContextVar("pld_comments")


def _keep_comment(token: Token) -> Token:
    _comments.get().append(Comment(str(token), token.line or 0, token.column or 0))
    return token


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = (resource_dir("grammar") / "pld.lark").read_text(encoding="utf-8")
    return Lark(
        grammar,
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=False,
        lexer_callbacks={"COMMENT": _keep_comment},
        # The `regex` module supports Unicode categories, so names may use any script's letters and marks.
        regex=True,
    )


def read_source(path: str | Path) -> str:
    """Read a ``.pld`` file as UTF-8, raising :class:`InputError` with a clear message."""
    # A byte order mark, as some Windows editors write, is not part of the text.
    return read_text(path).removeprefix("\ufeff")


def parse_file(path: str | Path) -> ParseResult:
    return parse(read_source(path), str(path))


def parse(source: str, path: str = "<string>") -> ParseResult:
    """Parse source text; raise :class:`DiagnosticError` on a syntax error."""
    comments: list[Comment] = []
    bad = _find_control_character(source, path)
    if bad is not None:
        raise DiagnosticError([bad], {path: source})
    builder = _Builder(path)
    try:
        tree = _parse_tree(source, comments)
        ruleset = builder.transform(tree)
    except UnexpectedInput as error:
        raise DiagnosticError([_syntax_diagnostic(error, source, path)], {path: source}) from None
    except VisitError as error:
        if isinstance(error.orig_exc, _BuildError):
            raise DiagnosticError([error.orig_exc.diagnostic], {path: source}) from None
        if isinstance(error.orig_exc, RecursionError):
            raise DiagnosticError([_too_deep(source, path)], {path: source}) from None
        raise
    except RecursionError:
        raise DiagnosticError([_too_deep(source, path)], {path: source}) from None
    return ParseResult(ruleset, tuple(comments), source, tuple(builder.errors))


MAX_DEPTH = 100


def _too_deep(source: str, path: str) -> Diagnostic:
    """Locate the first place where parentheses or ``not`` nest deeper than :data:`MAX_DEPTH`."""
    depth = 0
    line, column = 1, 1
    for number, text in enumerate(source.split("\n"), 1):
        for position, char in enumerate(text, 1):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth > MAX_DEPTH:
                line, column = number, position
                break
        else:
            continue
        break
    span = Span(path=path, line=line, column=column, end_line=line, end_column=column + 1)
    message = f"condition nested too deeply (more than {MAX_DEPTH} levels)"
    return Diagnostic("E008", message, span, hint="split the condition into features or several rules")


def _parse_tree(source: str, comments: list[Comment]) -> Tree[Token]:
    token = _comments.set(comments)
    try:
        return _parser().parse(source)
    finally:
        _comments.reset(token)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def _find_control_character(source: str, path: str) -> Diagnostic | None:
    match = _CONTROL.search(source)
    if match is None:
        return None
    line = source.count("\n", 0, match.start()) + 1
    column = match.start() - (source.rfind("\n", 0, match.start()) + 1) + 1
    char = match.group(0)
    return Diagnostic(
        "E002",
        f"control character U+{ord(char):04X} is not allowed in a .pld file",
        Span(path=path, line=line, column=column, end_line=line, end_column=column + 1),
        hint="remove the character; write \\n or \\t inside strings instead",
    )


def _syntax_diagnostic(error: UnexpectedInput, source: str, path: str) -> Diagnostic:
    line, column = error.line or 1, error.column or 1
    if isinstance(error, UnexpectedCharacters):
        position = error.pos_in_stream or 0
        char = source[position] if position < len(source) else ""
        if char == '"' and source[max(position - 2, 0) : position + 1] == '"""':
            # The lexer read the first two quotes as an empty string; point at the first one.
            column = max(column - 2, 1)
            message = "unterminated triple-quoted string"
            code, hint = "E003", 'close it with """'
        elif char == '"' and source[position : position + 3] == '"""':
            message = "unterminated triple-quoted string"
            code, hint = "E003", 'close it with """'
        elif char == '"':
            message = "unterminated string"
            code, hint = "E003", 'close the string with " on the same line, or use """ for several lines'
        else:
            message = f"unexpected character {char!r}"
            code, hint = "E002", None
        span = Span(path=path, line=line, column=column, end_line=line, end_column=column + 1)
        return Diagnostic(code, message, span, hint=hint)
    expected = _describe_expected(getattr(error, "expected", None) or getattr(error, "accepts", None) or set())
    if isinstance(error, UnexpectedEOF):
        end = source.rstrip("\n").split("\n")
        line, column = len(end), len(end[-1]) + 1
        span = Span(path=path, line=line, column=column, end_line=line, end_column=column + 1)
        return Diagnostic("E001", f"unexpected end of file, expected {expected}", span)
    assert isinstance(error, UnexpectedToken)
    token = error.token
    if token.type == "$END":
        end = source.rstrip("\n").split("\n")
        line, column = len(end), len(end[-1]) + 1
        span = Span(path=path, line=line, column=column, end_line=line, end_column=column + 1)
        return Diagnostic("E001", f"unexpected end of file, expected {expected}", span)
    width = len(str(token)) if "\n" not in str(token) else 1
    span = Span(path=path, line=line, column=column, end_line=line, end_column=column + width)
    return Diagnostic("E001", f"unexpected {_describe_token(token)}, expected {expected}", span)


def _describe_token(token: Token) -> str:
    text = str(token)
    if token.type in ("STRING", "LONG_STRING"):
        return "string"
    if len(text) > 30:
        text = text[:27] + "..."
    return f"{text!r}"


def _describe_expected(names: set[str] | frozenset[str]) -> str:
    described = sorted({_TERMINAL_NAMES.get(n, _keyword(n)) for n in names})
    if not described:
        return "something else"
    if len(described) > 12:
        return ", ".join(described[:12]) + ", ..."
    return " or ".join(described) if len(described) <= 2 else ", ".join(described[:-1]) + " or " + described[-1]


def _keyword(terminal: str) -> str:
    # Lark names anonymous keyword terminals after the keyword in upper case (e.g. "WHEN").
    return f"'{terminal.lower()}'"


class _BuildError(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def _unescape(raw: str) -> str:
    """Replace the escape sequences of a string body; an invalid one is kept as written."""
    return _ESCAPE.sub(lambda match: _ESCAPES.get(match.group(1), match.group(0)), raw)


def escape_errors(token: Token, span: Span) -> list[Diagnostic]:
    """Diagnose invalid escape sequences, located in the string token as written."""
    text = str(token)
    errors = []
    for match in _ESCAPE.finditer(text):
        char = match.group(1)
        if char in _ESCAPES:
            continue
        before = text[: match.start()]
        line = span.line + before.count("\n")
        column = span.column + match.start() if "\n" not in before else match.start() - before.rfind("\n")
        where = Span(path=span.path, line=line, column=column, end_line=line, end_column=column + 2)
        hint = 'use \\\\, \\", \\n, \\t or \\r'
        errors.append(Diagnostic("E004", f"invalid escape sequence '\\{char}' in string", where, hint=hint))
    return errors


def decode_string(token: Token) -> str:
    """Return the value of a ``"..."`` or ``\"\"\"...\"\"\"`` string token."""
    text = str(token)
    if token.type == "LONG_STRING":
        body = text[3:-3]
        if body.startswith("\n"):
            body = body[1:]
        lines = body.split("\n")
        if lines and not lines[-1].strip():
            lines = lines[:-1]
        return _unescape(textwrap.dedent("\n".join(lines)))
    return _unescape(text[1:-1])


class _Builder(Transformer[Token, Any]):
    """Turn the Lark tree into pydantic nodes, attaching spans."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        # Errors that leave the tree usable; they are reported with the name and type errors.
        self.errors: list[Diagnostic] = []

    # -- helpers ----------------------------------------------------------

    def _span(self, meta: Any) -> Span:
        if getattr(meta, "empty", True):
            return Span(path=self.path)
        return Span(
            path=self.path, line=meta.line, column=meta.column, end_line=meta.end_line, end_column=meta.end_column
        )

    def _token_span(self, token: Token) -> Span:
        return Span(
            path=self.path,
            line=token.line or 0,
            column=token.column or 0,
            end_line=token.end_line or 0,
            end_column=token.end_column or 0,
        )

    def _name(self, token: Token) -> ast.Name:
        return ast.Name(value=str(token), span=self._token_span(token))

    def _string(self, token: Token) -> str:
        self.errors.extend(escape_errors(token, self._token_span(token)))
        return decode_string(token)

    def _report(self, diagnostic: Diagnostic) -> None:
        self.errors.append(diagnostic)

    # -- header -----------------------------------------------------------

    @v_args(meta=True)
    def start(self, meta: Any, children: list[Any]) -> ast.Ruleset:
        version, metas = children[0]
        return ast.Ruleset(
            path=self.path, version=version, meta=tuple(metas), items=tuple(children[1:]), span=self._span(meta)
        )

    @v_args(meta=True)
    def header(self, meta: Any, children: list[Any]) -> tuple[str, list[ast.Meta]]:
        version = children[0]
        if str(version) not in SUPPORTED_VERSIONS:
            raise _BuildError(
                Diagnostic(
                    "E005",
                    f"unsupported language version {str(version)!r}",
                    self._token_span(version),
                    hint=f"this pldc reads version {SUPPORTED_VERSIONS[-1]}",
                )
            )
        return str(version), children[1:]

    @v_args(meta=True)
    def meta(self, meta: Any, children: list[Any]) -> ast.Meta:
        return ast.Meta(key=self._name(children[0]), value=self._string(children[1]), span=self._span(meta))

    # -- task -------------------------------------------------------------

    @v_args(meta=True)
    def task(self, meta: Any, children: list[Any]) -> ast.Task:
        fields: dict[str, Any] = {"inputs": [], "labels": [], "allows": []}
        spans: dict[str, Span] = {}
        for kind, value, span in children[1:]:
            if kind in ("inputs", "labels", "allows"):
                fields[kind].append(value)
                continue
            if kind in fields:
                self._report(Diagnostic("E006", f"duplicate '{kind}' in task", span, hint="keep one"))
                continue
            fields[kind] = value
            spans[kind] = span
        fields["field_spans"] = spans
        fields["inputs"] = tuple(fields["inputs"])
        fields["labels"] = tuple(fields["labels"])
        fields["allows"] = tuple(fields["allows"])
        return ast.Task(name=self._name(children[0]), span=self._span(meta), **fields)

    @v_args(meta=True)
    def description(self, meta: Any, children: list[Any]) -> tuple[str, str, Span]:
        return "description", self._string(children[0]), self._span(meta)

    @v_args(meta=True)
    def input_decl(self, meta: Any, children: list[Any]) -> tuple[str, ast.Input, Span]:
        span = self._span(meta)
        node = ast.Input(name=self._name(children[0]), description=self._string(children[1]), span=span)
        return "inputs", node, span

    @v_args(meta=True)
    def label_decl(self, meta: Any, children: list[Any]) -> tuple[str, ast.Label, Span]:
        span = self._span(meta)
        spellings = tuple(children[2]) if len(children) > 2 else ()
        node = ast.Label(
            name=self._name(children[0]), description=self._string(children[1]), spellings=spellings, span=span
        )
        return "labels", node, span

    def spelled(self, children: list[Token]) -> list[str]:
        return [self._string(c) for c in children]

    @v_args(meta=True)
    def default_decl(self, meta: Any, children: list[Token]) -> tuple[str, ast.Name, Span]:
        return "default", self._name(children[0]), self._span(meta)

    @v_args(meta=True)
    def hit_decl(self, meta: Any, children: list[Token]) -> tuple[str, ast.Name, Span]:
        return "hit", self._name(children[0]), self._span(meta)

    # -- features ---------------------------------------------------------

    @v_args(meta=True)
    def feature(self, meta: Any, children: list[Any]) -> ast.Feature:
        values = children[1]
        return ast.Feature(
            name=self._name(children[0]), values=values, definition=self._string(children[2]), span=self._span(meta)
        )

    def bool_type(self, children: list[Any]) -> None:
        return None

    def enum_type(self, children: list[Any]) -> tuple[ast.Name, ...]:
        return tuple(children[0])

    def name_list(self, children: list[Token]) -> list[ast.Name]:
        return [self._name(c) for c in children]

    # -- rules ------------------------------------------------------------

    @v_args(meta=True)
    def group(self, meta: Any, children: list[Any]) -> ast.Group:
        name = self._name(children[0])
        rest = children[1:]
        title = None
        if rest and isinstance(rest[0], Token):
            title = self._string(rest[0])
            rest = rest[1:]
        rules = tuple(r.model_copy(update={"group": name.value}) for r in rest)
        return ast.Group(name=name, title=title, rules=rules, span=self._span(meta))

    @v_args(meta=True)
    def rule(self, meta: Any, children: list[Any]) -> ast.Rule:
        fields: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        allows: list[ast.Allowance] = []
        for kind, value, span in children[2:]:
            if kind == "allows":
                allows.append(value)
                continue
            if kind in fields:
                message = f"duplicate '{_FIELD_KEYWORDS[kind]}' in rule {children[0]}"
                self._report(Diagnostic("E006", message, span, hint="keep one"))
                continue
            fields[kind] = value
            spans[kind] = span
        fields["field_spans"] = spans
        fields["allows"] = tuple(allows)
        return ast.Rule(id=self._name(children[0]), title=self._string(children[1]), span=self._span(meta), **fields)

    @v_args(meta=True)
    def when(self, meta: Any, children: list[Any]) -> tuple[str, Any, Span]:
        return "condition", children[0], self._span(meta)

    @v_args(meta=True)
    def then(self, meta: Any, children: list[Token]) -> tuple[str, ast.Name, Span]:
        return "label", self._name(children[0]), self._span(meta)

    @v_args(meta=True)
    def because(self, meta: Any, children: list[Token]) -> tuple[str, str, Span]:
        return "rationale", self._string(children[0]), self._span(meta)

    @v_args(meta=True)
    def priority(self, meta: Any, children: list[Token]) -> tuple[str, int, Span]:
        return "priority", int(children[0]), self._span(meta)

    @v_args(meta=True)
    def overrides(self, meta: Any, children: list[Any]) -> tuple[str, tuple[ast.Name, ...], Span]:
        return "overrides", tuple(children[0]), self._span(meta)

    @v_args(meta=True)
    def examples(self, meta: Any, children: list[Token]) -> tuple[str, tuple[str, ...], Span]:
        return "examples", tuple(self._string(c) for c in children), self._span(meta)

    @v_args(meta=True)
    def support(self, meta: Any, children: list[Token]) -> tuple[str, int, Span]:
        return "support", int(children[0]), self._span(meta)

    @v_args(meta=True)
    def confidence(self, meta: Any, children: list[Token]) -> tuple[str, float, Span]:
        span = self._span(meta)
        value = float(children[0])
        if not 0.0 <= value <= 1.0:
            self._report(Diagnostic("E007", f"confidence {children[0]} is outside 0..1", self._token_span(children[0])))
        return "confidence", value, span

    @v_args(meta=True)
    def teacher(self, meta: Any, children: list[Token]) -> tuple[str, str, Span]:
        return "teacher", self._string(children[0]), self._span(meta)

    @v_args(meta=True)
    def tags(self, meta: Any, children: list[Any]) -> tuple[str, tuple[ast.Name, ...], Span]:
        return "tags", tuple(children[0]), self._span(meta)

    @v_args(meta=True)
    def allow(self, meta: Any, children: list[Token]) -> tuple[str, ast.Allowance, Span]:
        span = self._span(meta)
        node = ast.Allowance(kind=self._name(children[0]), reason=self._string(children[1]), span=span)
        return "allows", node, span

    # -- conditions -------------------------------------------------------

    @v_args(meta=True)
    def or_(self, meta: Any, children: list[Any]) -> Any:
        if len(children) == 1:
            return children[0]
        return ast.Or(operands=tuple(children), span=self._span(meta))

    @v_args(meta=True)
    def and_(self, meta: Any, children: list[Any]) -> Any:
        if len(children) == 1:
            return children[0]
        return ast.And(operands=tuple(children), span=self._span(meta))

    @v_args(meta=True)
    def not_(self, meta: Any, children: list[Any]) -> ast.Not:
        return ast.Not(operand=children[0], span=self._span(meta))

    @v_args(meta=True)
    def predicate(self, meta: Any, children: list[Token]) -> ast.Predicate:
        return ast.Predicate(feature=self._name(children[0]), span=self._span(meta))

    @v_args(meta=True)
    def is_(self, meta: Any, children: list[Token]) -> ast.IsValue:
        return ast.IsValue(feature=self._name(children[0]), value=self._name(children[1]), span=self._span(meta))

    # -- cases ------------------------------------------------------------

    @v_args(meta=True)
    def case(self, meta: Any, children: list[Any]) -> ast.Case:
        name = self._name(children[0])
        rest = children[1:]
        title = None
        if rest and isinstance(rest[0], Token):
            title = self._string(rest[0])
            rest = rest[1:]
        fields: dict[str, Any] = {}
        for kind, value, span in rest:
            if kind in fields:
                self._report(Diagnostic("E006", f"duplicate '{kind}' in case {name.value}", span, hint="keep one"))
                continue
            fields[kind] = value
        expect = fields.get("expect", (None, None))
        return ast.Case(
            name=name,
            title=title,
            given=fields.get("given", ()),
            expect=expect[0],
            by=expect[1],
            span=self._span(meta),
        )

    @v_args(meta=True)
    def given(self, meta: Any, children: list[ast.Assignment]) -> tuple[str, tuple[ast.Assignment, ...], Span]:
        return "given", tuple(children), self._span(meta)

    @v_args(meta=True)
    def assign_true(self, meta: Any, children: list[Token]) -> ast.Assignment:
        return ast.Assignment(feature=self._name(children[0]), value=True, span=self._span(meta))

    @v_args(meta=True)
    def assign_false(self, meta: Any, children: list[Token]) -> ast.Assignment:
        return ast.Assignment(feature=self._name(children[0]), value=False, span=self._span(meta))

    @v_args(meta=True)
    def assign_value(self, meta: Any, children: list[Token]) -> ast.Assignment:
        return ast.Assignment(feature=self._name(children[0]), value=self._name(children[1]), span=self._span(meta))

    @v_args(meta=True)
    def expect(self, meta: Any, children: list[Token]) -> tuple[str, tuple[ast.Name, ast.Name | None], Span]:
        by = self._name(children[1]) if len(children) > 1 else None
        return "expect", (self._name(children[0]), by), self._span(meta)


_FIELD_KEYWORDS = {
    "condition": "when",
    "label": "then",
    "rationale": "because",
    "priority": "priority",
    "overrides": "overrides",
    "examples": "examples",
    "support": "support",
    "confidence": "confidence",
    "teacher": "teacher",
    "tags": "tags",
}
