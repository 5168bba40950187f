"""`pldc graph` and `pldc explain` on fixture and shipped rulesets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT, run_pldc

CONFLICT = str(FIXTURES / "analysis" / "conflict_priority.pld")


def test_dot_marks_conflict_red_and_clusters_groups() -> None:
    result = run_pldc("graph", str(ROOT / "rulesets" / "contract_nli.pld"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('digraph "contract_nli" {')
    assert result.stdout.count("subgraph cluster_") == 5
    assert '"rule:ID_UNMARKED" -> "rule:ID_MARKED" [color=darkgreen, penwidth=2, label="overrides"];' in result.stdout
    conflict = run_pldc("graph", CONFLICT).stdout
    assert '"rule:R1" -> "rule:R2" [color=red, style=dashed, label="conflict", fontcolor=red];' in conflict


def test_mermaid_styles_conflict_edges() -> None:
    result = run_pldc("graph", CONFLICT, "--format", "mermaid")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "flowchart LR"
    assert "  n7 -.->|conflict| n8" in lines
    assert lines[-1] == "  linkStyle 2 stroke:red,color:red"


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_svg_renders_with_graphviz(tmp_path: Path) -> None:
    out = tmp_path / "graph.svg"
    result = run_pldc("graph", str(ROOT / "rulesets" / "contract_nli.pld"), "--format", "svg", "-o", str(out))
    assert result.returncode == 0, result.stderr
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml")
    assert "KEEP_FORBIDDEN" in svg


def test_png_needs_output_file() -> None:
    result = run_pldc("graph", CONFLICT, "--format", "png")
    assert result.returncode == 2
    assert "--format png needs -o FILE" in result.stderr


def test_explain_lists_provenance_and_findings() -> None:
    result = run_pldc("explain", CONFLICT, "R1", "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["position"] == 1
    assert report["condition"] == "a"
    assert [f["kind"] for f in report["findings"]] == ["conflict"]
    shipped = json.loads(
        run_pldc("explain", str(ROOT / "rulesets" / "contract_nli.pld"), "KEEP_FORBIDDEN", "--format", "json").stdout
    )
    assert shipped["overridden_by"] == ["KEEP_ALLOWED"]
    assert shipped["provenance"]["support"] == 13


def test_explain_unknown_rule_is_input_error() -> None:
    result = run_pldc("explain", CONFLICT, "R9")
    assert result.returncode == 3
    assert "no rule 'R9'; rules: R1, R2" in result.stderr
