"""The wheel carries the grammar and templates: `pldc compile` works from an installed copy."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [built] = out.glob("pldc-*.whl")
    return built


def test_wheel_contains_grammar_and_templates(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "pldc/grammar/pld.lark" in names
    assert "pldc/templates/default.j2" in names


def test_installed_wheel_compiles_outside_checkout(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], capture_output=True, text=True
    )
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ruleset = ROOT / "rulesets" / "contract_nli.pld"
    result = subprocess.run(
        [str(venv / "bin" / "pldc"), "compile", str(ruleset)], cwd=elsewhere, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "[KEEP_FORBIDDEN]" in result.stdout
    assert "Answer with exactly one label" in result.stdout
    reference = subprocess.run(
        [sys.executable, "-m", "pldc", "compile", str(ruleset)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.stdout == reference.stdout
    # The compiler installs light: no torch and no transformers in the base install.
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('transformers'))",
        ],
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == "None None"
