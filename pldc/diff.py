"""Semantic diff of two rulesets, by rule id and declaration name.

The diff compares parsed syntax trees, so layout and comments never show up (spans are left out
of node equality). Rules are matched by id: renaming a rule reports one rule removed and one
added. Values that mean the same are equal: a missing ``priority`` equals ``priority 0``, a
missing ``hit`` equals ``hit first``, and ``overrides`` compare as sets. Order changes compare the
compiled order (:func:`pldc.order.order_rules`) of the rules present in both files.

The diff only needs files that parse: undefined names and type errors are allowed, and a cycle of
``overrides`` only leaves the order unreported, with a note saying why.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from pldc import ast
from pldc.cases import holds
from pldc.format import format_condition, format_number, format_source
from pldc.order import order_rules
from pldc.parse import ParseResult
from pldc.resolve import walk_condition

# A field value in a change: text, a number, a list of names or strings, or absent.
Value = str | int | float | tuple[str, ...] | None

_Declaration = TypeVar("_Declaration", ast.Input, ast.Label, ast.Feature)

# Conditions over more feature-value combinations than this are not checked for equivalence.
MAX_EQUIVALENCE_ROWS = 4096


# ---- changes --------------------------------------------------------------


@dataclass(frozen=True)
class RuleAdded:
    """A rule id present only in the new file, with its 1-based ``position`` in the compiled order."""

    kind: ClassVar[str] = "rule_added"
    rule_id: str
    title: str
    condition: str | None
    label: str | None
    position: int | None


@dataclass(frozen=True)
class RuleRemoved:
    """A rule id present only in the old file, with its ``position`` in the old compiled order."""

    kind: ClassVar[str] = "rule_removed"
    rule_id: str
    title: str
    condition: str | None
    label: str | None
    position: int | None


@dataclass(frozen=True)
class RuleReworded:
    """A changed ``title`` or ``because`` text."""

    kind: ClassVar[str] = "rule_reworded"
    rule_id: str
    field: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class ConditionChanged:
    """A ``when`` whose tree changed, printed by :func:`pldc.format.format_condition`.

    ``equivalent`` is True when both conditions hold for exactly the same feature values, False
    when they differ on some values, and None when the check was skipped (too many features, or
    a side without a condition).
    """

    kind: ClassVar[str] = "condition_changed"
    rule_id: str
    old: str | None
    new: str | None
    equivalent: bool | None


@dataclass(frozen=True)
class LabelChanged:
    """A changed ``then`` label."""

    kind: ClassVar[str] = "label_changed"
    rule_id: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class PriorityChanged:
    """A changed priority, where an omitted ``priority`` counts as 0."""

    kind: ClassVar[str] = "priority_changed"
    rule_id: str
    old: int
    new: int


@dataclass(frozen=True)
class OverridesChanged:
    """A changed set of overridden rules."""

    kind: ClassVar[str] = "overrides_changed"
    rule_id: str
    old: tuple[str, ...]
    new: tuple[str, ...]


@dataclass(frozen=True)
class OrderChanged:
    """A rule that moved relative to other rules present in both files.

    Positions are 1-based places in each file's compiled order. ``now_before`` lists the rules
    this rule used to follow and now precedes, ``now_after`` the rules it used to precede and now
    follows.
    """

    kind: ClassVar[str] = "order_changed"
    rule_id: str
    old_position: int
    new_position: int
    now_before: tuple[str, ...]
    now_after: tuple[str, ...]


@dataclass(frozen=True)
class ProvenanceChanged:
    """A changed ``examples``, ``support``, ``confidence`` or ``teacher``."""

    kind: ClassVar[str] = "provenance_changed"
    rule_id: str
    field: str
    old: Value
    new: Value


@dataclass(frozen=True)
class TagsChanged:
    """Changed ``tags``, or a rule that moved to another ``group``."""

    kind: ClassVar[str] = "tags_changed"
    rule_id: str
    field: str
    old: Value
    new: Value


@dataclass(frozen=True)
class DefinitionAdded:
    """A task, input, label, feature, group, case or meta entry present only in the new file."""

    kind: ClassVar[str] = "definition_added"
    definition: str
    name: str
    text: str


@dataclass(frozen=True)
class DefinitionRemoved:
    """A task, input, label, feature, group, case or meta entry present only in the old file."""

    kind: ClassVar[str] = "definition_removed"
    definition: str
    name: str
    text: str


@dataclass(frozen=True)
class DefinitionChanged:
    """One changed field of a definition, with both values printed as ``.pld`` text."""

    kind: ClassVar[str] = "definition_changed"
    definition: str
    name: str
    field: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class DeclarationOrderChanged:
    """Inputs, labels or features present in both files, listed in another order.

    The student reads these in file order, so their order is part of the prompt.
    """

    kind: ClassVar[str] = "declaration_order_changed"
    definition: str
    old: tuple[str, ...]
    new: tuple[str, ...]


RuleChange = (
    RuleAdded
    | RuleRemoved
    | RuleReworded
    | ConditionChanged
    | LabelChanged
    | PriorityChanged
    | OverridesChanged
    | OrderChanged
    | ProvenanceChanged
    | TagsChanged
)
Change = RuleChange | DefinitionAdded | DefinitionRemoved | DefinitionChanged | DeclarationOrderChanged


@dataclass(frozen=True)
class RulesetDiff:
    """The changes from an old ruleset to a new one, and notes on what could not be compared."""

    changes: tuple[Change, ...]
    notes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.changes)

    def to_json(self) -> dict[str, object]:
        return {
            "changes": [{"kind": change.kind, **dataclasses.asdict(change)} for change in self.changes],
            "notes": list(self.notes),
        }


# ---- comparison -----------------------------------------------------------


def diff_rulesets(old: ast.Ruleset, new: ast.Ruleset) -> RulesetDiff:
    """Compare two parsed rulesets and return their semantic changes.

    Changes come in a fixed order: the file header, the task, inputs, labels, features, groups,
    rules (in the new file's order, then the removed ones in the old file's order) and cases.
    Where a file declares a name twice, the last declaration counts, as in the compiled order.
    """
    changes: list[Change] = []
    changes.extend(_diff_header(old, new))
    changes.extend(_diff_task(old.task, new.task))
    changes.extend(_diff_features(old.features, new.features))
    changes.extend(_diff_groups(old.groups, new.groups))
    rule_changes, notes = _diff_rules(old, new)
    changes.extend(rule_changes)
    changes.extend(_diff_cases(old.cases, new.cases))
    return RulesetDiff(tuple(changes), tuple(notes))


def _diff_header(old: ast.Ruleset, new: ast.Ruleset) -> Iterator[Change]:
    if _version_number(old.version) != _version_number(new.version):
        yield DefinitionChanged("file", "pld", "version", old.version, new.version)
    old_meta = {m.key.value: m for m in old.meta}
    new_meta = {m.key.value: m for m in new.meta}
    for key, meta in new_meta.items():
        if key not in old_meta:
            yield DefinitionAdded("meta", key, _meta_text(meta))
        elif old_meta[key].value != meta.value:
            yield DefinitionChanged("meta", key, "value", _one_line(old_meta[key].value), _one_line(meta.value))
    for key, meta in old_meta.items():
        if key not in new_meta:
            yield DefinitionRemoved("meta", key, _meta_text(meta))


def _version_number(version: str) -> str:
    """Return ``1.0`` for both spellings of version 1, ``1`` and ``1.0``."""
    return version if "." in version else version + ".0"


def _diff_task(old: ast.Task | None, new: ast.Task | None) -> Iterator[Change]:
    if old is None and new is None:
        return
    if old is None or new is None:
        task = new or old
        assert task is not None
        entry = (DefinitionAdded if old is None else DefinitionRemoved)("task", task.name.value, _task_text(task))
        yield entry
        # An added or removed task brings its inputs and labels with it.
        yield from _diff_named(
            "input", old.inputs if old else (), new.inputs if new else (), _input_text, _input_fields, _INPUT_FIELDS
        )
        yield from _diff_named(
            "label", old.labels if old else (), new.labels if new else (), _label_text, _label_fields, _LABEL_FIELDS
        )
        return

    name = new.name.value
    if old.name.value != new.name.value:
        yield DefinitionChanged("task", name, "name", old.name.value, new.name.value)
    if old.description != new.description:
        yield DefinitionChanged(
            "task", name, "description", _optional_text(old.description), _optional_text(new.description)
        )
    old_default = old.default.value if old.default else None
    new_default = new.default.value if new.default else None
    if old_default != new_default:
        yield DefinitionChanged("task", name, "default", old_default, new_default)
    if old.hit_policy != new.hit_policy:
        yield DefinitionChanged("task", name, "hit", old.hit_policy, new.hit_policy)
    for field, old_text, new_text in _other_fields(old, new, _TASK_FIELDS):
        yield DefinitionChanged("task", name, field, old_text, new_text)

    yield from _diff_named("input", old.inputs, new.inputs, _input_text, _input_fields, _INPUT_FIELDS)
    yield from _diff_named("label", old.labels, new.labels, _label_text, _label_fields, _LABEL_FIELDS)


def _diff_features(old: Sequence[ast.Feature], new: Sequence[ast.Feature]) -> Iterator[Change]:
    yield from _diff_named("feature", old, new, _feature_text, _feature_fields, _FEATURE_FIELDS)


def _diff_groups(old: Sequence[ast.Group], new: Sequence[ast.Group]) -> Iterator[Change]:
    old_by_name = {g.name.value: g for g in old}
    new_by_name = {g.name.value: g for g in new}
    for name, group in new_by_name.items():
        if name not in old_by_name:
            yield DefinitionAdded("group", name, _group_text(group))
            continue
        before = old_by_name[name]
        if before.title != group.title:
            yield DefinitionChanged("group", name, "title", _optional_text(before.title), _optional_text(group.title))
        for field, old_text, new_text in _other_fields(before, group, _GROUP_FIELDS):
            yield DefinitionChanged("group", name, field, old_text, new_text)
    for name, group in old_by_name.items():
        if name not in new_by_name:
            yield DefinitionRemoved("group", name, _group_text(group))


def _diff_cases(old: Sequence[ast.Case], new: Sequence[ast.Case]) -> Iterator[Change]:
    old_by_name = {c.name.value: c for c in old}
    new_by_name = {c.name.value: c for c in new}
    for name, case in new_by_name.items():
        if name not in old_by_name:
            yield DefinitionAdded("case", name, _case_text(case))
            continue
        before = old_by_name[name]
        if before.title != case.title:
            yield DefinitionChanged("case", name, "title", _optional_text(before.title), _optional_text(case.title))
        if _given_text(before) != _given_text(case):
            yield DefinitionChanged("case", name, "given", _given_text(before), _given_text(case))
        if _expect_text(before) != _expect_text(case):
            yield DefinitionChanged("case", name, "expect", _expect_text(before), _expect_text(case))
        for field, old_text, new_text in _other_fields(before, case, _CASE_FIELDS):
            yield DefinitionChanged("case", name, field, old_text, new_text)
    for name, case in old_by_name.items():
        if name not in new_by_name:
            yield DefinitionRemoved("case", name, _case_text(case))


def _diff_named(
    definition: str,
    old: Sequence[_Declaration],
    new: Sequence[_Declaration],
    text: Callable[[_Declaration], str],
    fields: Callable[[_Declaration], dict[str, str | None]],
    compared: frozenset[str],
) -> Iterator[Change]:
    """Compare declarations matched by name: added, removed, changed fields, then reordering."""
    old_by_name = {_name_of(item): item for item in old}
    new_by_name = {_name_of(item): item for item in new}
    for name, item in new_by_name.items():
        if name not in old_by_name:
            yield DefinitionAdded(definition, name, text(item))
            continue
        old_fields = fields(old_by_name[name])
        for field, value in fields(item).items():
            if old_fields[field] != value:
                yield DefinitionChanged(definition, name, field, old_fields[field], value)
        for field, old_text, new_text in _other_fields(old_by_name[name], item, compared):
            yield DefinitionChanged(definition, name, field, old_text, new_text)
    for name, item in old_by_name.items():
        if name not in new_by_name:
            yield DefinitionRemoved(definition, name, text(item))
    old_order = tuple(name for name in old_by_name if name in new_by_name)
    new_order = tuple(name for name in new_by_name if name in old_by_name)
    if old_order != new_order:
        yield DeclarationOrderChanged(definition, old_order, new_order)


def _diff_rules(old: ast.Ruleset, new: ast.Ruleset) -> tuple[list[RuleChange | DefinitionChanged], list[str]]:
    old_ordering = order_rules(old)
    new_ordering = order_rules(new)
    old_positions = {rule.id.value: n for n, rule in enumerate(old_ordering.rules, 1)}
    new_positions = {rule.id.value: n for n, rule in enumerate(new_ordering.rules, 1)}
    old_rules = {rule.id.value: rule for rule in old.rules}
    new_rules = {rule.id.value: rule for rule in new.rules}

    notes: list[str] = []
    order_known = True
    for side, ordering in (("old", old_ordering), ("new", new_ordering)):
        if ordering.errors:
            order_known = False
            notes.append(f"order not compared: in the {side} file, {ordering.errors[0].message}")
    moves: dict[str, OrderChanged] = {}
    if order_known:
        old_order = [rule.id.value for rule in old_ordering.rules]
        new_order = [rule.id.value for rule in new_ordering.rules]
        moves = {move.rule_id: move for move in _order_changes(old_order, new_order)}

    changes: list[RuleChange | DefinitionChanged] = []
    for rule_id, rule in new_rules.items():
        if rule_id not in old_rules:
            condition = format_condition(rule.condition) if rule.condition else None
            label = rule.label.value if rule.label else None
            position = new_positions.get(rule_id) if order_known else None
            changes.append(RuleAdded(rule_id, rule.title, condition, label, position))
            continue
        changes.extend(_diff_rule(old_rules[rule_id], rule))
        if rule_id in moves:
            changes.append(moves[rule_id])
    for rule_id, rule in old_rules.items():
        if rule_id not in new_rules:
            condition = format_condition(rule.condition) if rule.condition else None
            label = rule.label.value if rule.label else None
            position = old_positions.get(rule_id) if order_known else None
            changes.append(RuleRemoved(rule_id, rule.title, condition, label, position))
    return changes, notes


def _diff_rule(old: ast.Rule, new: ast.Rule) -> Iterator[RuleChange | DefinitionChanged]:
    rule_id = new.id.value
    if old.title != new.title:
        yield RuleReworded(rule_id, "title", old.title, new.title)
    if old.condition != new.condition:
        yield ConditionChanged(
            rule_id,
            format_condition(old.condition) if old.condition else None,
            format_condition(new.condition) if new.condition else None,
            _equivalent(old.condition, new.condition),
        )
    old_label = old.label.value if old.label else None
    new_label = new.label.value if new.label else None
    if old_label != new_label:
        yield LabelChanged(rule_id, old_label, new_label)
    if old.rationale != new.rationale:
        yield RuleReworded(rule_id, "rationale", old.rationale, new.rationale)

    if old.effective_priority != new.effective_priority:
        yield PriorityChanged(rule_id, old.effective_priority, new.effective_priority)
    old_overrides = _values(old.overrides)
    new_overrides = _values(new.overrides)
    if set(old_overrides) != set(new_overrides):
        yield OverridesChanged(rule_id, old_overrides, new_overrides)

    provenance: tuple[tuple[str, Value, Value], ...] = (
        ("examples", old.examples, new.examples),
        ("support", old.support, new.support),
        ("confidence", old.confidence, new.confidence),
        ("teacher", old.teacher, new.teacher),
    )
    for field, old_value, new_value in provenance:
        if old_value != new_value:
            yield ProvenanceChanged(rule_id, field, old_value, new_value)

    if old.tags != new.tags:
        yield TagsChanged(rule_id, "tags", _values(old.tags), _values(new.tags))
    if old.group != new.group:
        yield TagsChanged(rule_id, "group", old.group, new.group)

    for field, old_text, new_text in _other_fields(old, new, _RULE_FIELDS):
        yield DefinitionChanged("rule", rule_id, field, old_text, new_text)


def _order_changes(old_order: Sequence[str], new_order: Sequence[str]) -> Iterator[OrderChanged]:
    """Report the fewest rules whose moves explain the new relative order of the common rules.

    The rules of a longest common subsequence of both orders count as staying in place, and
    every other common rule counts as moved.
    """
    common = set(old_order) & set(new_order)
    old_common = [rule_id for rule_id in old_order if rule_id in common]
    new_common = [rule_id for rule_id in new_order if rule_id in common]
    old_rank = {rule_id: rank for rank, rule_id in enumerate(old_common)}
    new_rank = {rule_id: rank for rank, rule_id in enumerate(new_common)}
    kept = _longest_increasing_subsequence([old_rank[rule_id] for rule_id in new_common])
    for rule_id in new_common:
        if old_rank[rule_id] in kept:
            continue
        now_before = tuple(
            other for other in new_common if old_rank[other] < old_rank[rule_id] and new_rank[other] > new_rank[rule_id]
        )
        now_after = tuple(
            other for other in new_common if old_rank[other] > old_rank[rule_id] and new_rank[other] < new_rank[rule_id]
        )
        yield OrderChanged(rule_id, old_order.index(rule_id) + 1, new_order.index(rule_id) + 1, now_before, now_after)


def _longest_increasing_subsequence(sequence: Sequence[int]) -> set[int]:
    """Return the values of one longest strictly increasing subsequence (patience sorting)."""
    tails: list[int] = []  # tails[k]: index in sequence of the smallest tail of a run of length k + 1
    tail_values: list[int] = []  # sequence[tails[k]], kept sorted for the binary search
    previous: list[int | None] = [None] * len(sequence)
    for index, value in enumerate(sequence):
        k = bisect_left(tail_values, value)
        previous[index] = tails[k - 1] if k else None
        if k == len(tails):
            tails.append(index)
            tail_values.append(value)
        else:
            tails[k] = index
            tail_values[k] = value
    members: set[int] = set()
    cursor = tails[-1] if tails else None
    while cursor is not None:
        members.add(sequence[cursor])
        cursor = previous[cursor]
    return members


def _equivalent(old: ast.Condition | None, new: ast.Condition | None) -> bool | None:
    """Compare two conditions on every combination of the feature values they test.

    A feature's domain is true, false, every value either condition compares it with, and no
    value. Those cover every way :func:`pldc.cases.holds` can evaluate a leaf, so the truth
    tables decide equivalence for all inputs, well-typed or not.
    """
    if old is None or new is None:
        return None
    domains: dict[str, list[bool | str | None]] = {}
    for leaf in itertools.chain(walk_condition(old), walk_condition(new)):
        domain = domains.setdefault(leaf.feature.value, [True, False, None])
        if isinstance(leaf, ast.IsValue) and leaf.value.value not in domain:
            domain.append(leaf.value.value)
    rows = 1
    for domain in domains.values():
        rows *= len(domain)
    if rows > MAX_EQUIVALENCE_ROWS:
        return None
    features = list(domains)
    for combination in itertools.product(*(domains[f] for f in features)):
        values = {f: v for f, v in zip(features, combination, strict=True) if v is not None}
        if holds(old, values) != holds(new, values):
            return False
    return True


# Fields each comparison above covers; _other_fields reports any other field that differs.
_TASK_FIELDS = frozenset({"name", "description", "inputs", "labels", "default", "hit"})
_INPUT_FIELDS = frozenset({"name", "description"})
_LABEL_FIELDS = frozenset({"name", "description", "spellings"})
_FEATURE_FIELDS = frozenset({"name", "values", "definition"})
_GROUP_FIELDS = frozenset({"name", "title", "rules"})
_CASE_FIELDS = frozenset({"name", "title", "given", "expect", "by"})
_RULE_FIELDS = frozenset(
    {
        "id",
        "title",
        "condition",
        "label",
        "rationale",
        "priority",
        "overrides",
        "examples",
        "support",
        "confidence",
        "teacher",
        "tags",
        "group",
    }
)


def _other_fields(
    old: ast.Node, new: ast.Node, compared: frozenset[str]
) -> Iterator[tuple[str, str | None, str | None]]:
    """Yield the fields outside ``compared`` that differ, so a field new to the syntax tree is never missed.

    Fields left out of node equality (spans) are skipped.
    """
    for name, info in type(new).model_fields.items():
        if name in compared or info.exclude:
            continue
        old_value, new_value = getattr(old, name), getattr(new, name)
        if old_value != new_value:
            yield name, _generic_text(old_value), _generic_text(new_value)


def _generic_text(value: object) -> str | None:
    """Print a field value of any type: names bare, strings quoted, nodes as their fields in order."""
    if value is None or value == ():
        return None
    if isinstance(value, ast.Name):
        return value.value
    if isinstance(value, str):
        return _one_line(value)
    if isinstance(value, tuple):
        return ", ".join(_generic_text(item) or "(none)" for item in value)
    if isinstance(value, ast.Node):
        parts = (
            _generic_text(getattr(value, name)) for name, info in type(value).model_fields.items() if not info.exclude
        )
        return " ".join(part for part in parts if part is not None)
    return str(value)


# ---- field values and one-line texts -------------------------------------


def _name_of(item: ast.Input | ast.Label | ast.Feature) -> str:
    return item.name.value


def _values(items: Sequence[ast.Name]) -> tuple[str, ...]:
    return tuple(item.value for item in items)


def _one_line(value: str) -> str:
    """Quote a string on one line, with the escapes of a ``"..."`` string in a ``.pld`` file."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return f'"{escaped}"'


