"""``pldc distill build --merge teacher --resolve teacher``: the teacher merges clusters and decides findings.

The merge answers are recorded in ``fixtures/gemini/merge_reviews.json``, one per cluster of the
sentiment fixture, and served by the local Gemini-protocol server or written into batch result
files. The resolve answers come from a fixed policy applied to the exported requests, so that
every round of findings gets an answer whatever the rule ids are.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gemini_server import GeminiServer, load_replies, serve

from pldc.arbitrate import Decision, parse_decision
from pldc.gemini_batch import BatchRequestLine
from pldc.teacher import RejectedAnswer

from conftest import FIXTURES, ROOT, run_pldc

DISTILL = FIXTURES / "distill"
TASK = DISTILL / "sentiment_task.pld"
DATA = DISTILL / "reviews_train.jsonl"
MERGE_FIXTURE = FIXTURES / "gemini" / "merge_reviews.json"
MERGED_TITLES = {
    "Design praise": ["t07", "t08", "t09", "t10", "t11"],
    "Recommends or would buy again": ["t12", "t13", "t14", "t15"],
    "Defect soon after purchase": ["t17", "t18", "t19", "t20", "t21", "t22"],
    "Support did not help": ["t23", "t24", "t25", "t26"],
}


def run_dir(base: Path, name: str) -> Path:
    directory = base / name
    directory.mkdir()
    shutil.copy(DISTILL / "extract_sentiment.jsonl", directory / "extract.jsonl")
    return directory


def build_args(directory: Path, *extra: str) -> list[str]:
    # The recorded merge answers are for the clusters that the knee of the k-distance curve gives.
    return ["distill", "build", str(TASK), "--run-dir", str(directory), "--data", str(DATA), "--eps", "knee", *extra]


def run_build(directory: Path, cache: Path, *extra: str, server: GeminiServer | None = None) -> tuple[int, str, str]:
    env = dict(os.environ, GEMINI_API_KEY="test-key", PLDC_CALL_CACHE=str(cache), PYTHONPATH=str(ROOT))
    if server is not None:
        env["GOOGLE_GEMINI_BASE_URL"] = server.url
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "pldc", *build_args(directory, *extra)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    return result.returncode, result.stdout, result.stderr


def rules_of(path: Path) -> dict[str, dict[str, Any]]:
    """Read the rules of a built ruleset as JSON, keyed by title."""
    from pldc.pipeline import load_ruleset

    ruleset = load_ruleset(path).ruleset
    return {
        rule.title: {
            "id": rule.id.value,
            "examples": list(rule.examples),
            "overrides": [name.value for name in rule.overrides],
            "allows": {allowance.kind.value: allowance.reason for allowance in rule.allows},
            "support": rule.support,
        }
        for rule in ruleset.rules
        if rule.title is not None
    }


def answer_for(user_text: str) -> str:
    """Return the recorded merge answer whose match occurs in a request's user turn."""
    for reply in load_replies(MERGE_FIXTURE):
        if reply.match in user_text:
            return str(reply.response["candidates"][0]["content"]["parts"][0]["text"])
    raise AssertionError(f"no recorded merge answer for: {user_text[:80]!r}")


def result_line(key: str, text: str) -> str:
    response = {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}]}
    return json.dumps({"key": key, "response": response})


