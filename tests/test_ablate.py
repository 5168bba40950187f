"""Tests of ``pldc ablate``, ``pldc report``, the paired bootstrap, pruning and the HTML report."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from pldc.ablate import (
    Ablation,
    Effect,
    Variant,
    ablate,
    classify,
    compare,
    paired_bootstrap,
    plan_variants,
    without_rules,
)
from pldc.cli import main
from pldc.data import Dataset, Example
from pldc.diff import DefinitionRemoved, OverridesChanged, RuleRemoved, diff_rulesets
from pldc.errors import UsageError
from pldc.evaluate import EvalResult, Prediction
from pldc.metrics import compute_metrics
from pldc.parse import parse, read_source
from pldc.pipeline import CheckedRuleset, check_source, load_ruleset
from pldc.prune import PruneFailed, prunable_rules, prune
from pldc.report import build_document, render_html, render_text

from conftest import FIXTURES, ROOT, run_pldc

LABELS = ["gender", "profession", "race", "religion"]
STEREOSET = ROOT / "rulesets" / "stereoset_domain.pld"
TWO_RULES = FIXTURES / "ablate" / "stereoset_two_rules.pld"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> & "quotes"'


def synthetic_predictions(size: int = 300, accuracy: float = 0.7, seed: int = 1) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    gold = [rng.choice(LABELS) for _ in range(size)]
    predicted = [label if rng.random() < accuracy else rng.choice(LABELS) for label in gold]
    return gold, predicted


def eval_result(gold: list[str], predicted: list[str], seconds: float = 10.0) -> EvalResult:
    predictions = [Prediction(f"ex{i}", g, p, {}) for i, (g, p) in enumerate(zip(gold, predicted, strict=True))]
    return EvalResult("rules", compute_metrics(gold, predicted, LABELS), predictions, seconds, 500, None)


def synthetic_ablation(checked: CheckedRuleset, effects: dict[str, str]) -> Ablation:
    """An ablation of ``checked`` where each rule's removal ``fixes``, ``breaks`` or keeps predictions."""
    gold, full_predicted = synthetic_predictions()
    full = eval_result(gold, full_predicted)
    variants = []
    for variant in plan_variants(checked):
        change = effects.get(variant.name, "same")
        pairs = list(enumerate(zip(gold, full_predicted, strict=True)))
        if change == "breaks":
            after = [p if p != g or i % 3 else LABELS[(LABELS.index(g) + 1) % 4] for i, (g, p) in pairs]
        elif change == "fixes":
            after = [g if p != g and i % 2 else p for i, (g, p) in pairs]
        else:
            after = list(full_predicted)
        variants.append(compare(variant, full, eval_result(gold, after), LABELS, 300, 0))
    return Ablation(full, tuple(variants), 300, 0)


HEADER = {
    "ruleset": "rules.pld",
    "data": "dev.jsonl",
    "framing": "stereoset-domain",
    "model": "synthetic",
    "calibration": "content-free",
    "template": "default",
}


# ---- paired bootstrap --------------------------------------------------------


def test_bootstrap_identical_predictions_zero_interval() -> None:
    gold, predicted = synthetic_predictions()
    macro, per_class = paired_bootstrap(gold, predicted, list(predicted), LABELS, 500, 0)
    assert macro == Effect(0.0, 0.0, 0.0)
    for label in LABELS:
        assert per_class[label] == Effect(0.0, 0.0, 0.0)
    assert classify(macro) == "inert"


def test_bootstrap_rule_that_only_fixes_errors() -> None:
    gold, without = synthetic_predictions()
    # The full ruleset gets half of the variant's errors right and breaks nothing.
    full = [g if p != g and i % 2 else p for i, (g, p) in enumerate(zip(gold, without, strict=True))]
    macro, _ = paired_bootstrap(gold, full, without, LABELS, 500, 0)
    assert macro.delta < 0
    assert macro.high < 0
    assert macro.low <= macro.delta <= macro.high
    assert classify(macro) == "helpful"