def _optional_text(value: str | None) -> str | None:
    return _one_line(value) if value is not None else None


def _meta_text(meta: ast.Meta) -> str:
    return f"meta {meta.key.value} {_one_line(meta.value)}"


def _task_text(task: ast.Task) -> str:
    fields = [f"description {_one_line(task.description)}"] if task.description is not None else []
    if task.default is not None:
        fields.append(f"default {task.default.value}")
    fields.append(f"hit {task.hit_policy}")
    return f"task {task.name.value}: {', '.join(fields)}"


def _input_text(item: ast.Input) -> str:
    return f"input {item.name.value} {_one_line(item.description)}"


def _input_fields(item: ast.Input) -> dict[str, str | None]:
    return {"description": _one_line(item.description)}


def _label_text(label: ast.Label) -> str:
    spelled = f" spelled {_spellings(label)}" if label.spellings else ""
    return f"label {label.name.value} {_one_line(label.description)}{spelled}"


def _label_fields(label: ast.Label) -> dict[str, str | None]:
    return {"description": _one_line(label.description), "spelled": _spellings(label) or None}


def _spellings(label: ast.Label) -> str:
    return ", ".join(_one_line(s) for s in label.spellings)


def _feature_type(feature: ast.Feature) -> str:
    return "bool" if feature.values is None else f"one of [{', '.join(feature.value_names)}]"


