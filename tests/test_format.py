"""The formatter: canonical layout, comments kept, idempotent, meaning unchanged."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pldc import ast
from pldc.format import format_source
from pldc.parse import parse

from conftest import FIXTURES, run_pldc
from rulesets import messy_source, rulesets

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(rulesets(), st.integers(0, 10**6))
def test_format_preserves_meaning(ruleset: ast.Ruleset, seed: int) -> None:
    source = messy_source(ruleset, seed)
    original = parse(source, "messy.pld").ruleset
    assert original == ruleset
    formatted = format_source(parse(source, "messy.pld"))
    assert parse(formatted, "formatted.pld").ruleset == original


@PROPERTY_SETTINGS
@given(rulesets(), st.integers(0, 10**6))
def test_format_is_idempotent(ruleset: ast.Ruleset, seed: int) -> None:
    once = format_source(parse(messy_source(ruleset, seed), "messy.pld"))
    twice = format_source(parse(once, "once.pld"))
    assert twice == once


@PROPERTY_SETTINGS
@given(rulesets(), st.integers(0, 10**6))
def test_format_keeps_every_comment(ruleset: ast.Ruleset, seed: int) -> None:
    source = messy_source(ruleset, seed)
    before = [c.text for c in parse(source, "messy.pld").comments]
    after = [c.text for c in parse(format_source(parse(source, "messy.pld")), "formatted.pld").comments]
    assert after == before


def test_format_canonical_layout(tmp_path: Path) -> None:
    messy = (
        'pld 1.0\n# lead\ntask t{input x "X" label a "A"   label b "B"\ndefault a}\n'
        'feature f : bool "F"\nrule R1 "one" {then b when f   # why\n}\n'
    )
    expected = (
        'pld 1.0\n\n# lead\ntask t {\n    input x "X"\n    label a "A"\n    label b "B"\n    default a\n}\n\n'
        'feature f: bool "F"\n\nrule R1 "one" {  # why\n    when f\n    then b\n}\n'
    )
    assert format_source(parse(messy, "m.pld")) == expected


def test_format_multiline_string_round_trip() -> None:
    source = (
        'pld 1.0\n\ntask t {\n    description """\n        line one\n          indented\n\n'
        '        after blank\n        """\n}\n'
    )
    parsed = parse(source, "m.pld")
    assert parsed.ruleset.task is not None
    assert parsed.ruleset.task.description == "line one\n  indented\n\nafter blank"
    assert format_source(parsed) == source


def test_fmt_check_flags_unformatted_file(tmp_path: Path) -> None:
    path = tmp_path / "x.pld"
    path.write_text((FIXTURES / "valid" / "minimal.pld").read_text().replace("    when", "  when"), encoding="utf-8")
    assert run_pldc("fmt", "--check", str(path)).returncode == 1
    assert run_pldc("fmt", str(path)).returncode == 0
    assert run_pldc("fmt", "--check", str(path)).returncode == 0
    assert path.read_text() == (FIXTURES / "valid" / "minimal.pld").read_text()


def test_fmt_reports_syntax_error_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "bad.pld"
    path.write_text("pld 1.0\ntask {\n", encoding="utf-8")
    result = run_pldc("fmt", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{path}:2:6: error[E001]")
    assert path.read_text() == "pld 1.0\ntask {\n"
