"""A killed ``pldc eval`` resumes from its call cache and scores only what is missing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.model

LIMIT = 12
POLL_SECONDS = 0.02
# NOTE: a generous limit, because the test may share the CPU with other work. On an idle CPU
# each run takes seconds.
WAIT_SECONDS = 300
# The three runs are sequential, so one thread each loses nothing, and it avoids OpenMP
# oversubscription (several times slower) when other processes share the CPU.
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run_pldc(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pldc", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=WAIT_SECONDS, env=ENVIRONMENT)


def _eval_args(data_dir: Path, cache: Path, predictions: Path) -> list[str]:
    return [
        "eval",
        str(ROOT / "rulesets" / "stereoset_domain.pld"),
        "--data",
        str(data_dir / "stereoset" / "dev.jsonl"),
        "--limit",
        str(LIMIT),
        "--no-rules",
        "--no-calibration",
        "--batch-size",
        "2",
        "--chunk-size",
        "2",
        "--cache",
        str(cache),
        "--predictions",
        str(predictions),
        "--json",
    ]


def _stored_rows(path: Path) -> int | None:
    """Return the number of stored results, or None while the file or its table does not exist yet."""
    if not path.exists():
        return None
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])
    except sqlite3.OperationalError:
        return None


def _predictions(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_killed_eval_resumes_with_missing_examples_only(data_dir: Path, tmp_path: Path) -> None:
    whole = _run_pldc(*_eval_args(data_dir, tmp_path / "whole.sqlite", tmp_path / "whole.jsonl"))
    assert whole.returncode == 0, whole.stderr

    cache = tmp_path / "killed.sqlite"
    command = [sys.executable, "-m", "pldc", *_eval_args(data_dir, cache, tmp_path / "killed.jsonl")]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENVIRONMENT)
    deadline = time.monotonic() + WAIT_SECONDS
    try:
        while True:
            rows = _stored_rows(cache)
            if rows is not None and 0 < rows < LIMIT:
                break
            if process.poll() is not None:
                pytest.fail(f"the run ended (exit {process.returncode}) before it could be killed half-way")
            if time.monotonic() > deadline:
                pytest.fail(f"no partial results in {cache} after {WAIT_SECONDS} s")
            time.sleep(POLL_SECONDS)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    stored = _stored_rows(cache)
    assert stored is not None
    assert 0 < stored < LIMIT

    resumed = _run_pldc(*_eval_args(data_dir, cache, tmp_path / "resumed.jsonl"))
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)["results"][0]
    assert report["cache"] == {"hits": stored, "computed": LIMIT - stored}
    assert _stored_rows(cache) == LIMIT

    expected = json.loads(whole.stdout)["results"][0]
    assert report["metrics"] == expected["metrics"]
    resumed_rows = _predictions(tmp_path / "resumed.jsonl")
    whole_rows = _predictions(tmp_path / "whole.jsonl")
    assert [row["id"] for row in resumed_rows] == [row["id"] for row in whole_rows]
    assert [row["predicted"] for row in resumed_rows] == [row["predicted"] for row in whole_rows]
    for resumed_row, whole_row in zip(resumed_rows, whole_rows, strict=True):
        assert resumed_row["scores"] == pytest.approx(whole_row["scores"], abs=1e-4)