def test_bootstrap_point_estimate_matches_metrics() -> None:
    gold, before = synthetic_predictions(seed=2)
    _, after = synthetic_predictions(seed=3)
    macro, per_class = paired_bootstrap(gold, before, after, LABELS, 50, 0)
    expected_before = compute_metrics(gold, before, LABELS)
    expected_after = compute_metrics(gold, after, LABELS)
    assert macro.delta == pytest.approx(expected_after.macro_f1 - expected_before.macro_f1)
    for column, label in enumerate(LABELS):
        expected = expected_after.per_class[column].f1 - expected_before.per_class[column].f1
        assert per_class[label].delta == pytest.approx(expected)


def test_bootstrap_same_seed_same_interval() -> None:
    gold, before = synthetic_predictions(seed=2)
    _, after = synthetic_predictions(seed=3)
    first, _ = paired_bootstrap(gold, before, after, LABELS, 200, 7)
    second, _ = paired_bootstrap(gold, before, after, LABELS, 200, 7)
    other, _ = paired_bootstrap(gold, before, after, LABELS, 200, 8)
    assert first == second
    assert other.delta == first.delta
    assert other != first


def test_bootstrap_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="one entry per example"):
        paired_bootstrap(["race"], ["race", "race"], ["race"], LABELS)


# ---- verdicts and variants -----------------------------------------------------


@pytest.mark.parametrize(
    ("effect", "verdict"),
    [
        (Effect(-0.05, -0.08, -0.01), "helpful"),
        (Effect(0.04, 0.01, 0.07), "harmful"),
        (Effect(-0.01, -0.03, 0.01), "inert"),
        (Effect(0.0, 0.0, 0.0), "inert"),
        (Effect(-0.02, -0.04, 0.0), "inert"),
    ],
)
def test_classify_by_interval(effect: Effect, verdict: str) -> None:
    assert classify(effect) == verdict


def test_plan_variants_rules_then_groups() -> None:
    checked = load_ruleset(STEREOSET)
    variants = plan_variants(checked, groups=True)
    rule_ids = [rule.id.value for rule in checked.ordered]
    assert [v.name for v in variants if v.kind == "rule"] == rule_ids
    groups = {v.name: v.removed for v in variants if v.kind == "group"}
    assert groups["gender"] == ("GEN_FAMILY", "GEN_PERSON", "GEN_REFLEXIVE")
    assert groups["race"] == ("RACE_PEOPLE", "RACE_PLACE")


def test_without_rules_keeps_compiled_order() -> None:
    checked = load_ruleset(STEREOSET)
    reduced = without_rules(checked, ["RACE_PLACE", "GEN_PERSON"])
    expected = [r.id.value for r in checked.ordered if r.id.value not in {"RACE_PLACE", "GEN_PERSON"}]
    assert [r.id.value for r in reduced.ordered] == expected
    assert len(checked.ordered) == 8


class PromptReadingStudent:
    """A stand-in student whose label scores depend on which rule ids the system prompt contains."""

    name = "prompt-reading"
    supports_logprobs = True

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def identity(self) -> dict[str, str]:
        return {"backend": "test", "model": self.name}

    def encode(self, text: str) -> list[int]:
        return [len(word) for word in text.split()]

    def score(
        self, system_prompt: str, examples: Sequence[Example], labels: Sequence[str], *args: object, **kwargs: object
    ) -> list[list[float]]:
        self.prompts.append(system_prompt)
        rows = []
        for number, _ in enumerate(examples):
            # Without REL_NAMED in the prompt, every third example scores religion highest.
            religion = "REL_NAMED" not in system_prompt and number % 3 == 0
            rows.append([1.0 if label == ("religion" if religion else "race") else 0.0 for label in labels])
        return rows


def test_ablate_groups_score_each_prompt_once() -> None:
    checked = load_ruleset(STEREOSET)
    examples = [Example(f"ex{i}", {"sentence": "text"}, LABELS[i % 4]) for i in range(12)]
    student = PromptReadingStudent()
    ablation = ablate(
        checked, Dataset(examples, "generic", "data.jsonl"), student, groups=True, calibrate=False, resamples=50
    )
    names = [(v.variant.kind, v.variant.name) for v in ablation.variants]
    assert len(names) == 8 + 5
    # Three groups contain one rule each, so their prompts equal that rule's variant and are not scored again.
    assert len(student.prompts) == 1 + 8 + 2
    assert "REL_NAMED" in student.prompts[0]
    by_name = {v.variant.name: v for v in ablation.variants}
    assert len(by_name["REL_NAMED"].flips) == 4
    assert by_name["religion_later"].flips == by_name["REL_NAMED"].flips
    assert by_name["PROF_JOB"].flips == ()
    assert by_name["gender"].variant.removed == ("GEN_FAMILY", "GEN_PERSON", "GEN_REFLEXIVE")


