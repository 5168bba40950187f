"""Print a ruleset in the one canonical ``.pld`` layout, keeping its comments.

Formatting never changes meaning: the printed file parses to a ruleset equal to the input
(spans aside), and formatting the output again changes nothing. Comments stay attached to the
line they preceded, or trail the line they were on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lark import Token

from pldc import ast
from pldc.errors import Span
from pldc.parse import Comment, ParseResult, decode_string

INDENT = "    "
# The grammar's triple-quoted string, and a quote that would start a run of three.
_LONG_STRING = re.compile(r'"""(?:[^"\\]|\\.|"(?!""))*"""', re.DOTALL)
_QUOTE_RUN = re.compile(r'"(?="")')

_OR, _AND, _NOT = 1, 2, 3


def format_source(result: ParseResult) -> str:
    """Return the canonical text of a parsed file."""
    blank = {number for number, line in enumerate(result.source.split("\n"), 1) if not line.strip()}
    return _Printer(result.comments, blank).print_ruleset(result.ruleset)


def format_condition(condition: ast.Condition, parent: int = 0) -> str:
    """Print a condition with the fewest parentheses that keep its tree unchanged."""
    if isinstance(condition, ast.Predicate):
        return condition.feature.value
    if isinstance(condition, ast.IsValue):
        return f"{condition.feature.value} is {condition.value.value}"
    if isinstance(condition, ast.Not):
        return "not " + format_condition(condition.operand, _NOT)
    precedence, word = (_AND, " and ") if isinstance(condition, ast.And) else (_OR, " or ")
    # A nested operator of the same kind keeps its parentheses, so the tree shape survives.
    text = word.join(format_condition(operand, precedence + 1) for operand in condition.operands)
    return f"({text})" if parent > precedence else text


def quote(value: str, indent: str = "") -> str:
    """Write a string literal: triple-quoted for multi-line text when that round-trips."""
    if "\n" in value and "\r" not in value:
        body = _QUOTE_RUN.sub('\\\\"', value.replace("\\", "\\\\"))
        inner = indent + INDENT
        lines = [(inner + line) if line else "" for line in body.split("\n")]
        literal = '"""\n' + "\n".join(lines) + "\n" + inner + '"""'
        # The literal must lex as one string and decode back to the value, or a plain one is used.
        if _LONG_STRING.fullmatch(literal) and decode_string(Token("LONG_STRING", literal)) == value:
            return literal
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    )
    return f'"{escaped}"'


def format_number(value: float) -> str:
    """Shortest text that parses back to exactly ``value`` (``repr`` of a finite float)."""
    return repr(value)


def names(items: Sequence[ast.Name]) -> str:
    return ", ".join(item.value for item in items)


class _Printer:
    def __init__(self, comments: Sequence[Comment], blank_lines: set[int]) -> None:
        self.comments = sorted(comments, key=lambda c: (c.line, c.column))
        # A blank source line after a comment is kept, so a header comment stays its own paragraph.
        self.blank_lines = blank_lines
        self.next_comment = 0
        self.lines: list[str] = []
        self.depth = 0
        self.want_blank = False

    # -- output primitives ------------------------------------------------

    @property
    def indent(self) -> str:
        return INDENT * self.depth

    def _put(self, text: str) -> None:
        if self.want_blank and self.lines and self.lines[-1] != "":
            self.lines.append("")
        self.want_blank = False
        self.lines.append(text)

    def _flush_before(self, line: int) -> None:
        while self.next_comment < len(self.comments) and self.comments[self.next_comment].line < line:
            comment = self.comments[self.next_comment]
            self._put(self.indent + comment.text)
            self.next_comment += 1
            if comment.line + 1 in self.blank_lines and comment.line + 1 < line:
                self.want_blank = True

    def emit(self, text: str, span: Span) -> None:
        """Write one construct, preceded by its leading comments and followed by trailing ones."""
        if span.line:
            self._flush_before(span.line)
        self._put(self.indent + text)
        trailing: list[Comment] = []
        while (
            span.line
            and self.next_comment < len(self.comments)
            and self.comments[self.next_comment].line <= span.end_line
        ):
            trailing.append(self.comments[self.next_comment])
            self.next_comment += 1
        if trailing:
            self.lines[-1] += "  " + trailing[0].text
            for comment in trailing[1:]:
                self.lines.append(self.indent + comment.text)

    def open(self, text: str, span: Span) -> None:
        head = Span(path=span.path, line=span.line, column=span.column, end_line=span.line, end_column=0)
        self.emit(text + " {", head)
        self.depth += 1

    def close(self, span: Span) -> None:
        if span.end_line:
            self._flush_before(span.end_line)
        self.depth -= 1
        closing = Span(path=span.path, line=span.end_line, column=1, end_line=span.end_line, end_column=1)
        self.emit("}", closing)

    # -- constructs -------------------------------------------------------

    def print_ruleset(self, ruleset: ast.Ruleset) -> str:
        header_line = ruleset.span.line or 1
        self.emit(f"pld {ruleset.version}", Span(line=header_line, end_line=header_line))
        for meta in ruleset.meta:
            self.emit(f"meta {meta.key.value} {quote(meta.value)}", meta.span)
        previous: ast.Item | None = None
        for item in ruleset.items:
            if not (isinstance(item, ast.Feature) and isinstance(previous, ast.Feature)):
                self.want_blank = True
            self._print_item(item)
            previous = item
        self._flush_before(10**9)
        return "\n".join(self.lines) + "\n"

    def _print_item(self, item: ast.Item) -> None:
        if isinstance(item, ast.Task):
            self._print_task(item)
        elif isinstance(item, ast.Feature):
            self._print_feature(item)
        elif isinstance(item, ast.Group):
            self._print_group(item)
        elif isinstance(item, ast.Rule):
            self._print_rule(item)
        else:
            self._print_case(item)

    def _print_task(self, task: ast.Task) -> None:
        self.open(f"task {task.name.value}", task.span)
        entries: list[tuple[Span, str]] = []
        if task.description is not None:
            # The description has no node of its own; it sits right after the opening line.
            span = task.field_spans.get("description", Span())
            entries.append((span, f"description {quote(task.description, self.indent)}"))
        for item in task.inputs:
            entries.append((item.span, f"input {item.name.value} {quote(item.description, self.indent)}"))
        for label in task.labels:
            text = f"label {label.name.value} {quote(label.description, self.indent)}"
            if label.spellings:
                text += " spelled " + ", ".join(quote(s) for s in label.spellings)
            entries.append((label.span, text))
        if task.default is not None:
            entries.append((task.field_spans.get("default", task.default.span), f"default {task.default.value}"))
        if task.hit is not None:
            entries.append((task.field_spans.get("hit", task.hit.span), f"hit {task.hit.value}"))
        for allowance in task.allows:
            entries.append((allowance.span, _allow(allowance, self.indent)))
        for span, text in entries:
            self.emit(text, span)
        self.close(task.span)

    def _print_feature(self, feature: ast.Feature) -> None:
        kind = "bool" if feature.values is None else f"one of [{names(feature.values)}]"
        self.emit(f"feature {feature.name.value}: {kind} {quote(feature.definition, self.indent)}", feature.span)

    def _print_group(self, group: ast.Group) -> None:
        title = f" {quote(group.title)}" if group.title is not None else ""
        self.open(f"group {group.name.value}{title}", group.span)
        for position, rule in enumerate(group.rules):
            if position:
                self.want_blank = True
            self._print_rule(rule)
        self.close(group.span)

    def _print_rule(self, rule: ast.Rule) -> None:
        self.open(f"rule {rule.id.value} {quote(rule.title)}", rule.span)
        indent = self.indent
        spans = rule.field_spans
        fields: list[tuple[Span, str]] = []
        if rule.condition is not None:
            fields.append((spans.get("condition", Span()), f"when {format_condition(rule.condition)}"))
        if rule.label is not None:
            fields.append((spans.get("label", Span()), f"then {rule.label.value}"))
        if rule.rationale is not None:
            fields.append((spans.get("rationale", Span()), f"because {quote(rule.rationale, indent)}"))
        if rule.priority is not None:
            fields.append((spans.get("priority", Span()), f"priority {rule.priority}"))
        if rule.overrides:
            fields.append((spans.get("overrides", Span()), f"overrides {names(rule.overrides)}"))
        if rule.examples:
            fields.append((spans.get("examples", Span()), "examples " + ", ".join(quote(e) for e in rule.examples)))
        if rule.support is not None:
            fields.append((spans.get("support", Span()), f"support {rule.support}"))
        if rule.confidence is not None:
            fields.append((spans.get("confidence", Span()), f"confidence {format_number(rule.confidence)}"))
        if rule.teacher is not None:
            fields.append((spans.get("teacher", Span()), f"teacher {quote(rule.teacher, indent)}"))
        if rule.tags:
            fields.append((spans.get("tags", Span()), f"tags {names(rule.tags)}"))
        for allowance in rule.allows:
            fields.append((allowance.span, _allow(allowance, indent)))
        for span, text in fields:
            self.emit(text, span)
        self.close(rule.span)

    def _print_case(self, case: ast.Case) -> None:
        title = f" {quote(case.title)}" if case.title is not None else ""
        self.open(f"case {case.name.value}{title}", case.span)
        if case.given:
            self.emit("given " + ", ".join(_assignment(a) for a in case.given), case.given[0].span)
        if case.expect is not None:
            by = f" by {case.by.value}" if case.by is not None else ""
            self.emit(f"expect {case.expect.value}{by}", case.expect.span)
        self.close(case.span)


def _allow(allowance: ast.Allowance, indent: str) -> str:
    return f"allow {allowance.kind.value} {quote(allowance.reason, indent)}"


def _assignment(assignment: ast.Assignment) -> str:
    if assignment.value is True:
        return assignment.feature.value
    if assignment.value is False:
        return f"not {assignment.feature.value}"
    assert isinstance(assignment.value, ast.Name)
    return f"{assignment.feature.value} = {assignment.value.value}"


def format_ruleset(ruleset: ast.Ruleset) -> str:
    """Return the canonical text of a ruleset built in code rather than parsed, so it has no comments."""
    return _Printer([], set()).print_ruleset(ruleset)