def _feature_text(feature: ast.Feature) -> str:
    return f"feature {feature.name.value}: {_feature_type(feature)} {_one_line(feature.definition)}"


def _feature_fields(feature: ast.Feature) -> dict[str, str | None]:
    return {"type": _feature_type(feature), "definition": _one_line(feature.definition)}


def _group_text(group: ast.Group) -> str:
    title = f" {_one_line(group.title)}" if group.title is not None else ""
    return f"group {group.name.value}{title}"


def _given_text(case: ast.Case) -> str | None:
    if not case.given:
        return None
    parts = []
    for assignment in case.given:
        if assignment.value is True:
            parts.append(assignment.feature.value)
        elif assignment.value is False:
            parts.append(f"not {assignment.feature.value}")
        else:
            assert isinstance(assignment.value, ast.Name)
            parts.append(f"{assignment.feature.value} = {assignment.value.value}")
    return ", ".join(parts)


def _expect_text(case: ast.Case) -> str | None:
    if case.expect is None:
        return None
    return case.expect.value + (f" by {case.by.value}" if case.by else "")


def _case_text(case: ast.Case) -> str:
    title = f" {_one_line(case.title)}" if case.title is not None else ""
    given = _given_text(case)
    expect = _expect_text(case)
    fields = []
    if given:
        fields.append(f"given {given}")
    if expect:
        fields.append(f"expect {expect}")
    if not fields:
        return f"case {case.name.value}{title}"
    return f"case {case.name.value}{title}: {', '.join(fields)}"


