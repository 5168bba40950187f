"""Resolve names and check types in a parsed ruleset.

Every problem is collected, so one run reports all of them. Codes are documented in
``docs/language.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

from pldc import ast
from pldc.errors import Diagnostic, Span
from pldc.parse import KEYWORDS

_T = TypeVar("_T")


def resolve(ruleset: ast.Ruleset) -> list[Diagnostic]:
    """Return the name and type errors of ``ruleset``, in source order."""
    return _Resolver(ruleset).run()


def walk_condition(condition: ast.Condition) -> Iterator[ast.Predicate | ast.IsValue]:
    """Yield the leaves of a condition, left to right."""
    if isinstance(condition, (ast.Predicate, ast.IsValue)):
        yield condition
    elif isinstance(condition, ast.Not):
        yield from walk_condition(condition.operand)
    else:
        for operand in condition.operands:
            yield from walk_condition(operand)


class _Resolver:
    def __init__(self, ruleset: ast.Ruleset) -> None:
        self.ruleset = ruleset
        self.errors: list[Diagnostic] = []
        self.features: dict[str, ast.Feature] = {}
        self.labels: dict[str, ast.Label] = {}
        self.rules: dict[str, ast.Rule] = {}

    def run(self) -> list[Diagnostic]:
        self._check_task()
        self.features = self._unique("feature", ((f.name, f) for f in self.ruleset.features))
        for feature in self.ruleset.features:
            self._unique(f"value of feature {feature.name.value}", ((v, v) for v in feature.values or ()))
        self.rules = self._unique("rule", ((r.id, r) for r in self.ruleset.rules))
        self._unique("group", ((g.name, g) for g in self.ruleset.groups))
        self._unique("case", ((c.name, c) for c in self.ruleset.cases))
        for rule in self.ruleset.rules:
            self._check_rule(rule)
        for case in self.ruleset.cases:
            self._check_case(case)
        self.errors.sort(key=lambda d: (d.span.line, d.span.column))
        return self.errors

    def _error(self, code: str, message: str, span: Span, hint: str | None = None) -> None:
        self.errors.append(Diagnostic(code, message, span, hint=hint))

    def _reserved(self, name: ast.Name) -> None:
        message = f"{name.value!r} is a reserved word and cannot be used as a name"
        self._error("E115", message, name.span, hint="rename it")

    def _unique(self, kind: str, entries: Iterable[tuple[ast.Name, _T]]) -> dict[str, _T]:
        seen: dict[str, _T] = {}
        first: dict[str, ast.Name] = {}
        for name, node in entries:
            if name.value in KEYWORDS:
                self._reserved(name)
            if name.value in seen:
                line = first[name.value].span.line
                self._error("E100", f"duplicate {kind} {name.value!r}", name.span, hint=f"first defined on line {line}")
                continue
            seen[name.value] = node
            first[name.value] = name
        return seen

    # -- task -------------------------------------------------------------

    def _check_task(self) -> None:
        tasks = [i for i in self.ruleset.items if isinstance(i, ast.Task)]
        if not tasks:
            span = Span(path=self.ruleset.path, line=1, column=1, end_line=1, end_column=4)
            self._error("E107", "missing task block", span, hint="declare `task NAME { ... }` with inputs and labels")
            return
        for extra in tasks[1:]:
            self._error("E107", "only one task block is allowed per file", extra.name.span)
        task = tasks[0]
        if task.name.value in KEYWORDS:
            self._reserved(task.name)
        self._check_allows(task.allows)
        self.labels = self._unique("label", ((label.name, label) for label in task.labels))
        self._unique("input", ((i.name, i) for i in task.inputs))
        self._check_spellings(task)
        if not task.inputs:
            self._error(
                "E112", f"task {task.name.value!r} declares no input", task.name.span, hint='add `input NAME "..."`'
            )
        if len(task.labels) < 2:
            self._error("E112", f"task {task.name.value!r} needs at least two labels", task.name.span)
        if task.default is None:
            self._error(
                "E106", f"task {task.name.value!r} has no default label", task.name.span, hint="add `default LABEL`"
            )
        elif task.default.value not in self.labels:
            self._error(
                "E106",
                f"default {task.default.value!r} is not a label of task {task.name.value!r}",
                task.default.span,
                hint=_choices(self.labels),
            )
        if task.hit is not None and task.hit.value not in ast.HIT_POLICIES:
            self._error(
                "E109",
                f"unknown hit policy {task.hit.value!r}",
                task.hit.span,
                hint="use one of: " + ", ".join(ast.HIT_POLICIES),
            )

    def _check_spellings(self, task: ast.Task) -> None:
        owner: dict[str, str] = {}
        for label in task.labels:
            for spelling in label.all_spellings:
                key = spelling.strip().casefold()
                if key in owner and owner[key] != label.name.value:
                    self._error(
                        "E100",
                        f"spelling {spelling!r} of label {label.name.value!r} is already a spelling of {owner[key]!r}",
                        label.span,
                    )
                owner.setdefault(key, label.name.value)

    # -- rules ------------------------------------------------------------

    def _check_rule(self, rule: ast.Rule) -> None:
        if rule.condition is None:
            self._error("E108", f"rule {rule.id.value} has no 'when' condition", rule.id.span)
        else:
            self._check_condition(rule.condition)
        if rule.label is None:
            self._error("E108", f"rule {rule.id.value} has no 'then' label", rule.id.span)
        else:
            self._check_label(rule.label)
        self._check_allows(rule.allows)
        for target in rule.overrides:
            if target.value == rule.id.value:
                self._error("E110", f"rule {rule.id.value} overrides itself", target.span)
            elif target.value not in self.rules:
                self._error("E103", f"undefined rule {target.value!r}", target.span, hint=_choices(self.rules))

    def _check_allows(self, allows: tuple[ast.Allowance, ...]) -> None:
        from pldc.analysis.findings import KINDS

        for allowance in allows:
            if allowance.kind.value not in KINDS:
                self._error(
                    "E113",
                    f"unknown finding kind {allowance.kind.value!r} in 'allow'",
                    allowance.kind.span,
                    hint="kinds: " + ", ".join(KINDS),
                )
            if not allowance.reason.strip():
                self._error("E113", "an 'allow' needs a reason", allowance.span, hint='write why: allow KIND "reason"')

    def _check_label(self, label: ast.Name) -> None:
        if self.labels and label.value not in self.labels:
            self._error("E102", f"undefined label {label.value!r}", label.span, hint=_choices(self.labels))

    def _check_condition(self, condition: ast.Condition) -> None:
        for leaf in walk_condition(condition):
            feature = self._feature(leaf.feature)
            if feature is None:
                continue
            if isinstance(leaf, ast.Predicate):
                if not feature.is_bool:
                    self._error(
                        "E105",
                        f"feature {feature.name.value!r} is one-of, not bool",
                        leaf.feature.span,
                        hint=f"test a value: `{feature.name.value} is {feature.value_names[0]}`",
                    )
            elif feature.is_bool:
                self._error(
                    "E105",
                    f"feature {feature.name.value!r} is bool and has no values",
                    leaf.span,
                    hint=f"write `{feature.name.value}` or `not {feature.name.value}`",
                )
            else:
                self._check_value(feature, leaf.value)

    def _feature(self, name: ast.Name) -> ast.Feature | None:
        feature = self.features.get(name.value)
        if feature is None:
            self._error("E101", f"undefined feature {name.value!r}", name.span, hint=_choices(self.features))
        return feature

    def _check_value(self, feature: ast.Feature, value: ast.Name) -> None:
        if value.value not in feature.value_names:
            self._error(
                "E104",
                f"{value.value!r} is not a value of feature {feature.name.value!r}",
                value.span,
                hint="values: " + ", ".join(feature.value_names),
            )

    # -- cases ------------------------------------------------------------

    def _check_case(self, case: ast.Case) -> None:
        seen: set[str] = set()
        for assignment in case.given:
            name = assignment.feature.value
            if name in seen:
                self._error("E100", f"feature {name!r} is given twice in case {case.name.value}", assignment.span)
            seen.add(name)
            feature = self._feature(assignment.feature)
            if feature is None:
                continue
            if isinstance(assignment.value, bool) and not feature.is_bool:
                self._error(
                    "E105",
                    f"feature {name!r} is one-of and needs a value",
                    assignment.span,
                    hint=f"write `{name} = {feature.value_names[0]}`",
                )
            elif isinstance(assignment.value, ast.Name):
                if feature.is_bool:
                    self._error(
                        "E105", f"feature {name!r} is bool", assignment.span, hint=f"write `{name}` or `not {name}`"
                    )
                else:
                    self._check_value(feature, assignment.value)
        if case.expect is None:
            self._error("E111", f"case {case.name.value} has no 'expect'", case.name.span, hint="add `expect LABEL`")
        else:
            self._check_label(case.expect)
        if case.by is not None and case.by.value not in self.rules:
            self._error("E103", f"undefined rule {case.by.value!r}", case.by.span, hint=_choices(self.rules))


def _choices(names: Mapping[str, object]) -> str | None:
    if not names:
        return None
    listed = sorted(names)
    shown = ", ".join(listed[:8]) + (", ..." if len(listed) > 8 else "")
    return f"defined: {shown}"