def exported(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def user_text(line: dict[str, Any]) -> str:
    return str(line["request"]["contents"][0]["parts"][0]["text"])


# ---- merge --------------------------------------------------------------------


def test_merge_keeps_member_examples(tmp_path: Path) -> None:
    with serve(MERGE_FIXTURE) as server:
        code, stdout, stderr = run_build(
            run_dir(tmp_path, "live"), tmp_path / "calls.sqlite", "--merge", "teacher", server=server
        )
        assert code == 0, stderr
        assert server.total_calls == 6
        assert "teacher gemini-3-flash-preview: 6 requests, 0 cached answers" in stdout
    output = tmp_path / "live" / "ruleset.pld"
    text = output.read_text(encoding="utf-8")
    assert 'meta merge "gemini-3-flash-preview (templates/merge.j2)"' in text
    # A feature that only the teacher's merged rule defines is declared.
    assert "feature value_for_money: one of [good, poor, not_mentioned]" in text
    rules = rules_of(output)
    for title, members in MERGED_TITLES.items():
        assert set(members) <= set(rules[title]["examples"]), title
    check = run_pldc("check", str(output))
    assert check.returncode == 0, check.stdout + check.stderr
    manifest = json.loads((tmp_path / "live" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["parameters"]["merge"]["teacher"] == "gemini-3-flash-preview"
    assert "merge" in manifest["inputs"]["templates"]


def test_merge_rerun_asks_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "calls.sqlite"
    with serve(MERGE_FIXTURE) as server:
        assert run_build(run_dir(tmp_path, "first"), cache, "--merge", "teacher", server=server)[0] == 0
        calls = server.total_calls
        code, stdout, stderr = run_build(run_dir(tmp_path, "second"), cache, "--merge", "teacher", server=server)
        assert code == 0, stderr
        assert server.total_calls == calls
        assert "0 requests, 6 cached answers" in stdout
    first = (tmp_path / "first" / "ruleset.pld").read_bytes()
    assert first == (tmp_path / "second" / "ruleset.pld").read_bytes()


def test_merge_batch_matches_live_build(tmp_path: Path) -> None:
    with serve(MERGE_FIXTURE) as server:
        assert (
            run_build(run_dir(tmp_path, "live"), tmp_path / "live.sqlite", "--merge", "teacher", server=server)[0] == 0
        )
    directory = run_dir(tmp_path, "batch")
    cache = tmp_path / "batch.sqlite"
    requests = tmp_path / "requests.jsonl"
    code, stdout, stderr = run_build(directory, cache, "--merge", "teacher", "--export-batch", str(requests))
    assert code == 0, stderr
    assert "wrote 6 batch requests of the merge stage" in stdout
    assert not (directory / "ruleset.pld").exists()
    lines = exported(requests)
    for line in lines:
        BatchRequestLine.model_validate(line)
        assert line["key"].startswith("merge c")
    results = tmp_path / "results.jsonl"
    rows = [result_line(line["key"], answer_for(user_text(line))) for line in lines]
    rows.append(result_line("merge c999@0000000000000000", answer_for(user_text(lines[0]))))
    results.write_text("\n".join(rows) + "\n")

    code, stdout, stderr = run_build(directory, cache, "--merge", "teacher", "--import-batch", str(results))
    assert code == 0, stderr
    unused = f"pldc: warning: {results}:7: key 'merge c999@0000000000000000': answers no request of this run"
    assert unused in stderr
    assert (directory / "ruleset.pld").read_bytes() == (tmp_path / "live" / "ruleset.pld").read_bytes()


def test_merge_import_reports_bad_lines(tmp_path: Path) -> None:
    directory = run_dir(tmp_path, "batch")
    cache = tmp_path / "calls.sqlite"
    requests = tmp_path / "requests.jsonl"
    assert run_build(directory, cache, "--merge", "teacher", "--export-batch", str(requests))[0] == 0
    lines = exported(requests)
    failed, invalid, missing = lines[0]["key"], lines[1]["key"], lines[2]["key"]
    rows = [
        json.dumps({"key": failed, "error": {"code": 500, "status": "INTERNAL", "message": "backend error"}}),
        result_line(invalid, answer_for(user_text(lines[1])).replace('"label": "positive"', '"label": "negative"')),
        *(result_line(line["key"], answer_for(user_text(line))) for line in lines[3:]),
        result_line("merge c999@0000000000000000", answer_for(user_text(lines[3]))),
    ]
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(rows) + "\n")

    code, _, stderr = run_build(directory, cache, "--merge", "teacher", "--import-batch", str(results))
    assert code == 4
    assert f"{results}:1: key {failed!r}: request failed (500 INTERNAL): backend error" in stderr
    assert f"{results}:2: key {invalid!r}: invalid answer: rule.label" in stderr
    assert "gave no valid merge for clusters" in stderr
    assert "Traceback" not in stderr

    # Answers that were valid stay in the cache; the failed, invalid and missing requests are exported again.
    again = tmp_path / "again.jsonl"
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text("\n".join(rows[2:-1]) + "\n")
    code, _, stderr = run_build(
        directory, cache, "--merge", "teacher", "--import-batch", str(fixed), "--export-batch", str(again)
    )
    assert code == 0, stderr
    assert sorted(line["key"] for line in exported(again)) == sorted([failed, invalid, missing])

    code, _, stderr = run_build(directory, cache, "--merge", "teacher", "--import-batch", str(results))
    assert code == 4
    assert "Traceback" not in stderr


def test_import_alone_counts_waiting_requests(tmp_path: Path) -> None:
    directory = run_dir(tmp_path, "batch")
    cache = tmp_path / "calls.sqlite"
    requests = tmp_path / "requests.jsonl"
    assert run_build(directory, cache, "--merge", "teacher", "--export-batch", str(requests))[0] == 0
    lines = exported(requests)
    results = tmp_path / "results.jsonl"
    results.write_text("".join(result_line(line["key"], answer_for(user_text(line))) + "\n" for line in lines[1:]))
    code, _, stderr = run_build(directory, cache, "--merge", "teacher", "--import-batch", str(results))
    assert code == 4
    assert "1 teacher requests of the merge stage have no answer in the imported results" in stderr


def test_batch_options_need_teacher_stage(tmp_path: Path) -> None:
    code, _, stderr = run_build(run_dir(tmp_path, "run"), tmp_path / "c.sqlite", "--export-batch", "x.jsonl")
    assert code == 2
    assert "--export-batch and --import-batch need --merge teacher or --resolve teacher" in stderr


# ---- resolve --------------------------------------------------------------------


def policy(key: str) -> Decision:
    """Drop the first of two redundant rules, let a negative rule win a conflict, and allow the rest."""
    kind, first, second = key.split("@")[0].split(" ")[1:]
    if kind in ("duplicate", "subsumed"):
        return Decision(reason="it adds nothing to the other rule", action="drop", rule=first)
    negative = [rule for rule in (first, second) if rule.startswith("negative")]
    if negative and len(negative) < 2:
        return Decision(reason="a reported problem outweighs praise", action="override", rule=negative[0])
    return Decision(reason="both rules conclude the same label", action="allow", rule=first)


def resolve_by_batch(
    tmp_path: Path, directory: Path, cache: Path, decide: Callable[[str], Decision]
) -> tuple[int, str, list[dict[str, Any]]]:
    """Export, answer and import resolve requests until the build finishes; return the rounds' requests."""
    merged = tmp_path / "merge_results.jsonl"
    sent: list[dict[str, Any]] = []
    imports: list[str] = []
    for round_number in range(1, 10):
        requests = tmp_path / f"requests_{round_number}.jsonl"
        code, stdout, stderr = run_build(
            directory, cache, "--merge", "teacher", "--resolve", "teacher", *imports, "--export-batch", str(requests)
        )
        assert code == 0, stderr
        if stdout.startswith("wrote " + str(directory)) or "ruleset.pld" in stdout:
            return round_number, stdout, sent
        lines = exported(requests)
        if "of the merge stage" in stdout:
            merged.write_text("".join(result_line(line["key"], answer_for(user_text(line))) + "\n" for line in lines))
            imports += ["--import-batch", str(merged)]
            continue
        sent.extend(lines)
        results = tmp_path / f"results_{round_number}.jsonl"
        results.write_text(
            "".join(result_line(line["key"], decide(line["key"]).model_dump_json()) + "\n" for line in lines)
        )
        imports += ["--import-batch", str(results)]
    raise AssertionError("the build did not finish in 9 rounds")


def test_resolve_applies_drop_and_override(tmp_path: Path) -> None:
    directory = run_dir(tmp_path, "run")
    rounds, stdout, sent = resolve_by_batch(tmp_path, directory, tmp_path / "calls.sqlite", policy)
    assert rounds > 2
    assert "teacher decisions" in stdout
    output = directory / "ruleset.pld"
    check = run_pldc("check", "--strict", str(output))
    assert check.returncode == 0, check.stdout + check.stderr
    text = output.read_text(encoding="utf-8")
    assert 'meta resolve "gemini-3-flash-preview (templates/resolve.j2)"' in text
    # Each request shows the finding, its witness and both rules.
    conflict = next(line for line in sent if " order-dependent " in line["key"])
    assert "An input on which it shows:" in user_text(conflict)
    assert user_text(conflict).count("\nwhen ") == 2

    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    decisions = manifest["resolution"]["decisions"]
    assert {decision["action"] for decision in decisions} == {"drop", "override"}
    for decision in decisions:
        assert decision["applied"] is True
        assert decision["reason"] == policy("resolve " + decision["finding"]).reason
    drops = [decision for decision in decisions if decision["action"] == "drop"]
    assert len(manifest["resolution"]["merged"]) >= len(drops)
    rules = rules_of(output)
    negative = [rule for rule in rules.values() if rule["id"].startswith("negative")]
    positive_ids = {rule["id"] for rule in rules.values() if rule["id"].startswith("positive")}
    # The policy lets the negative rule win every conflict, so only negative rules carry overrides.
    assert any(set(rule["overrides"]) & positive_ids for rule in negative)
    assert all(not rule["overrides"] for rule in rules.values() if rule["id"] in positive_ids)


def test_resolve_allow_writes_reason(tmp_path: Path) -> None:
    def allow_all(key: str) -> Decision:
        first = key.split("@")[0].split(" ")[2]
        return Decision(reason="the overlap is intended", action="allow", rule=first)

    directory = run_dir(tmp_path, "run")
    resolve_by_batch(tmp_path, directory, tmp_path / "calls.sqlite", allow_all)
    text = (directory / "ruleset.pld").read_text(encoding="utf-8")
    assert 'allow duplicate "teacher: the overlap is intended"' in text
    assert 'allow order-dependent "teacher: the overlap is intended"' in text
    assert run_pldc("check", "--strict", str(directory / "ruleset.pld")).returncode == 0


def test_decision_outside_finding_rejected() -> None:
    text = json.dumps({"reason": "r", "action": "drop", "rule": "positive_9"})
    with pytest.raises(RejectedAnswer, match="not one of the finding's rules positive_1, negative_1"):
        parse_decision(text, ["positive_1", "negative_1"])
    with pytest.raises(RejectedAnswer, match="action"):
        parse_decision(json.dumps({"reason": "r", "action": "merge", "rule": "positive_1"}), ["positive_1"])
