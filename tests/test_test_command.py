"""`pldc test`: run the cases of each file and report which rules they exercise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pldc.workflow_cli import run_file_cases

from conftest import FIXTURES, ROOT, run_pldc

DIFF = FIXTURES / "diff"
BASE = DIFF / "base.old.pld"
FAILING = FIXTURES / "malformed" / "case_fails.pld"


def test_coverage_lists_uncovered_rules() -> None:
    report = run_file_cases(BASE)
    assert report.rules == ("P1", "P2", "N1", "N2")
    assert report.covered == ("P1", "N1")
    assert report.uncovered == ("P2", "N2")


def test_each_case_records_deciding_rule() -> None:
    report = run_file_cases(BASE)
    assert [(c.name, c.label, c.rule) for c in report.cases] == [
        ("praise_warm", "positive", "P1"),
        ("complaint", "negative", "N1"),
    ]
    assert all(c.passed for c in report.cases)


def test_default_decision_covers_no_rule(tmp_path: Path) -> None:
    path = tmp_path / "default.pld"
    source = (DIFF / "sentiment.pld").read_text(encoding="utf-8")
    path.write_text(source + "\ncase nothing {\n    given not praises\n    expect negative\n}\n", encoding="utf-8")
    report = run_file_cases(path)
    assert report.cases[-1].rule is None
    assert report.cases[-1].label == "negative"
    assert report.covered == ("P1",)


def test_failing_case_still_counts_coverage() -> None:
    report = run_file_cases(FAILING)
    assert report.failed == 1
    assert report.cases[0].failures[0].code == "E200"
    assert report.covered == ("R1",)


def test_file_with_errors_runs_no_cases() -> None:
    report = run_file_cases(FIXTURES / "malformed" / "undefined_label.pld")
    assert report.cases == ()
    assert [e.code for e in report.errors] == ["E102"]
    assert not report.ok


def test_cli_text_report() -> None:
    result = run_pldc("test", str(BASE))
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        f"{BASE}: 2 of 2 cases passed; coverage 2 of 4 rules (50.0%)",
        "  uncovered: P2, N2",
    ]


def test_cli_total_over_files() -> None:
    result = run_pldc("test", str(BASE), str(DIFF / "sentiment.pld"))
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1] == "total: 3 of 3 cases passed; coverage 3 of 5 rules (60.0%)"


def test_cli_failing_case_exits_1() -> None:
    result = run_pldc("test", str(FAILING))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{FAILING}:17:12: error[E200]: case c1: expected no, got yes from rule R1")
    assert result.stdout == f"{FAILING}: 0 of 1 cases passed; coverage 1 of 1 rules (100.0%)\n"


@pytest.mark.parametrize(("threshold", "code"), [("50", 0), ("49.9", 0), ("50.1", 1), ("100", 1)])
def test_cli_fail_under(threshold: str, code: int) -> None:
    result = run_pldc("test", "--fail-under", threshold, str(BASE))
    assert result.returncode == code


def test_cli_fail_under_message() -> None:
    result = run_pldc("test", "--fail-under", "80", str(BASE))
    assert result.stderr == "pldc: rule coverage 50.0% is below --fail-under 80%\n"


@pytest.mark.parametrize("threshold", ["101", "-1", "half"])
def test_cli_invalid_fail_under_is_usage_error(threshold: str) -> None:
    result = run_pldc("test", "--fail-under", threshold, str(BASE))
    assert result.returncode == 2
    assert "argument --fail-under: invalid percentage" in result.stderr


def test_cli_missing_file_exits_3() -> None:
    result = run_pldc("test", "missing.pld", str(BASE))
    assert result.returncode == 3
    assert "pldc: error: missing.pld: file not found" in result.stderr
    assert f"{BASE}: 2 of 2 cases passed" in result.stdout


def test_cli_file_with_errors_exits_1() -> None:
    path = FIXTURES / "malformed" / "undefined_label.pld"
    result = run_pldc("test", str(path))
    assert result.returncode == 1
    assert f"{path}:12:10: error[E102]: undefined label 'maybe'" in result.stderr
    assert f"{path}: cases not run, the file has errors" in result.stderr


def test_cli_syntax_error_exits_1() -> None:
    path = DIFF / "syntax_error.pld"
    result = run_pldc("test", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{path}:12:10: error[E001]")
    assert "Traceback" not in result.stderr


def test_cli_json_report() -> None:
    result = run_pldc("test", "--format", "json", str(BASE))
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["coverage"] == {"rules": 4, "covered": 2, "percent": 50.0, "uncovered": [f"{BASE}:P2", f"{BASE}:N2"]}
    case = report["files"][0]["cases"][0]
    assert case == {"name": "praise_warm", "passed": True, "label": "positive", "rule": "P1", "diagnostics": []}


def test_shipped_rulesets_pass() -> None:
    paths = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "rulesets").glob("*.pld"))
    result = run_pldc("test", *paths)
    assert result.returncode == 0, result.stderr
