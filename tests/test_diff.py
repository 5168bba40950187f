"""Semantic diff: changes by rule id and definition name, never layout or comments."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TypeVar

import pytest

from pldc import diff as d
from pldc.parse import parse, parse_file

from conftest import FIXTURES, ROOT, run_pldc

DIFF = FIXTURES / "diff"
_C = TypeVar("_C")


def _diff(name: str, new_name: str | None = None) -> d.RulesetDiff:
    old = parse_file(DIFF / f"{name}.old.pld").ruleset
    new = parse_file(DIFF / f"{new_name or name}.new.pld").ruleset
    return d.diff_rulesets(old, new)


def _only(diff: d.RulesetDiff, kind: type[_C], **match: object) -> _C:
    """Return the one change of ``kind`` whose fields equal ``match``."""
    found = [c for c in diff.changes if isinstance(c, kind) and all(getattr(c, k) == v for k, v in match.items())]
    assert len(found) == 1, f"expected one {kind.__name__} matching {match}, got {found}"
    return found[0]


def _rule_ids(diff: d.RulesetDiff, kind: type) -> list[str]:
    return [c.rule_id for c in diff.changes if isinstance(c, kind)]


# ---- no change ------------------------------------------------------------


def test_layout_and_comments_are_no_change() -> None:
    diff = _diff("layout")
    assert diff.changes == ()
    assert not diff


def test_file_against_itself_is_no_change() -> None:
    ruleset = parse_file(DIFF / "base.old.pld").ruleset
    assert d.diff_rulesets(ruleset, ruleset).changes == ()


# ---- rule changes -----------------------------------------------------------


def test_condition_change_shows_both_conditions() -> None:
    change = _only(_diff("base"), d.ConditionChanged, rule_id="P1")
    assert change.old == "praises and not tone is cold"
    assert change.new == "praises and not (tone is cold or complains)"
    assert change.equivalent is False


def test_equivalent_condition_is_marked() -> None:
    change = _only(_diff("equivalent"), d.ConditionChanged, rule_id="R1")
    assert change.old == "not (a or b)"
    assert change.new == "not a and not b"
    assert change.equivalent is True


def test_different_condition_is_not_equivalent() -> None:
    change = _only(_diff("equivalent"), d.ConditionChanged, rule_id="R2")
    assert change.equivalent is False


def test_label_change() -> None:
    change = _only(_diff("base"), d.LabelChanged, rule_id="P2")
    assert change.old == "positive"
    assert change.new == "negative"


def test_title_and_rationale_rewording() -> None:
    diff = _diff("base")
    title = _only(diff, d.RuleReworded, rule_id="P1", field="title")
    assert title.old == "Praise"
    assert title.new == "Praise without coldness"
    rationale = _only(diff, d.RuleReworded, rule_id="P1", field="rationale")
    assert rationale.new == "Praise without a cold tone or a complaint is a positive review."


def test_priority_change() -> None:
    change = _only(_diff("base"), d.PriorityChanged, rule_id="P2")
    assert change.old == 0
    assert change.new == 2


def test_overrides_change() -> None:
    change = _only(_diff("base"), d.OverridesChanged, rule_id="N1")
    assert change.old == ("P2",)
    assert change.new == ()


@pytest.mark.parametrize(
    ("field", "old", "new"),
    [
        ("examples", ("train.jsonl:1", "train.jsonl:4"), ("train.jsonl:1", "train.jsonl:4", "train.jsonl:9")),
        ("support", 12, 15),
        ("confidence", 0.9, 0.85),
        ("teacher", "teacher-a", "teacher-b"),
    ],
)
def test_provenance_change(field: str, old: object, new: object) -> None:
    change = _only(_diff("base"), d.ProvenanceChanged, rule_id="P1", field=field)
    assert change.old == old
    assert change.new == new


def test_tags_change() -> None:
    change = _only(_diff("base"), d.TagsChanged, rule_id="P1", field="tags")
    assert change.old == ("lexical",)
    assert change.new == ("lexical", "tone")


def test_group_change() -> None:
    change = _only(_diff("base"), d.TagsChanged, rule_id="P2", field="group")
    assert change.old == "praise"
    assert change.new is None


def test_rule_added_with_position() -> None:
    change = _only(_diff("base"), d.RuleAdded, rule_id="N3")
    assert change.condition == "tone is neutral"
    assert change.label == "negative"
    assert change.position == 4


def test_rule_removed_with_old_position() -> None:
    change = _only(_diff("base"), d.RuleRemoved, rule_id="N2")
    assert change.condition == "tone is cold"
    assert change.position == 4


def test_unchanged_fields_not_reported() -> None:
    diff = _diff("base")
    assert _rule_ids(diff, d.ConditionChanged) == ["P1"]
    assert _rule_ids(diff, d.LabelChanged) == ["P2"]
    assert _rule_ids(diff, d.PriorityChanged) == ["P2"]


def test_default_spellings_are_equal() -> None:
    # layout.new.pld writes `pld 1`, `hit first` and `priority 0`, which the old file leaves implicit.
    source = (DIFF / "layout.new.pld").read_text(encoding="utf-8")
    assert "pld 1\n" in source
    assert "hit first" in source
    assert "priority 0" in source
    assert _diff("layout").changes == ()


# ---- order ------------------------------------------------------------------


def test_priority_raise_moves_one_rule() -> None:
    diff = _diff("order")
    assert _rule_ids(diff, d.OrderChanged) == ["D"]
    move = _only(diff, d.OrderChanged, rule_id="D")
    assert move.old_position == 4
    assert move.new_position == 1
    assert move.now_before == ("A", "B", "C")
    assert move.now_after == ()


def test_added_rule_shifts_no_other_rule() -> None:
    diff = _diff("base")
    # N3 is added and N2 removed; only P2, lifted by its new priority, changes place.
    assert _rule_ids(diff, d.OrderChanged) == ["P2"]
    move = _only(diff, d.OrderChanged, rule_id="P2")
    assert move.old_position == 3
    assert move.new_position == 1
    assert move.now_before == ("P1", "N1")


def test_swapped_rules_report_one_move() -> None:
    header = 'pld 1.0\ntask t { input x "X" label a "A" label b "B" default a }\nfeature f: bool "F"\n'
    old = parse(header + 'rule R1 "1" { when f then a }\nrule R2 "2" { when f then b }\n').ruleset
    new = parse(header + 'rule R2 "2" { when f then b }\nrule R1 "1" { when f then a }\n').ruleset
    moves = [c for c in d.diff_rulesets(old, new).changes if isinstance(c, d.OrderChanged)]
    assert len(moves) == 1
    assert {moves[0].rule_id, *moves[0].now_before, *moves[0].now_after} == {"R1", "R2"}


def test_reversed_order_keeps_one_rule() -> None:
    header = 'pld 1.0\ntask t { input x "X" label a "A" label b "B" default a }\nfeature f: bool "F"\n'
    rules = [f'rule R{n} "{n}" {{ when f then a priority {n} }}\n' for n in range(1, 5)]
    old = parse(header + "".join(rules)).ruleset
    new = parse(header + "".join(rules).replace("priority", "support")).ruleset
    moves = [c for c in d.diff_rulesets(old, new).changes if isinstance(c, d.OrderChanged)]
    assert [m.rule_id for m in moves] == ["R1", "R2", "R3"]
    assert [(m.old_position, m.new_position) for m in moves] == [(4, 1), (3, 2), (2, 3)]


def test_override_cycle_skips_order_with_note() -> None:
    diff = _diff("equivalent", "semantic_errors")
    assert _rule_ids(diff, d.OrderChanged) == []
    assert len(diff.notes) == 1
    assert "cycle: R1 -> R2 -> R1" in diff.notes[0]


def test_semantic_errors_still_diff() -> None:
    diff = _diff("equivalent", "semantic_errors")
    label = _only(diff, d.LabelChanged, rule_id="R1")
    assert label.new == "maybe"
    condition = _only(diff, d.ConditionChanged, rule_id="R1")
    assert condition.new == "not (a or undefined_feature)"


# ---- definitions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("definition", "name", "field", "old", "new"),
    [
        ("meta", "source", "value", '"train.jsonl"', '"train.jsonl, dev.jsonl"'),
        (
            "task",
            "sentiment",
            "description",
            '"Decide whether a review is positive or negative."',
            '"Decide whether a product review is positive or negative."',
        ),
        ("task", "sentiment", "default", "negative", "positive"),
        ("task", "sentiment", "hit", "first", "priority"),
        ("input", "review", "description", '"A product review."', '"A product review, in English."'),
        ("label", "positive", "spelled", '"pos"', '"pos", "POSITIVE"'),
        ("feature", "tone", "type", "one of [warm, cold]", "one of [warm, neutral, cold]"),
        ("group", "g", "title", '"Old title"', '"New title"'),
        ("case", "c1", "title", None, '"Praise alone"'),
        ("case", "c1", "given", "praises", "praises, tone = warm"),
        ("case", "c1", "expect", "positive by P1", "positive"),
    ],
)
def test_definition_field_change(definition: str, name: str, field: str, old: str | None, new: str | None) -> None:
    change = _only(_diff("definitions"), d.DefinitionChanged, definition=definition, name=name, field=field)
    assert change.old == old
    assert change.new == new


@pytest.mark.parametrize(
    ("definition", "name", "text"),
    [
        ("meta", "method", 'meta method "hand-written"'),
        ("label", "neutral", 'label neutral "Neither."'),
        ("feature", "emoji", 'feature emoji: bool "The review uses emoji."'),
    ],
)
def test_definition_added(definition: str, name: str, text: str) -> None:
    change = _only(_diff("definitions"), d.DefinitionAdded, definition=definition, name=name)
    assert change.text == text


@pytest.mark.parametrize(
    ("definition", "name", "text"),
    [
        ("meta", "teacher", 'meta teacher "model-a"'),
        ("label", "mixed", 'label mixed "Both."'),
        ("feature", "sarcasm", 'feature sarcasm: bool "The review is sarcastic."'),
    ],
)
def test_definition_removed(definition: str, name: str, text: str) -> None:
    change = _only(_diff("definitions"), d.DefinitionRemoved, definition=definition, name=name)
    assert change.text == text


@pytest.mark.parametrize(
    ("definition", "old", "new"),
    [("input", ("review", "title"), ("title", "review")), ("feature", ("praises", "tone"), ("tone", "praises"))],
)
def test_declaration_order_change(definition: str, old: tuple[str, ...], new: tuple[str, ...]) -> None:
    change = _only(_diff("definitions"), d.DeclarationOrderChanged, definition=definition)
    assert change.old == old
    assert change.new == new


def test_unchanged_label_order_not_reported() -> None:
    assert [c.definition for c in _diff("definitions").changes if isinstance(c, d.DeclarationOrderChanged)] == [
        "input",
        "feature",
    ]


def test_added_file_lists_every_definition() -> None:
    empty = parse("pld 1.0\n").ruleset
    diff = d.diff_rulesets(empty, parse_file(DIFF / "sentiment.pld").ruleset)
    task = _only(diff, d.DefinitionAdded, definition="task")
    assert task.text == 'task sentiment: description "Decide whether a review is positive or negative.", ' + (
        "default negative, hit first"
    )
    case = _only(diff, d.DefinitionAdded, definition="case")
    assert case.text == "case praise_warm: given praises, tone = warm, expect positive by P1"
    assert _rule_ids(diff, d.RuleAdded) == ["P1"]


# ---- rendering --------------------------------------------------------------


def test_text_groups_changes_by_rule() -> None:
    text = d.render_text(_diff("base"), "old.pld", "new.pld")
    lines = text.splitlines()
    assert lines[:2] == ["--- old.pld", "+++ new.pld"]
    assert lines.count("~ rule P1") == 1
    assert "    - when praises and not tone is cold" in lines
    assert "    + when praises and not (tone is cold or complains)" in lines
    assert "    order 3 -> 1 (now before P1, N1)" in lines
    assert '+ rule N3 "Neutral tone" (order 4)' in lines
    assert '- rule N2 "Cold tone" (was order 4)' in lines


def test_text_marks_equivalent_condition() -> None:
    text = d.render_text(_diff("equivalent"), "old.pld", "new.pld")
    assert "(equivalent: both hold for the same feature values)" in text


def test_text_says_when_nothing_changed() -> None:
    text = d.render_text(_diff("layout"), "old.pld", "new.pld")
    assert text.splitlines()[2] == "no semantic changes (layout and comments are not compared)"


def test_text_prints_notes() -> None:
    text = d.render_text(_diff("equivalent", "semantic_errors"), "old.pld", "new.pld")
    assert "note: order not compared: in the new file, rules override each other" in text


def test_json_lists_kind_and_fields() -> None:
    report = json.loads(d.render_json(_diff("order"), "old.pld", "new.pld"))
    assert report["old"] == "old.pld"
    assert report["changes"] == [
        {"kind": "priority_changed", "rule_id": "D", "old": 0, "new": 5},
        {
            "kind": "order_changed",
            "rule_id": "D",
            "old_position": 4,
            "new_position": 1,
            "now_before": ["A", "B", "C"],
            "now_after": [],
        },
    ]
    assert report["notes"] == []


def test_multiline_strings_print_on_one_line() -> None:
    old = parse('pld 1.0\nmeta m "a"\n').ruleset
    new = parse('pld 1.0\nmeta m """\n    a\n    b "c"\n    """\n').ruleset
    change = _only(d.diff_rulesets(old, new), d.DefinitionChanged, name="m")
    assert change.new == '"a\\nb \\"c\\""'


# ---- command line -----------------------------------------------------------


def test_cli_diff_exits_zero_with_changes() -> None:
    result = run_pldc("diff", str(DIFF / "base.old.pld"), str(DIFF / "base.new.pld"))
    assert result.returncode == 0
    assert "~ rule P1" in result.stdout
    assert result.stderr == ""


def test_cli_exit_code_flag_with_changes() -> None:
    result = run_pldc("diff", "--exit-code", str(DIFF / "order.old.pld"), str(DIFF / "order.new.pld"))
    assert result.returncode == 1


def test_cli_exit_code_flag_without_changes() -> None:
    result = run_pldc("diff", "--exit-code", str(DIFF / "layout.old.pld"), str(DIFF / "layout.new.pld"))
    assert result.returncode == 0


def test_cli_reads_old_from_stdin() -> None:
    old = (DIFF / "order.old.pld").read_text(encoding="utf-8")
    result = run_pldc("diff", "-", str(DIFF / "order.new.pld"), stdin=old)
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "--- <stdin>"
    assert "    order 4 -> 1 (now before A, B, C)" in result.stdout


def test_cli_json_format() -> None:
    result = run_pldc("diff", "--format", "json", str(DIFF / "order.old.pld"), str(DIFF / "order.new.pld"))
    assert result.returncode == 0
    assert [c["kind"] for c in json.loads(result.stdout)["changes"]] == ["priority_changed", "order_changed"]


def test_cli_syntax_error_names_file_line_column() -> None:
    bad = DIFF / "syntax_error.pld"
    result = run_pldc("diff", str(DIFF / "order.old.pld"), str(bad))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{bad}:12:10: error[E001]: ")
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


def test_cli_reports_errors_of_both_files() -> None:
    bad = DIFF / "syntax_error.pld"
    stdin = "pld 1.0\ntask {\n"
    result = run_pldc("diff", "-", str(bad), stdin=stdin)
    assert result.returncode == 1
    assert "<stdin>:2:6: error[E001]" in result.stderr
    assert f"{bad}:12:10: error[E001]" in result.stderr


def test_cli_missing_file_exits_3() -> None:
    missing = DIFF / "missing.pld"
    result = run_pldc("diff", str(missing), str(DIFF / "order.new.pld"))
    assert result.returncode == 3
    assert result.stderr == f"pldc: error: {missing}: file not found\n"


def test_cli_both_stdin_is_usage_error() -> None:
    result = run_pldc("diff", "-", "-", stdin="pld 1.0\n")
    assert result.returncode == 2
    assert "cannot both be standard input" in result.stderr


def test_cli_invalid_utf8_on_stdin_exits_3() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pldc", "diff", "-", str(DIFF / "order.new.pld")],
        cwd=ROOT,
        input=b"pld 1.0\n\xff\n",
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert result.stderr == b"pldc: error: <stdin>: not valid UTF-8 at byte 8\n"
