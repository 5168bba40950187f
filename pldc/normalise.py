"""``pldc distill build``, stage 1: map extracted rules onto one set of typed features.

Teachers name features per example, so the same feature appears in many records. Uses with
the same name and type become one feature: a ``one_of`` feature takes the union of the values
seen, and the definition used most often wins (the others are kept in ``other_definitions``).
A feature that the task file already declares keeps its declared type, values and definition,
and new values seen in records are appended to it.

Uses of one name with different types are inconsistent. They are reported in
``features.json`` under ``inconsistent`` and are not dropped. The task file's type, or else the
type used most often, keeps the name. Each other type becomes its own feature named
``NAME_TYPE``, so every rule keeps its exact condition.

Each rule's condition becomes a conjunction of literals: ``feature`` or ``not feature`` for a
``bool`` feature, ``feature is value`` for a ``one_of`` feature.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pldc import ast
from pldc.distill import ExtractRecord, RuleFeature
from pldc.errors import InputError
from pldc.stage_files import digest, read_stage, write_stage

logger = logging.getLogger("pldc")

FEATURES_FILE = "features.json"
CONFIDENCE_DECIMALS = 4

LiteralValue = bool | str


@dataclass(frozen=True)
class TypedLiteral:
    """One conjunct of a typed condition: a bool feature with True or False, or a one-of feature with a value."""

    feature: str
    value: LiteralValue

    def render(self) -> str:
        if self.value is True:
            return self.feature
        if self.value is False:
            return f"not {self.feature}"
        return f"{self.feature} is {self.value}"

    def to_ast(self) -> ast.Condition:
        predicate = ast.Predicate(feature=ast.Name(value=self.feature))
        if self.value is True:
            return predicate
        if self.value is False:
            return ast.Not(operand=predicate)
        return ast.IsValue(feature=ast.Name(value=self.feature), value=ast.Name(value=str(self.value)))


def render_condition(literals: Sequence[TypedLiteral]) -> str:
    """Write a conjunction in ``.pld`` syntax; literals are kept sorted by feature name."""
    return " and ".join(literal.render() for literal in literals)


def condition_ast(literals: Sequence[TypedLiteral]) -> ast.Condition:
    if len(literals) == 1:
        return literals[0].to_ast()
    return ast.And(operands=tuple(literal.to_ast() for literal in literals))


def literals_from_json(items: Sequence[dict[str, Any]]) -> tuple[TypedLiteral, ...]:
    return tuple(TypedLiteral(item["feature"], item["value"]) for item in items)


@dataclass
class _Use:
    """Every use of one feature name with one type, across records."""

    type: str
    values: list[str]
    definitions: Counter[str]
    rules: list[str]


def _feature_type(feature: ast.Feature) -> str:
    return "bool" if feature.is_bool else "one_of"


def normalise(records: Sequence[ExtractRecord], task_features: Sequence[ast.Feature], run_dir: Path) -> dict[str, Any]:
    """Merge the records' features, write ``RUN_DIR/features.json`` and return its content.

    The stage is skipped when ``features.json`` was written from the same records and task features.
    """
    ordered = sorted(records, key=lambda record: record.id)
    declared = {feature.name.value: feature for feature in task_features}
    input_hash = digest(
        {
            "records": [record.model_dump(mode="json") for record in ordered],
            "task_features": [_declared_json(feature) for feature in task_features],
        }
    )
    path = run_dir / FEATURES_FILE
    stored = read_stage(path, input_hash)
    if stored is not None:
        return stored

    uses = _collect_uses(ordered)
    features, renames, inconsistent = _merge_uses(uses, declared)
    rules = [_typed_rule(record, renames) for record in ordered]
    payload = {"input_hash": input_hash, "features": features, "inconsistent": inconsistent, "rules": rules}
    for entry in inconsistent:
        logger.warning(
            "feature %r is used with types %s; %s",
            entry["name"],
            ", ".join(sorted(entry["types"])),
            "; ".join(f"{kind} uses renamed to {name!r}" for kind, name in sorted(entry["renamed"].items())),
        )
    write_stage(path, payload)
    return payload


def _declared_json(feature: ast.Feature) -> dict[str, Any]:
    return {"name": feature.name.value, "values": list(feature.value_names), "definition": feature.definition}


def _collect_uses(records: Sequence[ExtractRecord]) -> dict[str, dict[str, _Use]]:
    uses: dict[str, dict[str, _Use]] = {}
    for record in records:
        for feature in record.rule.features:
            by_type = uses.setdefault(feature.name, {})
            use = by_type.setdefault(feature.type, _Use(feature.type, [], Counter(), []))
            for value in feature.values:
                if value not in use.values:
                    use.values.append(value)
            use.definitions[feature.definition] += 1
            use.rules.append(record.id)
    return uses


def _merge_uses(
    uses: dict[str, dict[str, _Use]], declared: dict[str, ast.Feature]
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], str], list[dict[str, Any]]]:
    """Return the merged features, the renames of inconsistent uses, and the inconsistency report."""
    features: dict[str, dict[str, Any]] = {}
    renames: dict[tuple[str, str], str] = {}
    inconsistent: list[dict[str, Any]] = []
    for name in sorted(uses):
        by_type = uses[name]
        existing = declared.get(name)
        if existing is not None:
            main_type = _feature_type(existing)
        else:
            # The type used by most rules keeps the name; a tie goes to "bool", the first in sort order.
            main_type = min(by_type, key=lambda kind: (-len(by_type[kind].rules), kind))
        renamed: dict[str, str] = {}
        for kind in sorted(by_type):
            target = name if kind == main_type else f"{name}_{kind}"
            if target != name:
                if target in uses or target in declared:
                    raise InputError(
                        f"feature {name!r} is used as {kind} and as {main_type}, and the name {target!r} for its "
                        f"{kind} uses is taken; rename one of the features in extract.jsonl"
                    )
                renamed[kind] = target
            renames[(name, kind)] = target
            features[target] = _merged_feature(target, by_type[kind], existing if target == name else None)
        if len(by_type) > 1 or (existing is not None and main_type not in by_type):
            inconsistent.append(
                {
                    "name": name,
                    "types": {kind: sorted(use.rules) for kind, use in sorted(by_type.items())},
                    "declared_type": main_type if existing is not None else None,
                    "kept": main_type,
                    "renamed": renamed,
                }
            )
    return [features[name] for name in sorted(features)], renames, inconsistent


def _merged_feature(name: str, use: _Use, existing: ast.Feature | None) -> dict[str, Any]:
    # The most common definition wins; a tie goes to the lexicographically first one.
    ranked = sorted(use.definitions.items(), key=lambda item: (-item[1], item[0]))
    definition = ranked[0][0]
    others = [text for text, _ in ranked[1:]]
    values = list(use.values)
    added: list[str] = []
    source = "extracted"
    if existing is not None:
        source = "task"
        if existing.definition != definition:
            others = [text for text, _ in ranked if text != existing.definition]
        definition = existing.definition
        values = list(existing.value_names)
        added = [value for value in use.values if value not in values]
        values.extend(added)
    return {
        "name": name,
        "type": use.type,
        "values": values if use.type == "one_of" else [],
        "definition": definition,
        "other_definitions": others,
        "added_values": added,
        "source": source,
        "rules": len(use.rules),
    }


def _typed_rule(record: ExtractRecord, renames: dict[tuple[str, str], str]) -> dict[str, Any]:
    literals = sorted(
        (_literal(feature, renames[(feature.name, feature.type)]) for feature in record.rule.features),
        key=lambda literal: literal.feature,
    )
    return {
        "id": record.id,
        "label": record.label,
        "teacher": record.teacher,
        "title": record.rule.title,
        "condition_text": record.rule.condition,
        "rationale": record.rationale,
        "literals": [{"feature": literal.feature, "value": literal.value} for literal in literals],
        "condition": render_condition(literals),
    }


def _literal(feature: RuleFeature, name: str) -> TypedLiteral:
    if feature.type == "bool":
        return TypedLiteral(name, feature.value == "true")
    return TypedLiteral(name, feature.value)


def map_rule_features(
    rule_features: Sequence[RuleFeature], features: list[dict[str, Any]], source: str
) -> tuple[TypedLiteral, ...]:
    """Map a new rule's features onto ``features`` (the feature table), adding to it as needed.

    A feature with a known name and type is reused, and new values of a ``one_of`` feature are
    appended to it. A known name with another type becomes ``NAME_TYPE``, as in
    :func:`normalise`. An unknown feature is added with ``source``. ``features`` stays sorted by
    name; the literals come back sorted by feature name.
    """
    by_name = {feature["name"]: feature for feature in features}
    literals: list[TypedLiteral] = []
    for feature in rule_features:
        target = feature.name
        if target in by_name and by_name[target]["type"] != feature.type:
            target = f"{feature.name}_{feature.type}"
            if target in by_name and by_name[target]["type"] != feature.type:
                raise InputError(f"feature {feature.name!r}: the names {feature.name!r} and {target!r} are both taken")
        entry = by_name.get(target)
        if entry is None:
            entry = {
                "name": target,
                "type": feature.type,
                "values": list(feature.values) if feature.type == "one_of" else [],
                "definition": feature.definition,
                "other_definitions": [],
                "added_values": [],
                "source": source,
                "rules": 0,
            }
            features.append(entry)
            by_name[target] = entry
        elif feature.type == "one_of":
            for value in feature.values:
                if value not in entry["values"]:
                    entry["values"].append(value)
                    entry["added_values"].append(value)
        entry["rules"] += 1
        literals.append(_literal(feature, target))
    features.sort(key=lambda entry: entry["name"])
    return tuple(sorted(literals, key=lambda literal: literal.feature))