# ---- rendering ------------------------------------------------------------

_RULE_FIELD_KEYWORDS = {"title": "title", "rationale": "because"}


def render_text(diff: RulesetDiff, old_name: str, new_name: str) -> str:
    """Render a diff for people: one block per changed rule or definition, with ``-``/``+`` lines."""
    lines = [f"--- {old_name}", f"+++ {new_name}"]
    if not diff.changes:
        lines.append("no semantic changes (layout and comments are not compared)")
    header: str | None = None
    for change in diff.changes:
        block_header = _block_header(change)
        if block_header is not None and block_header != header:
            lines.append(block_header)
        header = block_header
        lines.extend(_change_lines(change))
    lines.extend(f"note: {note}" for note in diff.notes)
    return "\n".join(lines) + "\n"


def render_json(diff: RulesetDiff, old_name: str, new_name: str) -> str:
    return json.dumps({"old": old_name, "new": new_name, **diff.to_json()}, indent=2, ensure_ascii=False) + "\n"


def _block_header(change: Change) -> str | None:
    """Return the ``~`` line that heads the changes of one rule or definition, or None for a one-line change."""
    if isinstance(change, RuleAdded | RuleRemoved | DefinitionAdded | DefinitionRemoved):
        return None
    if isinstance(change, DeclarationOrderChanged):
        return f"~ {change.definition} order"
    if isinstance(change, DefinitionChanged):
        return f"~ {change.definition} {change.name}"
    return f"~ rule {change.rule_id}"


