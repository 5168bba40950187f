"""Compiling rulesets into prompts: order, determinism, literal rule text, source maps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pldc.compile import TemplateFailed, compile_prompt
from pldc.errors import InputError
from pldc.parse import parse
from pldc.pipeline import check_source, load_ruleset

from conftest import FIXTURES, ROOT, run_pldc

SHIPPED = sorted((ROOT / "rulesets").glob("*.pld"))


def _compile(source: str, template: str = "default") -> tuple[str, list[str]]:
    checked = check_source(source, "t.pld")
    assert checked.diagnostics == []
    prompt = compile_prompt(checked.ruleset, checked.ordered, template)
    return prompt.text, list(prompt.order)


ORDER_SOURCE = """pld 1.0
task t {{
    input x "X"
    label a "A"
    label b "B"
    default a
    hit {hit}
}}
feature f: bool "F"
rule R1 "one" {{ when f then a }}
rule R2 "two" {{ when f then b priority 5 }}
rule R3 "three" {{ when not f then b overrides R2 }}
rule R4 "four" {{ when f then a priority 5 }}
"""


@pytest.mark.parametrize("hit", ["first", "priority"])
def test_order_priority_then_overrides_then_file(hit: str) -> None:
    _, order = _compile(ORDER_SOURCE.format(hit=hit))
    assert order == ["R3", "R2", "R4", "R1"]


def test_shipped_rulesets_compile_byte_identical() -> None:
    for path in SHIPPED:
        first = run_pldc("compile", str(path))
        second = run_pldc("compile", str(path))
        assert first.returncode == 0, first.stderr
        assert first.stdout == second.stdout


def test_stereoset_prompt_matches_golden_file() -> None:
    # Scores depend on every byte of the prompt, down to blank lines, so the default template's
    # output for a shipped ruleset is pinned.
    result = run_pldc("compile", str(ROOT / "rulesets" / "stereoset_domain.pld"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (FIXTURES / "prompts" / "stereoset_domain.txt").read_text(encoding="utf-8")


def test_contract_nli_prompt_contains_every_rule_id() -> None:
    checked = load_ruleset(ROOT / "rulesets" / "contract_nli.pld")
    text = compile_prompt(checked.ruleset, checked.ordered).text
    for rule in checked.ruleset.rules:
        assert f"[{rule.id.value}]" in text


def test_rule_text_is_never_rendered_as_template() -> None:
    checked = load_ruleset(FIXTURES / "valid" / "hostile_text.pld")
    text = compile_prompt(checked.ruleset, checked.ordered).text
    assert "{{ 7*7 }}" in text
    assert "49" not in text
    assert "{% include 'secret.txt' %}" in text
    assert "{{ config }} ünïcödé ✓" in text
    assert "{# not a comment #}" in text
    assert "{%- if true %}x{% endif %}" in text


def test_sourcemap_covers_each_rule() -> None:
    path = ROOT / "rulesets" / "contract_nli.pld"
    checked = load_ruleset(path)
    prompt = compile_prompt(checked.ruleset, checked.ordered)
    lines = prompt.text.split("\n")
    mapped = {r.rule: r for r in prompt.regions if r.kind == "rule"}
    assert sorted(mapped) == sorted(r.id.value for r in checked.ruleset.rules)
    for rule in checked.ruleset.rules:
        region = mapped[rule.id.value]
        assert f"[{rule.id.value}]" in lines[region.start - 1]
        assert region.span is not None
        assert region.span["line"] == rule.span.line


def test_sourcemap_json_lists_order_and_spans() -> None:
    result = run_pldc("compile", str(FIXTURES / "valid" / "minimal.pld"), "--format", "sourcemap")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["order"] == ["P1"]
    rule_regions = [r for r in payload["regions"] if r["kind"] == "rule"]
    assert rule_regions[0]["rule"] == "P1"
    assert rule_regions[0]["span"]["line"] == 17
    assert [r["kind"] for r in payload["regions"]] == ["task", "features", "rule", "policy", "output"]


def test_messages_format_is_openai_message_list() -> None:
    result = run_pldc("compile", str(FIXTURES / "valid" / "minimal.pld"), "--format", "messages")
    messages = json.loads(result.stdout)
    text = run_pldc("compile", str(FIXTURES / "valid" / "minimal.pld")).stdout
    assert messages == [{"role": "system", "content": text}]


def test_prompt_states_output_format_and_policy() -> None:
    text, _ = _compile(ORDER_SOURCE.format(hit="priority"))
    assert "Answer with exactly one label and nothing else: a, b." in text
    assert "highest priority" in text
    assert "If no rule applies, answer a." in text


def test_no_rules_prompt_keeps_task_only() -> None:
    checked = load_ruleset(FIXTURES / "valid" / "minimal.pld")
    text = compile_prompt(checked.ruleset, checked.ordered, include_rules=False).text
    assert "Labels:" in text
    assert "P1" not in text
    assert "praises" not in text


def test_undefined_template_variable_is_error() -> None:
    checked = load_ruleset(FIXTURES / "valid" / "minimal.pld")
    with pytest.raises(TemplateFailed, match="'not_a_variable' is undefined"):
        compile_prompt(checked.ruleset, checked.ordered, str(FIXTURES / "templates" / "undefined_variable.j2"))


def test_custom_template_by_path() -> None:
    checked = load_ruleset(FIXTURES / "valid" / "minimal.pld")
    prompt = compile_prompt(checked.ruleset, checked.ordered, str(FIXTURES / "templates" / "ids_only.j2"))
    assert prompt.text == "P1=positive\n"


def test_template_errors_exit_cleanly() -> None:
    for name, message in (("syntax_error.j2", "template syntax error"), ("undefined_variable.j2", "is undefined")):
        result = run_pldc(
            "compile", str(FIXTURES / "valid" / "minimal.pld"), "--template", str(FIXTURES / "templates" / name)
        )
        assert result.returncode == 1
        assert message in result.stderr
        assert "Traceback" not in result.stderr


def test_unknown_template_name_lists_shipped() -> None:
    with pytest.raises(InputError, match=r"shipped templates: .*default"):
        checked = load_ruleset(FIXTURES / "valid" / "minimal.pld")
        compile_prompt(checked.ruleset, checked.ordered, "fancy")


def test_compile_check_detects_stale_output(tmp_path: Path) -> None:
    source = str(FIXTURES / "valid" / "minimal.pld")
    out = tmp_path / "prompt.txt"
    assert run_pldc("compile", source, "-o", str(out)).returncode == 0
    assert run_pldc("compile", source, "--check", str(out)).returncode == 0
    out.write_text(out.read_text() + "edited\n")
    stale = run_pldc("compile", source, "--check", str(out))
    assert stale.returncode == 1
    assert "out of date" in stale.stderr


def test_compile_refuses_file_with_errors() -> None:
    result = run_pldc("compile", str(FIXTURES / "malformed" / "undefined_label.pld"))
    assert result.returncode == 1
    assert "error[E102]" in result.stderr
    assert result.stdout == ""


def test_unicode_everywhere() -> None:
    source = (
        'pld 1.0\nmeta autor "José"\n# Kommentar: Größe ✓\ntask klassifizierung {\n    input текст "Текст."\n'
        '    label ja "Ja ✓" spelled "はい"\n    label nein "Nein"\n    default nein\n}\n'
        'feature größe: bool "Ist groß."\nrule R1 "Größe" { when größe then ja because "groß → ja" }\n'
    )
    text, order = _compile(source)
    assert order == ["R1"]
    assert "- текст: Текст." in text
    assert "If größe, answer ja." in text
    assert parse(source, "u.pld").ruleset.task is not None
