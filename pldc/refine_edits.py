"""``pldc distill refine``: the teacher's rule edits, their validation, and how they change a ruleset.

The teacher answers a refinement request with a :class:`Refinement`: an analysis and a short
list of :class:`RuleEdit` s. An edit replaces a rule, adds one or drops one. New rules have
the typed-feature shape of extraction (:class:`~pldc.distill.ExtractedRule`), and their
features are mapped onto the ruleset's ``feature`` declarations by the normalisation of
``pldc distill build`` (:func:`pldc.normalise.normalise`): a declared feature keeps its type
and definition and gains any new ``one_of`` values, an undeclared one is declared, and a use
with another type becomes a feature named ``NAME_TYPE``.

:func:`apply_edit` changes the syntax tree, prints it with the canonical formatter (comments
kept) and checks the result like ``pldc check``: parse, resolve, order, the in-file cases, and
the analysis findings at error level. A replaced rule keeps its id, its place, its group, its
priority, its overrides and its tags; its examples, support and confidence described the old
condition and are removed. A dropped rule is removed with :func:`pldc.prune.prune`, which also
removes its id from other rules' ``overrides`` and the cases that can no longer pass.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pldc import ast
from pldc.distill import ExtractedRule, ExtractRecord, extraction_schema
from pldc.errors import InputError, PldError
from pldc.format import format_source
from pldc.normalise import condition_ast, literals_from_json, normalise
from pldc.parse import ParseResult
from pldc.pipeline import CheckedRuleset, first_error
from pldc.teacher import RejectedAnswer

MAX_EDITS = 5
EDIT_ACTIONS = ("replace", "add", "drop")


class RuleEdit(BaseModel):
    """One proposed change to the rules, with the teacher's reason."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["replace", "add", "drop"]
    rule_id: str | None = None
    before: str | None = None
    rule: ExtractedRule | None = None
    reason: str = Field(min_length=1)

    @model_validator(mode="after")
    def _fields_fit_action(self) -> RuleEdit:
        if self.action != "add" and not self.rule_id:
            raise ValueError(f"a {self.action} edit needs rule_id")
        if self.action == "add" and self.rule_id:
            raise ValueError("an add edit takes no rule_id; use before to place the new rule")
        if self.action != "add" and self.before:
            raise ValueError(f"a {self.action} edit takes no before; only add places a rule")
        if self.action == "drop" and self.rule is not None:
            raise ValueError("a drop edit takes no rule")
        if self.action != "drop" and self.rule is None:
            raise ValueError(f"a {self.action} edit needs rule")
        return self

    def describe(self) -> str:
        """Name the edit in a few words, for logs and the summary."""
        if self.action == "drop":
            return f"drop {self.rule_id}"
        assert self.rule is not None
        if self.action == "replace":
            return f"replace {self.rule_id} with {self.rule.title!r} ({self.rule.label})"
        place = f" before {self.before}" if self.before else ""
        return f"add {self.rule.title!r} ({self.rule.label}){place}"


class Refinement(BaseModel):
    """The teacher's answer to one refinement request."""

    model_config = ConfigDict(extra="forbid")

    analysis: str = Field(min_length=1)
    edits: list[RuleEdit] = Field(max_length=MAX_EDITS)


def refinement_schema(task: ast.Task) -> dict[str, Any]:
    """Build the Gemini response schema of :class:`Refinement`, with the task's labels as an enum."""
    rule = {**extraction_schema(task)["properties"]["rule"], "nullable": True}
    edit = {
        "type": "OBJECT",
        "properties": {
            "action": {"type": "STRING", "enum": list(EDIT_ACTIONS)},
            "rule_id": {"type": "STRING", "description": "the rule replaced or dropped"},
            "before": {"type": "STRING", "description": "add: the rule the new rule goes before"},
            "rule": rule,
            "reason": {"type": "STRING"},
        },
        "required": ["action", "reason"],
        "propertyOrdering": ["action", "rule_id", "before", "rule", "reason"],
    }
    return {
        "type": "OBJECT",
        "properties": {
            "analysis": {"type": "STRING"},
            "edits": {"type": "ARRAY", "items": edit, "maxItems": MAX_EDITS},
        },
        "required": ["analysis", "edits"],
        "propertyOrdering": ["analysis", "edits"],
    }


def parse_refinement(text: str, rule_ids: set[str], labels: set[str]) -> Refinement:
    """Validate an answer text, raising :class:`RejectedAnswer` for an unknown rule id or a label outside the task."""
    try:
        refinement = Refinement.model_validate_json(text)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "answer"
        raise RejectedAnswer(f"{where}: {first['msg']} ({error.error_count()} errors in all)") from None
    for number, edit in enumerate(refinement.edits):
        for field_name, value in (("rule_id", edit.rule_id), ("before", edit.before)):
            if value and value not in rule_ids:
                raise RejectedAnswer(
                    f"edits.{number}.{field_name}: {value!r} is not a rule id; "
                    f"the rules are {', '.join(sorted(rule_ids))}"
                )
        if edit.rule is not None and edit.rule.label not in labels:
            raise RejectedAnswer(
                f"edits.{number}.rule.label: {edit.rule.label!r} is not a label of the task; "
                f"use one of {', '.join(sorted(labels))}"
            )
    return refinement


