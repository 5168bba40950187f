"""``pldc distill refine``: citation parsing, edit validation and application, and the closed loop.

The loop tests run the embedded student on twelve-example StereoSet slices and the real
google-genai client against the local Gemini test server, which replays scripted teacher edits.
Each test first measures, with the student, the validation macro-F1 that the scripted edit
gives, so the expected outcome (kept or reverted) comes from a measurement.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("google.genai")

from gemini_server import GeminiServer, load_replies, serve

from pldc import ast
from pldc.analysis import analyze
from pldc.answers import label_spellings
from pldc.cache import CallCache
from pldc.cite import Citation, CitedPrediction, parse_citation, reply_text
from pldc.cli import main
from pldc.compile import compile_prompt
from pldc.data import Dataset, load_dataset
from pldc.errors import UsageError
from pldc.gemini import DEFAULT_TEACHER_MODEL
from pldc.parse import parse
from pldc.pipeline import CheckedRuleset, check_source, load_ruleset
from pldc.refine import REFINE_LOG, REFINE_MANIFEST, RefinePrompt, check_splits, round_context
from pldc.refine_edits import EditFailed, RuleEdit, apply_edit, parse_refinement, settle_order
from pldc.teacher import RejectedAnswer

from conftest import FIXTURES

REFINE = FIXTURES / "refine"
TWO_RULES = REFINE / "two_rules.pld"
THREE_RULES = REFINE / "three_rules.pld"
TRAIN = REFINE / "stereoset_train.jsonl"
VALIDATION = REFINE / "stereoset_validation.jsonl"
TEST_SPLIT = REFINE / "stereoset_test.jsonl"
GEMINI = FIXTURES / "gemini"


def task_of(path: Path) -> ast.Task:
    task = load_ruleset(path).ruleset.task
    assert task is not None
    return task


# ---- the citation parser ------------------------------------------------------

RULE_IDS = ["RELIGION", "JOB", "job_2"]


@pytest.fixture(scope="module")
def spellings() -> dict[str, str]:
    return label_spellings(task_of(TWO_RULES))


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Rule: JOB\nAnswer: profession", Citation("JOB", "profession", "cited")),
        ("rule: [RELIGION]\nanswer: religion.", Citation("RELIGION", "religion", "cited")),
        ("**Rule:** `job`\n**Answer:** race", Citation("JOB", "race", "cited")),
        ("Rule: job_2\nAnswer: gender", Citation("job_2", "gender", "cited")),
        ("Rule: none\nAnswer: race", Citation(None, "race", "none")),
        ("Rule: NONE.\nAnswer: race", Citation(None, "race", "none")),
        ("Rule: GENDER_RULE\nAnswer: gender", Citation(None, "gender", "unknown")),
        ("Rule: JOB", Citation("JOB", None, "cited")),
        ("The sentence is about a Hispanic man.", Citation(None, None, "missing")),
        ("Answer: race", Citation(None, "race", "missing")),
        ("Rule: JOB\nAnswer: profession or race", Citation("JOB", None, "cited")),
    ],
)
def test_parse_citation(reply: str, expected: Citation, spellings: dict[str, str]) -> None:
    assert parse_citation(reply, RULE_IDS, spellings) == expected


def test_parse_citation_prefers_exact_case(spellings: dict[str, str]) -> None:
    assert parse_citation("Rule: job\nAnswer: race", ["JOB", "job"], spellings).rule == "job"


def test_parse_citation_takes_first_rule_line(spellings: dict[str, str]) -> None:
    citation = parse_citation("Rule: RELIGION\nRule: JOB\nAnswer: religion", RULE_IDS, spellings)
    assert citation.rule == "RELIGION"


def test_reply_text_round_trips(spellings: dict[str, str]) -> None:
    assert parse_citation(reply_text("job_2", "gender"), RULE_IDS, spellings) == Citation("job_2", "gender", "cited")


# ---- the teacher's answer -----------------------------------------------------

IDS = {"RELIGION", "JOB"}
LABELS = {"gender", "profession", "race", "religion"}


def new_rule(label: str = "gender") -> dict[str, Any]:
    return {
        "title": "A woman is named",
        "condition": "The text is about a woman.",
        "label": label,
        "features": [{"name": "names_woman", "type": "bool", "values": [], "definition": "A woman.", "value": "true"}],
    }


def answer(*edits: dict[str, Any]) -> str:
    return json.dumps({"analysis": "Errors on texts about women.", "edits": list(edits)})


def test_refinement_parses_each_action() -> None:
    refinement = parse_refinement(
        answer(
            {"action": "add", "rule": new_rule(), "before": "JOB", "reason": "r"},
            {"action": "replace", "rule_id": "JOB", "rule": new_rule("profession"), "reason": "r"},
            {"action": "drop", "rule_id": "RELIGION", "reason": "r"},
        ),
        IDS,
        LABELS,
    )
    assert [edit.action for edit in refinement.edits] == ["add", "replace", "drop"]
    assert refinement.edits[0].describe() == "add 'A woman is named' (gender) before JOB"


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ({"action": "drop", "rule_id": "NO_SUCH", "reason": "r"}, "'NO_SUCH' is not a rule id"),
        ({"action": "add", "rule": new_rule(), "before": "NO_SUCH", "reason": "r"}, "'NO_SUCH' is not a rule id"),
        ({"action": "add", "rule": new_rule("neutral"), "reason": "r"}, "'neutral' is not a label of the task"),
        ({"action": "replace", "rule_id": "JOB", "reason": "r"}, "a replace edit needs rule"),
        ({"action": "drop", "reason": "r"}, "a drop edit needs rule_id"),
        ({"action": "add", "rule_id": "JOB", "rule": new_rule(), "reason": "r"}, "an add edit takes no rule_id"),
        ({"action": "drop", "rule_id": "JOB", "rule": new_rule(), "reason": "r"}, "a drop edit takes no rule"),
        ({"action": "rename", "rule_id": "JOB", "reason": "r"}, "edits.0.action"),
    ],
)
def test_invalid_refinement_rejected(edit: dict[str, Any], reason: str) -> None:
    with pytest.raises(RejectedAnswer, match=reason):
        parse_refinement(answer(edit), IDS, LABELS)


def test_too_many_edits_rejected() -> None:
    edits = [{"action": "drop", "rule_id": "JOB", "reason": "r"}] * 6
    with pytest.raises(RejectedAnswer, match="edits"):
        parse_refinement(answer(*edits), IDS, LABELS)


def test_refinement_that_is_not_json_rejected() -> None:
    with pytest.raises(RejectedAnswer, match="answer"):
        parse_refinement('{"analysis": "cut off', IDS, LABELS)


def test_refine_prompt_lists_rules_and_examples() -> None:
    source = TWO_RULES.read_text(encoding="utf-8").replace(
        "feature names_occupation: bool",
        'feature tone: one of [hostile, neutral] "The tone."\nfeature names_occupation: bool',
    )
    checked = check_source(source, "tone.pld")
    train = dataset(TRAIN)
    failure = CitedPrediction(train.examples[0].id, "race", "religion", "RELIGION", "cited", "Rule: RELIGION")
    success = CitedPrediction(train.examples[1].id, "race", "race", None, "none", "Rule: none")
    context = round_context(1, 3, checked, train, [failure], [success])
    request = RefinePrompt.load(task_of(TWO_RULES)).request(context)
    assert request.user.startswith("Refinement round 1 of at most 3.")
    assert "- [RELIGION] A religion is named: if names_religion, answer religion." in request.user
    assert "- tone (one_of: hostile, neutral): The tone." in request.user
    assert "Gold label: race. The model cited RELIGION and answered religion." in request.user
    assert "Gold label: race. The model cited no rule and answered race." in request.user
    assert train.examples[0].inputs["sentence"] in request.user
    assert "If no rule applies" not in request.system
    assert "it answers race" in request.system
    assert request.response_schema["properties"]["edits"]["maxItems"] == 5


# ---- applying edits -----------------------------------------------------------


def edit(**fields: Any) -> RuleEdit:
    return RuleEdit.model_validate({"reason": "Texts about women target gender.", **fields})


def rules_of(checked: CheckedRuleset) -> list[str]:
    return [rule.id.value for rule in checked.ordered]


def test_add_declares_feature_places_last() -> None:
    applied = apply_edit(load_ruleset(TWO_RULES).parsed, edit(action="add", rule=new_rule()), "teacher-x")
    ruleset = applied.checked.ruleset
    assert applied.rule_id == "gender_1"
    assert rules_of(applied.checked) == ["RELIGION", "JOB", "gender_1"]
    assert [feature.name.value for feature in ruleset.features][-1] == "names_woman"
    added = ruleset.rules[-1]
    assert added.teacher == "teacher-x"
    assert added.rationale == "Texts about women target gender."
    assert applied.changes == ("declared feature names_woman",)


def test_add_before_rule_inside_group() -> None:
    source = (THREE_RULES.read_text(encoding="utf-8")).replace(
        'rule JOB "An occupation is named" {', 'group jobs {\nrule JOB "An occupation is named" {'
    )
    source = source.replace(
        'because "A job title marks profession."\n}', 'because "A job title marks profession."\n}\n}'
    )
    parsed = parse(source, "grouped.pld")
    applied = apply_edit(parsed, edit(action="add", rule=new_rule(), before="JOB"), "t")
    group = applied.checked.ruleset.groups[0]
    assert [rule.id.value for rule in group.rules] == ["gender_1", "JOB"]


def test_replace_keeps_id_and_overrides() -> None:
    parsed = load_ruleset(TWO_RULES).parsed
    rule = {**new_rule("religion"), "features": [new_rule()["features"][0] | {"name": "names_religion"}]}
    applied = apply_edit(parsed, edit(action="replace", rule_id="RELIGION", rule=rule), "t")
    replaced = applied.checked.ruleset.rules[0]
    assert replaced.id.value == "RELIGION"
    assert [name.value for name in replaced.overrides] == ["JOB"]
    assert replaced.title == "A woman is named"
    assert replaced.examples == ()
    # A declared feature keeps its own definition.
    assert applied.checked.ruleset.features[0].definition.startswith("True if the text names a religion")


def test_new_values_extend_declared_feature() -> None:
    source = TWO_RULES.read_text(encoding="utf-8").replace(
        "feature names_occupation: bool",
        'feature tone: one of [hostile, neutral] "The tone."\nfeature names_occupation: bool',
    )
    parsed = parse(source, "tone.pld")
    feature = {
        "name": "tone",
        "type": "one_of",
        "values": ["hostile", "admiring"],
        "definition": "d",
        "value": "admiring",
    }
    applied = apply_edit(parsed, edit(action="add", rule={**new_rule(), "features": [feature]}), "t")
    tone = next(f for f in applied.checked.ruleset.features if f.name.value == "tone")
    assert tone.value_names == ("hostile", "neutral", "admiring")
    assert applied.changes == ("added values admiring to feature tone",)


def test_drop_removes_overrides_and_cases() -> None:
    applied = apply_edit(load_ruleset(TWO_RULES).parsed, edit(action="drop", rule_id="JOB"), "t")
    assert rules_of(applied.checked) == ["RELIGION"]
    assert applied.checked.ruleset.rules[0].overrides == ()
    assert [case.name.value for case in applied.checked.ruleset.cases] == ["muslim_engineer_is_religion"]


def test_edit_breaking_a_case_fails() -> None:
    rule = {**new_rule(), "features": [new_rule()["features"][0] | {"name": "names_occupation"}]}
    with pytest.raises(EditFailed, match="nurse_is_profession"):
        apply_edit(load_ruleset(TWO_RULES).parsed, edit(action="replace", rule_id="JOB", rule=rule), "t")


def test_edit_naming_a_removed_rule_fails() -> None:
    with pytest.raises(EditFailed, match="no rule GONE"):
        apply_edit(load_ruleset(TWO_RULES).parsed, edit(action="drop", rule_id="GONE"), "t")


# ---- splits -------------------------------------------------------------------


def test_test_split_rejected() -> None:
    with pytest.raises(UsageError, match="test split"):
        check_splits(TRAIN, TEST_SPLIT)
    with pytest.raises(UsageError, match="test split"):
        check_splits(Path("data/Test-2024.jsonl"), VALIDATION)


def test_same_file_for_both_splits_rejected(tmp_path: Path) -> None:
    link = tmp_path / "validation.jsonl"
    link.symlink_to(TRAIN)
    with pytest.raises(UsageError, match="same file"):
        check_splits(TRAIN, link)


def test_cli_rejects_test_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    splits = ["--train", str(TRAIN), "--validation", str(TEST_SPLIT)]
    code = main(["distill", "refine", str(TWO_RULES), *splits, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "stereoset_test.jsonl" in err
    assert not (tmp_path / "run").exists()


# ---- the loop, with the student and the Gemini test server ----------------------


def fixture_edit(fixture: str, reply: str) -> RuleEdit:
    """Read the first edit of a scripted teacher reply."""
    recorded = next(r for r in load_replies(GEMINI / fixture) if r.name == reply)
    text = recorded.response["candidates"][0]["content"]["parts"][0]["text"]
    return RuleEdit.model_validate(json.loads(text)["edits"][0])


@dataclass(frozen=True)
class Measured:
    """Validation macro-F1 of the fixture rulesets and of the scripted edits, and the student's cache."""

    cache: Path
    two_rules: float
    two_rules_with_added: float
    three_rules: float
    three_rules_with_replaced: float


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Measured:
    from pldc.cite import score_citations
    from pldc.evaluate import evaluate
    from pldc.student import load_student

    path = tmp_path_factory.mktemp("refine-student") / "calls.sqlite"
    cache = CallCache(path)
    student = load_student("embedded")
    train = dataset(TRAIN)
    validation = dataset(VALIDATION)

    def score(checked: CheckedRuleset) -> float:
        return evaluate(checked, validation, student, cache=cache).metrics.macro_f1

    two, three = load_ruleset(TWO_RULES), load_ruleset(THREE_RULES)
    added = apply_edit(two.parsed, fixture_edit("refine_raise.json", "round1"), DEFAULT_TEACHER_MODEL)
    replaced = apply_edit(three.parsed, fixture_edit("refine_lower.json", "round1"), DEFAULT_TEACHER_MODEL)
    result = Measured(path, score(two), score(added.checked), score(three), score(replaced.checked))
    for checked in (two, three):
        score_citations(checked, train, student, cache)
    cache.close()
    return result