def test_flips_list_changed_predictions() -> None:
    gold = ["race", "gender", "religion"]
    full = eval_result(gold, ["race", "race", "religion"])
    variant = eval_result(gold, ["race", "gender", "race"])
    result = compare(Variant("R", "rule", ("R",)), full, variant, LABELS, 20, 0)
    assert [(f.example_id, f.before, f.after) for f in result.flips] == [
        ("ex1", "race", "gender"),
        ("ex2", "religion", "race"),
    ]


# ---- pruning ---------------------------------------------------------------------


def test_prunable_rules_lower_bound_at_least_zero() -> None:
    checked = load_ruleset(STEREOSET)
    ablation = synthetic_ablation(checked, {"REL_FIRST": "breaks", "RACE_PLACE": "fixes"})
    verdicts = {v.variant.name: v.verdict for v in ablation.variants}
    assert verdicts["REL_FIRST"] == "helpful"
    assert verdicts["RACE_PLACE"] == "harmful"
    # Rules whose removal changes nothing have the interval [0, 0] and are pruned as well.
    assert "REL_FIRST" not in prunable_rules(ablation)
    assert "RACE_PLACE" in prunable_rules(ablation)
    assert "GEN_PERSON" in prunable_rules(ablation)


def test_prune_output_checks_and_diff_shows_only_removals(tmp_path: Path) -> None:
    source = read_source(STEREOSET)
    parsed = parse(source, str(STEREOSET))
    pruned = prune(parsed, ["REL_NAMED", "GEN_PERSON", "GEN_REFLEXIVE"])
    out = tmp_path / "pruned.pld"
    out.write_text(pruned.text, encoding="utf-8")
    checked = run_pldc("check", str(out))
    assert checked.returncode == 0, checked.stderr
    changes = diff_rulesets(parsed.ruleset, check_source(pruned.text, str(out)).ruleset).changes
    assert {c.rule_id for c in changes if isinstance(c, RuleRemoved)} == {"REL_NAMED", "GEN_PERSON", "GEN_REFLEXIVE"}
    for change in changes:
        assert isinstance(change, RuleRemoved | DefinitionRemoved | OverridesChanged), change
        if isinstance(change, OverridesChanged):
            assert set(change.new) < set(change.old)
        if isinstance(change, DefinitionRemoved):
            assert change.definition in ("group", "case")
    cli_diff = run_pldc("diff", str(STEREOSET), str(out))
    assert cli_diff.returncode == 0, cli_diff.stderr
    # Top-level "+ " lines would be added rules or definitions; edited overrides are indented.
    assert [line for line in cli_diff.stdout.splitlines() if line.startswith("+ ")] == []
    assert "- rule REL_NAMED" in cli_diff.stdout


def test_prune_reports_what_it_removed() -> None:
    parsed = parse(read_source(STEREOSET), str(STEREOSET))
    removals = {(r.kind, r.name): r.reason for r in prune(parsed, ["REL_NAMED"]).removals}
    assert ("rule", "REL_NAMED") in removals
    assert "REL_NAMED" in removals[("overrides", "RACE_PEOPLE")]
    assert removals[("group", "religion_later")] == "all of its rules were pruned"
    assert "REL_NAMED" in removals[("case", "muslim_teacher_is_religion")]


def test_prune_drops_case_that_fails_without_rule() -> None:
    parsed = parse(read_source(TWO_RULES), str(TWO_RULES))
    pruned = prune(parsed, ["JOB"])
    reasons = {(r.kind, r.name): r.reason for r in pruned.removals}
    assert "expected profession, got race" in reasons[("case", "nurse_is_profession")]
    assert ("overrides", "RELIGION") in reasons
    assert "case nurse_is_profession" not in pruned.text
    assert check_source(pruned.text, "pruned.pld").ok