class EditFailed(PldError):
    """An edit that cannot be applied, or that leaves a ruleset that does not pass ``pldc check``."""


@dataclass(frozen=True)
class AppliedEdit:
    """The edited ruleset: its canonical text, its check result and what changed besides the rule."""

    text: str
    checked: CheckedRuleset
    rule_id: str | None
    changes: tuple[str, ...]


def apply_edit(parsed: ParseResult, edit: RuleEdit, teacher: str) -> AppliedEdit:
    """Apply ``edit`` to ``parsed`` and check the result.

    Raises:
        EditFailed: the rule id is unknown, the features cannot be mapped, or the edited ruleset
            does not check. The message names the cause.
    """
    ruleset = parsed.ruleset
    path = ruleset.path
    # An earlier edit of the same answer may have removed a rule that this edit names.
    known = {rule.id.value for rule in ruleset.rules}
    for name in (edit.rule_id, edit.before):
        if name and name not in known:
            raise EditFailed(f"no rule {name} in the current ruleset")
    if edit.action == "drop":
        return _drop(parsed, edit)
    assert edit.rule is not None
    rule_id = edit.rule_id if edit.action == "replace" else _new_rule_id(ruleset, edit.rule.label)
    assert rule_id is not None
    features, condition, changes = _map_features(ruleset, edit.rule, rule_id, teacher, edit.reason)
    fields = {
        "title": edit.rule.title,
        "condition": condition,
        "label": ast.Name(value=edit.rule.label),
        # NOTE: the teacher's reason becomes the rule's ``because`` text, which the student prompt shows.
        # A reason that names training example ids therefore puts those ids in the prompt.
        "rationale": edit.reason,
        "teacher": teacher,
    }
    items = _with_features(ruleset.items, features)
    if edit.action == "replace":
        cleared = {"examples": (), "support": None, "confidence": None}
        items = _replace_rule(items, rule_id, lambda old: old.model_copy(update={**fields, **cleared}))
    else:
        new_rule = ast.Rule(id=ast.Name(value=rule_id), **fields)
        items = _insert_rule(items, new_rule, edit.before)
    edited = ruleset.model_copy(update={"items": tuple(items)})
    text = format_source(ParseResult(edited, parsed.comments, parsed.source))
    return AppliedEdit(text, _check(text, path), rule_id, tuple(changes))


def _drop(parsed: ParseResult, edit: RuleEdit) -> AppliedEdit:
    from pldc.prune import PruneFailed, prune

    assert edit.rule_id is not None
    try:
        pruned = prune(parsed, {edit.rule_id}, parsed.ruleset.path)
    except PruneFailed as error:
        raise EditFailed(str(error)) from None
    changes = tuple(f"removed {r.kind} {r.name}: {r.reason}" for r in pruned.removals if r.name != edit.rule_id)
    return AppliedEdit(pruned.text, _check(pruned.text, parsed.ruleset.path), edit.rule_id, changes)


def _check(text: str, path: str) -> CheckedRuleset:
    checked, error = first_error(text, path)
    if error is not None:
        raise EditFailed(f"the edited ruleset {error}")
    return checked


def _new_rule_id(ruleset: ast.Ruleset, label: str) -> str:
    taken = {rule.id.value for rule in ruleset.rules}
    number = 1
    while f"{label}_{number}" in taken:
        number += 1
    return f"{label}_{number}"


def _map_features(
    ruleset: ast.Ruleset, rule: ExtractedRule, rule_id: str, teacher: str, reason: str
) -> tuple[list[ast.Feature], ast.Condition, list[str]]:
    """Map the rule's features onto the declarations; return the changed or new features and the condition."""
    record = ExtractRecord(id=rule_id, label=rule.label, source="refine", teacher=teacher, rationale=reason, rule=rule)
    declared = {feature.name.value: feature for feature in ruleset.features}
    # normalise() writes its stage file into a run directory; this one-rule mapping keeps none.
    with tempfile.TemporaryDirectory(prefix="pldc-refine-") as scratch:
        try:
            payload = normalise([record], ruleset.features, Path(scratch))
        except InputError as error:
            raise EditFailed(f"the rule's features do not fit the declarations: {error}") from None
    features: list[ast.Feature] = []
    changes: list[str] = []
    for entry in payload["features"]:
        values = tuple(ast.Name(value=value) for value in entry["values"]) if entry["type"] == "one_of" else None
        existing = declared.get(entry["name"])
        if existing is None:
            name = ast.Name(value=entry["name"])
            features.append(ast.Feature(name=name, values=values, definition=entry["definition"]))
            changes.append(f"declared feature {entry['name']}")
        elif entry["added_values"]:
            features.append(existing.model_copy(update={"values": values}))
            changes.append(f"added values {', '.join(entry['added_values'])} to feature {entry['name']}")
    literals = literals_from_json(payload["rules"][0]["literals"])
    return features, condition_ast(literals), changes


