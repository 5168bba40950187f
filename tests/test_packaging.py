"""The wheel carries the grammar and templates: `pldc compile` works from an installed copy."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
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


# The entry point's module is loaded before "ready", so the signal lands while run() loads the command line.
LOAD_PLDC = "import sys; from pldc.__main__ import run; print('ready', flush=True); sys.exit(run())"


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15])
def test_interrupt_while_loading_exits_cleanly(delay: float) -> None:
    ruleset = str(ROOT / "rulesets" / "stereoset_domain.pld")
    process = subprocess.Popen(
        [sys.executable, "-c", LOAD_PLDC, "check", ruleset],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert "Traceback" not in stderr
    # Python may end an interrupted process by SIGINT itself (-2); the shell reports 130 either way.
    assert process.returncode in (0, 130, -signal.SIGINT)
    if process.returncode != 0:
        assert stderr.strip() == "pldc: interrupted"