def _change_lines(change: Change) -> list[str]:
    # Additions, removals and reordering of whole definitions.
    if isinstance(change, RuleAdded | RuleRemoved):
        sign, where = ("+", "order") if isinstance(change, RuleAdded) else ("-", "was order")
        position = f" ({where} {change.position})" if change.position is not None else ""
        lines = [f"{sign} rule {change.rule_id} {_one_line(change.title)}{position}"]
        lines.append(f"    when {change.condition}" if change.condition is not None else "    (no when)")
        lines.append(f"    then {change.label}" if change.label is not None else "    (no then)")
        return lines
    if isinstance(change, DefinitionAdded):
        return [f"+ {change.text}"]
    if isinstance(change, DefinitionRemoved):
        return [f"- {change.text}"]
    if isinstance(change, DeclarationOrderChanged):
        return [f"    - {', '.join(change.old)}", f"    + {', '.join(change.new)}"]

    # Changes inside one rule or definition, as `- FIELD OLD` and `+ FIELD NEW` lines.
    if isinstance(change, DefinitionChanged):
        return _pair(change.field, change.old, change.new)
    if isinstance(change, OrderChanged):
        moves = []
        if change.now_before:
            moves.append(f"now before {', '.join(change.now_before)}")
        if change.now_after:
            moves.append(f"now after {', '.join(change.now_after)}")
        return [f"    order {change.old_position} -> {change.new_position} ({'; '.join(moves)})"]
    if isinstance(change, ConditionChanged):
        lines = _pair("when", change.old, change.new)
        if change.equivalent is True:
            lines.append("      (equivalent: both hold for the same feature values)")
        elif change.equivalent is None and change.old is not None and change.new is not None:
            lines.append(f"      (equivalence not checked: over {MAX_EQUIVALENCE_ROWS} combinations of feature values)")
        return lines
    if isinstance(change, RuleReworded):
        keyword = _RULE_FIELD_KEYWORDS[change.field]
        return _pair(keyword, _optional_text(change.old), _optional_text(change.new))
    if isinstance(change, LabelChanged):
        return _pair("then", change.old, change.new)
    if isinstance(change, PriorityChanged):
        return _pair("priority", str(change.old), str(change.new))
    if isinstance(change, OverridesChanged):
        return _pair("overrides", ", ".join(change.old) or None, ", ".join(change.new) or None)
    return _pair(change.field, _value_text(change.field, change.old), _value_text(change.field, change.new))