def _with_features(items: tuple[ast.Item, ...], features: list[ast.Feature]) -> list[ast.Item]:
    """Replace changed declarations in place and put new ones after the last declaration."""
    by_name = {feature.name.value: feature for feature in features}
    result: list[ast.Item] = []
    for item in items:
        if isinstance(item, ast.Feature) and item.name.value in by_name:
            result.append(by_name.pop(item.name.value))
        else:
            result.append(item)
    anchor = max((i for i, item in enumerate(result) if isinstance(item, ast.Feature | ast.Task)), default=-1)
    result[anchor + 1 : anchor + 1] = list(by_name.values())
    return result


def _replace_rule(items: list[ast.Item], rule_id: str, change: Callable[[ast.Rule], ast.Rule]) -> list[ast.Item]:
    result: list[ast.Item] = []
    for item in items:
        if isinstance(item, ast.Rule) and item.id.value == rule_id:
            result.append(change(item))
        elif isinstance(item, ast.Group):
            rules = tuple(change(rule) if rule.id.value == rule_id else rule for rule in item.rules)
            result.append(item.model_copy(update={"rules": rules}))
        else:
            result.append(item)
    return result


def _insert_rule(items: list[ast.Item], rule: ast.Rule, before: str | None) -> list[ast.Item]:
    """Insert ``rule`` before the rule ``before`` (inside its group), or after the last rule or group."""
    if before is None:
        positions = [i for i, item in enumerate(items) if isinstance(item, ast.Rule | ast.Group)]
        last = positions[-1] if positions else len(items) - 1
        return [*items[: last + 1], rule, *items[last + 1 :]]
    result: list[ast.Item] = []
    for item in items:
        if isinstance(item, ast.Rule) and item.id.value == before:
            result.extend([rule, item])
        elif isinstance(item, ast.Group) and any(r.id.value == before for r in item.rules):
            rules: list[ast.Rule] = []
            for member in item.rules:
                if member.id.value == before:
                    rules.append(rule.model_copy(update={"group": item.name.value}))
                rules.append(member)
            result.append(item.model_copy(update={"rules": tuple(rules)}))
        else:
            result.append(item)
    return result


ORDER_KINDS = ("conflict", "order-dependent")


def settle_order(text: str, path: str, template: str) -> tuple[str, list[tuple[str, str]]]:
    """Write the rule order that decides each conflict as ``overrides``, so the ruleset checks clean.

    An edit can leave two rules with different labels that both apply, decided only by their
    order. For each such finding the rule that comes first in the compiled order gets
    ``overrides`` naming the other, which states the order the student already follows.
    Return the new text and the pairs added; the text is returned unchanged when the prompt
    compiled with ``template`` would change.
    """
    from pldc.analysis import analyze
    from pldc.compile import compile_prompt
    from pldc.pipeline import check_source

    original_text = text
    original = check_source(text, path)
    before = compile_prompt(original.ruleset, original.ordered, template).text
    added: list[tuple[str, str]] = []
    current = original
    # Every pass adds at least one override between two rules, so the passes are bounded.
    for _ in range(len(original.ruleset.rules) ** 2 + 1):
        analysis = analyze(current.ruleset, current.ordered, current.priorities)
        position = {rule.id.value: number for number, rule in enumerate(current.ordered)}
        pairs = sorted(
            {
                tuple(sorted(finding.rules[:2], key=lambda rule_id: position[rule_id]))
                for finding, level in analysis.findings
                if finding.kind in ORDER_KINDS and level in ("warning", "error") and len(finding.rules) >= 2
            }
        )
        if not pairs:
            break
        targets: dict[str, list[str]] = {}
        for first, second in pairs:
            targets.setdefault(first, []).append(second)
        items = [
            item.model_copy(
                update={
                    "overrides": (
                        *item.overrides,
                        *(ast.Name(value=name) for name in targets[item.id.value]),
                    )
                }
            )
            if isinstance(item, ast.Rule) and item.id.value in targets
            else item
            for item in current.ruleset.items
        ]
        ruleset = current.ruleset.model_copy(update={"items": tuple(items)})
        candidate = format_source(ParseResult(ruleset, current.parsed.comments, current.parsed.source))
        checked = check_source(candidate, path)
        if checked.diagnostics:
            return original_text, []
        added.extend((first, second) for first, second in pairs)
        current = checked
        text = candidate
    if compile_prompt(current.ruleset, current.ordered, template).text != before:
        return original_text, []
    return text, added
