"""Rule analysis: exact findings on fixture rulesets, and properties on generated ones."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from analysis_report import report_lines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pldc import ast
from pldc.analysis import analyze
from pldc.format import format_source
from pldc.parse import parse
from pldc.pipeline import check_source

from conftest import FIXTURES, ROOT, run_pldc
from rulesets import messy_source, rulesets

ANALYSIS = sorted((FIXTURES / "analysis").glob("*.pld"))
KINDS_COVERED = {
    "conflict", "order-dependent", "duplicate", "subsumed", "shadowed", "gap",
    "unused-feature", "unused-label", "unsatisfiable",
}  # fmt: skip


def test_enough_analysis_fixtures() -> None:
    assert len(ANALYSIS) >= 25


@pytest.mark.parametrize("path", ANALYSIS, ids=lambda p: p.stem)
def test_analysis_fixture_findings(path: Path) -> None:
    expected = path.with_suffix(".expected").read_text(encoding="utf-8").splitlines()
    assert report_lines(path) == expected


def test_fixtures_cover_every_kind_and_policy() -> None:
    lines = [line for path in ANALYSIS for line in path.with_suffix(".expected").read_text().splitlines()]
    kinds = {line.split()[0] for line in lines if not line.startswith(("order ", "allowed", "error"))}
    assert kinds == KINDS_COVERED
    policies = {"hit first" in p.read_text() for p in ANALYSIS} | {"hit priority" in p.read_text() for p in ANALYSIS}
    assert policies == {True, False}
    assert any(line.startswith("error E120") for line in lines)


def test_shipped_rulesets_check_clean_under_strict() -> None:
    result = run_pldc("check", "--strict", "--format", "json", *map(str, sorted((ROOT / "rulesets").glob("*.pld"))))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for file in report["files"]:
        assert file["findings"] == []
        assert all(item["allowed"] for item in file["allowed"])


def test_check_json_reports_findings_with_witness() -> None:
    result = run_pldc("check", "--format", "json", str(FIXTURES / "analysis" / "conflict_priority.pld"))
    assert result.returncode == 1
    [file] = json.loads(result.stdout)["files"]
    [finding] = file["findings"]
    assert finding["kind"] == "conflict"
    assert finding["severity"] == "error"
    assert finding["rules"] == ["R1", "R2"]
    assert finding["witness"] == {"a": True, "b": True}
    assert [span["line"] for span in finding["spans"]] == [20, 25]


def test_strict_and_allow_change_exit_code() -> None:
    path = str(FIXTURES / "analysis" / "order_dependent_first.pld")
    assert run_pldc("check", path).returncode == 0
    assert run_pldc("check", "--strict", path).returncode == 1
    assert run_pldc("check", "--deny", "order-dependent", path).returncode == 1
    assert run_pldc("check", "--strict", "--allow", "order-dependent", path).returncode == 0
    unknown = run_pldc("check", "--deny", "nonsense", path)
    assert unknown.returncode == 2
    assert "unknown finding kind 'nonsense'" in unknown.stderr


# ---- properties -------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _conflicts(source: str) -> set[tuple[str, ...]]:
    checked = check_source(source, "p.pld")
    assert not [d for d in checked.diagnostics if d.code != "E202" and not d.code.startswith("E20")]
    analysis = analyze(checked.ruleset, checked.ordered, checked.priorities)
    return {tuple(sorted(f.rules)) for f, _ in analysis.findings if f.kind in ("conflict", "order-dependent")}


def _with_rule(ruleset: ast.Ruleset, rule: ast.Rule) -> ast.Ruleset:
    return ruleset.model_copy(update={"items": (*ruleset.items, rule)})


@PROPERTY_SETTINGS
@given(rulesets(), rulesets(), st.integers(0, 10**6))
def test_adding_rule_keeps_other_conflicts(ruleset: ast.Ruleset, donor: ast.Ruleset, seed: int) -> None:
    before = _conflicts(messy_source(ruleset, seed))
    features = {f.name.value for f in ruleset.features}
    labels = [label.name.value for label in ruleset.task.labels] if ruleset.task else []
    candidates = [r for r in donor.rules if r.condition is not None]
    rng = random.Random(seed)
    base = rng.choice(candidates)
    # Reuse the donor rule's shape over this ruleset's features and labels.
    condition = _retarget(base.condition, ruleset, rng)  # type: ignore[arg-type]
    existing = [r.id.value for r in ruleset.rules]
    overrides = tuple(ast.Name(value=v) for v in rng.sample(existing, k=min(len(existing), rng.randint(0, 1))))
    new = ast.Rule(
        id=ast.Name(value="NEW"),
        title="added",
        condition=condition,
        label=ast.Name(value=rng.choice(labels)),
        priority=rng.choice([None, 0, 2]),
        overrides=overrides,
    )
    assert features
    after = _conflicts(format_source(parse(messy_source(_with_rule(ruleset, new), seed), "a.pld")))
    assert {pair for pair in before if "NEW" not in pair} <= after


def _retarget(condition: ast.Condition, ruleset: ast.Ruleset, rng: random.Random) -> ast.Condition:
    bools = [f.name.value for f in ruleset.features if f.is_bool]
    enums = {f.name.value: list(f.value_names) for f in ruleset.features if not f.is_bool}
    if isinstance(condition, ast.Predicate):
        return ast.Predicate(feature=ast.Name(value=rng.choice(bools)))
    if isinstance(condition, ast.IsValue):
        name = rng.choice(sorted(enums))
        return ast.IsValue(feature=ast.Name(value=name), value=ast.Name(value=rng.choice(enums[name])))
    if isinstance(condition, ast.Not):
        return ast.Not(operand=_retarget(condition.operand, ruleset, rng))
    operands = tuple(_retarget(o, ruleset, rng) for o in condition.operands)
    return ast.And(operands=operands) if isinstance(condition, ast.And) else ast.Or(operands=operands)


def _order(source: str) -> tuple[list[str], set[tuple[str, str]]]:
    """The compiled order, and the pairs (a, b) that a stated reason puts a before b."""
    import networkx as nx

    from pldc.order import order_rules

    ruleset = parse(source, "o.pld").ruleset
    ordering = order_rules(ruleset)
    graph: nx.DiGraph[str] = nx.DiGraph()
    graph.add_edges_from((r.id.value, t.value) for r in ruleset.rules for t in r.overrides)
    ids = [r.id.value for r in ordering.rules]
    forced = set()
    for a in ids:
        for b in ids:
            if a == b:
                continue
            higher = ordering.priorities[a] > ordering.priorities[b]
            if higher or (a in graph and b in graph and nx.has_path(graph, a, b)):
                forced.add((a, b))
    return ids, forced


@PROPERTY_SETTINGS
@given(rulesets(), st.randoms(use_true_random=False))
def test_reordering_file_keeps_forced_order(ruleset: ast.Ruleset, rng: random.Random) -> None:
    rules = [item for item in ruleset.items if isinstance(item, ast.Rule)]
    if len(rules) < 2:
        return
    others = [item for item in ruleset.items if not isinstance(item, ast.Rule)]
    shuffled = list(rules)
    rng.shuffle(shuffled)
    original_order, forced = _order(messy_source(ruleset, 1))
    reordered = ruleset.model_copy(update={"items": (*others, *shuffled)})
    new_order, _ = _order(messy_source(reordered, 2))
    assert sorted(new_order) == sorted(original_order)
    for a, b in forced:
        assert new_order.index(a) < new_order.index(b)
        assert original_order.index(a) < original_order.index(b)


DOMAINS: dict[str, list[bool | str]] = {
    "a": [False, True],
    "b": [False, True],
    "c": [False, True],
    "colour": ["red", "green", "blue"],
    "size": ["s", "m", "l", "xl"],
}


@st.composite
def boxes(draw: st.DrawFn) -> dict[str, frozenset[bool | str]]:
    names = draw(st.lists(st.sampled_from(sorted(DOMAINS)), unique=True, max_size=3))
    return {
        name: frozenset(draw(st.lists(st.sampled_from(DOMAINS[name]), min_size=1, max_size=len(DOMAINS[name]) - 1)))
        for name in names
    }


def _inside(point: dict[str, bool | str], box: dict[str, frozenset[bool | str]]) -> bool:
    return all(name in point and point[name] in values for name, values in box.items())


@given(boxes(), st.lists(boxes(), max_size=8))
@settings(max_examples=300, deadline=None)
def test_solver_and_box_splitting_agree_on_cover(box: dict, covers: list) -> None:
    from pldc.analysis.cubes import uncovered, witness
    from pldc.analysis.sat import covered, escape

    left = uncovered(box, covers, DOMAINS)
    point = escape(box, covers, DOMAINS)
    assert (left is None) == (point is None) == covered(box, covers, DOMAINS)
    if point is not None:
        assert _inside(point, box) and not any(_inside(point, cover) for cover in covers)
    if left is not None:
        full = {name: left[name] if name in left else frozenset(DOMAINS[name]) for name in DOMAINS}
        example = {name: witness(full, DOMAINS).get(name, DOMAINS[name][0]) for name in DOMAINS}
        assert _inside(example, box) and not any(_inside(example, cover) for cover in covers)