def test_prune_without_removals_is_canonical_original() -> None:
    source = read_source(STEREOSET)
    pruned = prune(parse(source, str(STEREOSET)), [])
    assert pruned.text == source
    assert pruned.removals == ()


def test_prune_unknown_rule_raises() -> None:
    parsed = parse(read_source(STEREOSET), str(STEREOSET))
    with pytest.raises(PruneFailed, match="NO_SUCH_RULE"):
        prune(parsed, ["NO_SUCH_RULE"])


# ---- reports ---------------------------------------------------------------------


def hostile_checked() -> CheckedRuleset:
    source = read_source(TWO_RULES).replace('"A religion is named"', json.dumps(HOSTILE))
    source = source.replace('"A job title marks profession."', json.dumps("</td></tr></table>" + HOSTILE))
    checked = check_source(source, "hostile.pld")
    assert checked.ok, checked.diagnostics
    return checked


def test_html_escapes_hostile_rule_text() -> None:
    checked = hostile_checked()
    document = build_document(synthetic_ablation(checked, {}), checked, HEADER)
    page = render_html(document)
    assert "<script>" not in page
    assert "<img src=x" not in page
    assert "</td></tr></table><script" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "&amp; &#34;quotes&#34;" in page


def test_html_is_self_contained() -> None:
    checked = load_ruleset(TWO_RULES)
    page = render_html(build_document(synthetic_ablation(checked, {"JOB": "breaks"}), checked, HEADER))
    assert "default-src 'none'" in page
    assert "http://" not in page
    assert "https://" not in page
    assert page.count('src="data:image/png;base64,') == 4
    assert "<script" not in page


def test_text_table_lists_every_variant() -> None:
    checked = load_ruleset(STEREOSET)
    text = render_text(build_document(synthetic_ablation(checked, {"REL_FIRST": "breaks"}), checked, HEADER))
    for rule in checked.ordered:
        assert f"\n{rule.id.value} " in text
    assert "helpful" in text
    assert "[+0.0000, +0.0000]" in text


def test_report_command_renders_saved_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checked = load_ruleset(TWO_RULES)
    saved = tmp_path / "ablation.json"
    saved.write_text(json.dumps(build_document(synthetic_ablation(checked, {}), checked, HEADER)), encoding="utf-8")
    html = tmp_path / "report.html"
    assert main(["report", str(saved), "-o", str(html)]) == 0
    assert html.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert main(["report", str(saved), "--format", "text"]) == 0
    assert "left out" in capsys.readouterr().out


def test_html_without_matplotlib_is_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checked = load_ruleset(TWO_RULES)
    saved = tmp_path / "ablation.json"
    saved.write_text(json.dumps(build_document(synthetic_ablation(checked, {}), checked, HEADER)), encoding="utf-8")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "matplotlib" else find_spec(name, *args)
    )
    assert main(["report", str(saved), "-o", str(tmp_path / "report.html")]) == 2
    assert "pip install 'pldc[report]'" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()
    assert main(["report", str(saved), "--format", "text"]) == 0


def test_report_rejects_other_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"results": []}', encoding="utf-8")
    assert main(["report", str(other)]) == 3
    assert "not a `pldc ablate --save` document" in capsys.readouterr().err