def dataset(path: Path) -> Dataset:
    return load_dataset(path, task_of(TWO_RULES), "stereoset-domain")


@pytest.fixture
def student_cache(measured: Measured, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the measured student results, with no teacher answer in it."""
    path = tmp_path / "calls.sqlite"
    shutil.copy(measured.cache, path)
    monkeypatch.setenv("PLDC_CALL_CACHE", str(path))
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    return path


@pytest.fixture
def scripted(request: pytest.FixtureRequest) -> Iterator[GeminiServer]:
    with serve(GEMINI / request.param) as server:
        yield server


def refine(ruleset: Path, server: GeminiServer, run_dir: Path, *extra: str) -> int:
    splits = ["--train", str(TRAIN), "--validation", str(VALIDATION), "--framing", "stereoset-domain"]
    return main(
        ["distill", "refine", str(ruleset), *splits, "--run-dir", str(run_dir), "--base-url", server.url, *extra]
    )


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / REFINE_LOG).read_text(encoding="utf-8").splitlines()]


@pytest.mark.model
@pytest.mark.parametrize("scripted", ["refine_lower.json"], indirect=True)
def test_edit_lowering_validation_reverted(
    measured: Measured, student_cache: Path, scripted: GeminiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert measured.three_rules_with_replaced < measured.three_rules, "the scripted edit must lower macro-F1"
    run_dir = tmp_path / "run"
    assert refine(THREE_RULES, scripted, run_dir) == 0
    out = capsys.readouterr().out
    refined = load_ruleset(run_dir / "refined.pld").ruleset
    assert refined.items == load_ruleset(THREE_RULES).ruleset.items
    score = f"{measured.three_rules:.4f}"
    assert refined.meta_value("refine_macro_f1") == f"{score} -> {score} (validation)"
    assert refined.meta_value("refine_teacher") == DEFAULT_TEACHER_MODEL
    edits = [entry for entry in read_log(run_dir) if entry["event"] == "edit"]
    assert len(edits) == 1
    assert edits[0]["kept"] is False
    assert edits[0]["check"] == "ok"
    assert edits[0]["validation_macro_f1_after"] == pytest.approx(measured.three_rules_with_replaced)
    # Three rounds were allowed; the first kept nothing, so the teacher was asked once.
    assert scripted.calls_for("round1") == 1
    assert scripted.calls_for("round2") == 0
    assert read_log(run_dir)[-1]["reason"] == "round 1 kept no edit"
    assert "0 of 1 edits kept in 1 rounds" in out


@pytest.mark.model
@pytest.mark.parametrize("scripted", ["refine_raise.json"], indirect=True)
def test_raising_edit_kept_then_replayed(
    measured: Measured, student_cache: Path, scripted: GeminiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert measured.two_rules_with_added > measured.two_rules, "the scripted edit must raise macro-F1"
    run_dir = tmp_path / "run"
    assert refine(TWO_RULES, scripted, run_dir, "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    refined_text = (run_dir / "refined.pld").read_text(encoding="utf-8")
    refined = load_ruleset(run_dir / "refined.pld").ruleset
    assert [rule.id.value for rule in refined.rules] == ["RELIGION", "JOB", "gender_1"]
    assert "names_woman_or_girl" in [feature.name.value for feature in refined.features]
    assert summary["validation_macro_f1"]["after"] == pytest.approx(measured.two_rules_with_added)
    assert summary["edits"]["kept"] == ["add 'A woman or girl is named' (gender)"]
    assert summary["stop"] == "round 2 kept no edit"
    assert scripted.calls_for("round1") == 1
    assert scripted.calls_for("round2") == 1
    citations = (run_dir / "citations_round1.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(citations) == 12
    assert set(json.loads(citations[0])) == {"id", "gold", "predicted", "cited", "citation", "reply"}
    manifest = json.loads((run_dir / REFINE_MANIFEST).read_text(encoding="utf-8"))
    assert set(manifest["citations"]) == {"citations_round1.jsonl", "citations_round2.jsonl"}
    assert set(manifest["templates"]) == {"cite", "default", "refine"}
    assert manifest["refined"]["sha256"] == summary_sha(run_dir / "refined.pld")

    calls = scripted.total_calls
    assert refine(TWO_RULES, scripted, run_dir, "--json") == 0
    again = json.loads(capsys.readouterr().out)
    assert scripted.total_calls == calls
    assert again["teacher_calls"] == {"requests": 0, "cached": 2, "reasks": 0}
    assert (run_dir / "refined.pld").read_text(encoding="utf-8") == refined_text


def summary_sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.model
@pytest.mark.parametrize("scripted", ["refine_lower.json"], indirect=True)
def test_malformed_answers_reasked_then_reported(
    student_cache: Path, scripted: GeminiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted.inject("round1", "malformed", "malformed", "malformed")
    run_dir = tmp_path / "run"
    assert refine(THREE_RULES, scripted, run_dir) == 4
    err = capsys.readouterr().err
    assert scripted.calls_for("round1") == 3
    assert "refine round 1" in err
    assert "no valid answer in 3 attempts" in err
    round_entry = next(entry for entry in read_log(run_dir) if entry["event"] == "round")
    assert "no valid answer" in round_entry["teacher_error"]
    assert (run_dir / "refined.pld").is_file()


@pytest.mark.model
@pytest.mark.parametrize("scripted", ["refine_unknown_rule.json"], indirect=True)
def test_unknown_rule_id_reasked(
    student_cache: Path, scripted: GeminiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert refine(THREE_RULES, scripted, run_dir) == 0
    capsys.readouterr()
    assert scripted.calls_for("round1") == 1
    assert scripted.calls_for("corrected") == 1
    reask = scripted.requests[-1].body["contents"][-1]["parts"][0]["text"]
    assert "'OCCUPATION' is not a rule id" in reask
    edits = [entry for entry in read_log(run_dir) if entry["event"] == "edit"]
    assert [entry["edit"]["rule_id"] for entry in edits] == ["WOMAN"]


def test_settle_order_writes_overrides_keeping_prompt() -> None:
    path = FIXTURES / "refine" / "order_only.pld"
    text = path.read_text(encoding="utf-8")
    settled, added = settle_order(text, str(path), "default")
    assert added == [("RELIGION", "JOB")]
    assert "    overrides JOB\n" in settled
    before, after = check_source(text, str(path)), check_source(settled, str(path))
    analysis = analyze(after.ruleset, after.ordered, after.priorities)
    open_kinds = {finding.kind for finding, level in analysis.findings if level in ("warning", "error")}
    assert open_kinds.isdisjoint({"conflict", "order-dependent"})
    prompt = compile_prompt(before.ruleset, before.ordered).text
    assert compile_prompt(after.ruleset, after.ordered).text == prompt