def _pair(keyword: str, old: str | None, new: str | None) -> list[str]:
    return [
        f"    - {keyword} {old if old is not None else '(none)'}",
        f"    + {keyword} {new if new is not None else '(none)'}",
    ]


def _value_text(field: str, value: Value) -> str | None:
    if value is None or value == ():
        return None
    if isinstance(value, tuple):
        return ", ".join(_one_line(v) if field == "examples" else v for v in value)
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, str) and field == "teacher":
        return _one_line(value)
    return str(value)


# ---- canonical text for line-based diffs ---------------------------------


def canonical_text(parsed: ParseResult) -> str:
    """Print a file in the canonical layout without comments, followed by its compiled order.

    Line-based tools such as ``git diff`` then show only changes of meaning. Values equal to the
    defaults are left out (``hit first``, ``priority 0``) and the version is printed as ``1.0``,
    so the spellings that :func:`diff_rulesets` treats as equal print the same. The compiled
    order is listed one rule id per line, so moving one rule changes two lines of the listing.
    """
    text = format_source(ParseResult(_without_defaults(parsed.ruleset), (), ""))
    ordering = order_rules(parsed.ruleset)
    if ordering.errors:
        return text + f"\n# compiled order: unknown, {ordering.errors[0].message}\n"
    listing = "".join(f"#   {rule.id.value}\n" for rule in ordering.rules)
    return text + "\n# compiled order (the first applicable rule decides):\n" + listing


def _without_defaults(ruleset: ast.Ruleset) -> ast.Ruleset:
    def rule_without_defaults(rule: ast.Rule) -> ast.Rule:
        return rule.model_copy(update={"priority": None}) if rule.priority == 0 else rule

    items: list[ast.Item] = []
    for item in ruleset.items:
        if isinstance(item, ast.Task) and item.hit is not None and item.hit.value == "first":
            items.append(item.model_copy(update={"hit": None}))
        elif isinstance(item, ast.Rule):
            items.append(rule_without_defaults(item))
        elif isinstance(item, ast.Group):
            items.append(item.model_copy(update={"rules": tuple(rule_without_defaults(r) for r in item.rules)}))
        else:
            items.append(item)
    version = _version_number(ruleset.version)
    return ruleset.model_copy(update={"items": tuple(items), "version": version})