def test_ablate_usage_errors_before_scoring(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "dev.jsonl"
    data.write_text("", encoding="utf-8")
    assert main(["ablate", str(TWO_RULES), "--data", str(data), "--bootstrap", "0"]) == 2
    assert "--bootstrap must be at least 1" in capsys.readouterr().err
    missing = tmp_path / "missing" / "out.html"
    assert main(["ablate", str(TWO_RULES), "--data", str(data), "--html", str(missing)]) == 3
    assert "does not exist" in capsys.readouterr().err
    assert main(["ablate", str(TWO_RULES), "--data", str(data), "--prune", str(TWO_RULES)]) == 2


def test_ablate_command_writes_outputs(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command's outputs, with scoring replaced by a synthetic ablation (no model)."""
    import pldc.ablate
    import pldc.student

    class FakeStudent:
        name = "synthetic"

    def fake_ablate(checked: CheckedRuleset, *args: object, **kwargs: object) -> Ablation:
        return synthetic_ablation(checked, {"JOB": "fixes", "RELIGION": "breaks"})

    monkeypatch.setattr(pldc.student, "load_student", lambda *args, **kwargs: FakeStudent())
    monkeypatch.setattr(pldc.ablate, "ablate", fake_ablate)
    saved, html, pruned = tmp_path / "a.json", tmp_path / "a.html", tmp_path / "a.pld"
    data = data_dir / "stereoset" / "dev.jsonl"
    arguments = ["--data", str(data), "--limit", "5", "--save", str(saved), "--html", str(html)]
    assert main(["ablate", str(TWO_RULES), *arguments, "--prune", str(pruned)]) == 0
    out = capsys.readouterr().out
    assert "JOB" in out
    assert "removed rule JOB: pruned" in out
    document = json.loads(saved.read_text(encoding="utf-8"))
    assert document["prune"]["removed_rules"] == ["JOB"]
    assert document["sample"] is None
    assert "Pruned ruleset" in html.read_text(encoding="utf-8")
    assert check_source(pruned.read_text(encoding="utf-8"), str(pruned)).ok


def test_report_screenshot_in_chromium(tmp_path: Path) -> None:
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).is_file():
        message = f"{chromium} not found; run scripts/setup.sh as root, or set CHROMIUM to a Chromium binary"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    checked = hostile_checked()
    page = tmp_path / "report.html"
    page.write_text(render_html(build_document(synthetic_ablation(checked, {"JOB": "fixes"}), checked, HEADER)))
    image = tmp_path / "report.png"
    script = ROOT / "scripts" / "screenshot.sh"
    done = subprocess.run(
        ["bash", str(script), str(page), str(image), "1000", "1500"], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    assert image.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert image.stat().st_size > 20_000


# ---- a real run ------------------------------------------------------------------


@pytest.mark.model
def test_ablate_small_stereoset_run(data_dir: Path, tmp_path: Path) -> None:
    saved = tmp_path / "ablation.json"
    pruned = tmp_path / "pruned.pld"
    html = tmp_path / "report.html"
    done = run_pldc(
        "ablate",
        str(TWO_RULES),
        "--data",
        str(data_dir / "stereoset" / "dev.jsonl"),
        "--limit",
        "20",
        "--bootstrap",
        "200",
        # Calibration encodes the whole prompt once more per variant, a large share of a 20-example run.
        "--no-calibration",
        "--save",
        str(saved),
        "--html",
        str(html),
        "--prune",
        str(pruned),
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(saved.read_text(encoding="utf-8"))
    assert document["full"]["examples"] == 20
    assert [v["name"] for v in document["variants"]] == ["RELIGION", "JOB"]
    for variant in document["variants"]:
        effect = variant["macro_f1"]
        assert effect["low"] <= effect["delta"] <= effect["high"]
        assert variant["verdict"] in ("helpful", "harmful", "inert")
        assert variant["result"]["examples"] == 20
    assert "pruned ruleset written to" in done.stdout
    assert document["prune"]["path"] == str(pruned)
    assert run_pldc("check", str(pruned)).returncode == 0
    assert html.read_text(encoding="utf-8").count("data:image/png;base64,") == 4


def test_sample_seeded_and_in_file_order() -> None:
    from pldc.ablate_cli import _sample

    examples = [Example(f"ex{i}", {"sentence": "s"}, LABELS[i % 4]) for i in range(50)]
    dataset = Dataset(examples, "generic", "data.jsonl")
    first = _sample(dataset, 10, 3)
    ids = [e.id for e in first.examples]
    assert len(ids) == 10
    assert ids == sorted(ids, key=lambda name: int(name[2:]))
    assert ids == [e.id for e in _sample(dataset, 10, 3).examples]
    assert ids != [e.id for e in _sample(dataset, 10, 4).examples]
    assert sum(first.label_counts.values()) == 10
    with pytest.raises(UsageError, match="exceeds the 50 examples"):
        _sample(dataset, 51, 0)
