from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
DATA = Path(os.environ.get("PLDC_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True, scope="session")
def isolated_call_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep model call results of the tests out of the user's call cache."""
    os.environ["PLDC_CALL_CACHE"] = str(tmp_path_factory.mktemp("calls") / "calls.sqlite")


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"shared data not found at {DATA}; set PLDC_DATA")
    return DATA


def run_pldc(*args: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "pldc", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=600,
    )
