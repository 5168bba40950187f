"""Every malformed fixture produces exactly its expected diagnostics, and no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pldc.errors import DiagnosticError
from pldc.pipeline import check_file

from conftest import FIXTURES, run_pldc

MALFORMED = sorted((FIXTURES / "malformed").glob("*.pld"))


def _expected(path: Path) -> list[str]:
    return path.with_suffix(".expected").read_text(encoding="utf-8").splitlines()


def _actual(path: Path) -> list[str]:
    try:
        diagnostics = check_file(path).diagnostics
    except DiagnosticError as error:
        diagnostics = error.diagnostics
    return [f"{d.span.line}:{d.span.column} {d.code} {d.message}" for d in diagnostics]


def test_enough_malformed_fixtures() -> None:
    assert len(MALFORMED) >= 15


@pytest.mark.parametrize("path", MALFORMED, ids=lambda p: p.stem)
def test_malformed_file_diagnostics(path: Path) -> None:
    assert _actual(path) == _expected(path)


def test_cli_renders_file_line_column_and_caret() -> None:
    path = FIXTURES / "malformed" / "undefined_label.pld"
    result = run_pldc("check", str(path))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"{path}:12:10: error[E102]: undefined label 'maybe'"
    assert lines[1] == "  12 |     then maybe"
    assert lines[2] == "     |          ^^^^^"
    assert "Traceback" not in result.stderr


def test_cli_reports_all_errors_of_all_files() -> None:
    paths = [str(FIXTURES / "malformed" / n) for n in ("many_errors_in_one_file.pld", "missing_task.pld")]
    result = run_pldc("check", "--format", "json", *paths)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    codes = [[d["code"] for d in f["diagnostics"]] for f in report["files"]]
    assert codes == [["E106", "E100", "E101", "E102", "E103"], ["E107"]]


def test_no_malformed_fixture_prints_traceback() -> None:
    result = run_pldc("check", *map(str, MALFORMED))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.count("error[") >= len(MALFORMED)


def test_missing_file_is_input_error() -> None:
    result = run_pldc("check", "no/such/file.pld")
    assert result.returncode == 3
    assert result.stderr.strip() == "pldc: error: no/such/file.pld: file not found"


def test_directory_is_input_error(tmp_path: Path) -> None:
    result = run_pldc("compile", str(tmp_path))
    assert result.returncode == 3
    assert "is a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_utf8_is_input_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.pld"
    path.write_bytes("pld 1.0\n# caf\xe9\n".encode("latin-1"))
    result = run_pldc("check", str(path))
    assert result.returncode == 3
    assert "not valid UTF-8 at byte 13" in result.stderr


def test_valid_fixture_checks_clean() -> None:
    result = run_pldc("check", str(FIXTURES / "valid" / "minimal.pld"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok (1 rules, 1 cases passed, 1 allowed finding)")
