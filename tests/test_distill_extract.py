"""``pldc distill extract``: the prompt, the answer schema, resumable output and Batch API files.

The teacher is the real google-genai client talking to the local Gemini test server.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("google.genai")

from gemini_server import GeminiServer, serve
from google.genai import types

from pldc.cache import CallCache
from pldc.data import Dataset, load_dataset
from pldc.distill import (
    EXTRACT_FILE,
    ExtractionPrompt,
    ExtractRecord,
    ExtractStore,
    extract,
    parse_extraction,
)
from pldc.errors import InputError, UsageError
from pldc.gemini import GeminiClient, GeminiSettings
from pldc.gemini_batch import BatchRequestLine, export_batch, import_batch
from pldc.pipeline import load_ruleset
from pldc.teacher import RejectedAnswer

from conftest import FIXTURES, ROOT, run_pldc

TASK = FIXTURES / "distill" / "sentiment_task.pld"
DATA = FIXTURES / "distill" / "reviews.jsonl"
BATCH_RESULTS = FIXTURES / "distill" / "batch_results.jsonl"
DATA_ARGS = ["--data", str(DATA), "--framing", "jsonl", "--label-field", "sentiment"]
IDS = ["r1", "r2", "r3", "r4", "r5", "r6"]


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    task = load_ruleset(TASK).ruleset.task
    assert task is not None
    return load_dataset(DATA, task, "jsonl", label_field="sentiment")


@pytest.fixture(scope="module")
def prompt() -> ExtractionPrompt:
    task = load_ruleset(TASK).ruleset.task
    assert task is not None
    return ExtractionPrompt.load(task)


@pytest.fixture
def server() -> Iterator[GeminiServer]:
    with serve("extract_reviews.json") as running:
        yield running


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[CallCache]:
    store = CallCache(tmp_path / "calls.sqlite")
    yield store
    store.close()


def teacher(server: GeminiServer, cache: CallCache) -> GeminiClient:
    settings = GeminiSettings(thinking_budget=1024, initial_backoff=0.01, max_backoff=0.05, base_url=server.url)
    return GeminiClient(settings, cache, api_key="test-key")


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / EXTRACT_FILE).read_text(encoding="utf-8").splitlines()]


def cli_env(server: GeminiServer, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, GEMINI_API_KEY="test-key", PLDC_CALL_CACHE=str(tmp_path / "cli-calls.sqlite"))
    env["GOOGLE_GEMINI_BASE_URL"] = server.url
    env["PYTHONPATH"] = str(ROOT)
    return env


# ---- prompt and schema ------------------------------------------------------


def test_prompt_shows_inputs_and_gold_label(dataset: Dataset, prompt: ExtractionPrompt) -> None:
    request = prompt.request(dataset.examples[1])
    assert "review:\nBroke after a week." in request.user
    assert request.user.endswith("Gold label: negative")
    assert "- positive: The reviewer likes the product." in request.system
    assert "Broke after a week." not in request.system
    assert request.response_mime_type == "application/json"


def test_schema_constrains_label_to_task(dataset: Dataset, prompt: ExtractionPrompt) -> None:
    schema = prompt.request(dataset.examples[0]).response_schema
    rule = schema["properties"]["rule"]
    assert rule["properties"]["label"]["enum"] == ["positive", "negative"]
    assert schema["propertyOrdering"] == ["rationale", "rule"]
    assert types.Schema.model_validate(schema).required == ["rationale", "rule"]


def valid_answer() -> dict[str, Any]:
    return {
        "rationale": "The lid cracked at the first wash.",
        "rule": {
            "title": "Defect on first use",
            "condition": "The review reports a part that broke during first use.",
            "label": "negative",
            "features": [
                {"name": "reports_defect", "type": "bool", "values": [], "definition": "A break.", "value": "true"},
                {
                    "name": "time_to_failure",
                    "type": "one_of",
                    "values": ["soon", "late", "none"],
                    "definition": "How soon it failed.",
                    "value": "soon",
                },
            ],
        },
    }


def test_valid_answer_parses() -> None:
    extraction = parse_extraction(json.dumps(valid_answer()), "negative")
    assert [feature.name for feature in extraction.rule.features] == ["reports_defect", "time_to_failure"]


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("rule", "label"), "positive", "gold label is 'negative'"),
        (("rule", "features", 0, "name"), "Reports-Defect", "snake_case"),
        (("rule", "features", 0, "name"), "label", "reserved word"),
        (("rule", "features", 0, "values"), ["a", "b"], "empty values list"),
        (("rule", "features", 0, "value"), "yes", "use 'true' or 'false'"),
        (("rule", "features", 1, "value"), "never", "not one of its values"),
        (("rule", "features", 1, "values"), ["soon"], "at least two values"),
        (("rule", "features", 1, "name"), "reports_defect", "lists a feature twice"),
        (("rule", "features"), [], "at least 1 item"),
        (("rationale",), "", "at least 1 character"),
    ],
)
def test_invalid_answer_rejected(path: tuple[Any, ...], value: Any, reason: str) -> None:
    answer = valid_answer()
    target: Any = answer
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(RejectedAnswer, match=reason):
        parse_extraction(json.dumps(answer), "negative")


def test_extra_field_rejected() -> None:
    answer = valid_answer()
    answer["confidence"] = 0.9
    with pytest.raises(RejectedAnswer, match="confidence"):
        parse_extraction(json.dumps(answer), "negative")


# ---- live extraction --------------------------------------------------------


def test_extract_writes_one_record_per_example(
    tmp_path: Path, server: GeminiServer, cache: CallCache, dataset: Dataset, prompt: ExtractionPrompt
) -> None:
    store = ExtractStore(tmp_path / "run")
    report = extract(dataset.examples, prompt, teacher(server, cache), store, workers=3)
    records = read_records(tmp_path / "run")
    assert report.extracted == 6
    assert sorted(record["id"] for record in records) == IDS
    assert all(ExtractRecord.model_validate(record) for record in records)
    by_id = {record["id"]: record for record in records}
    assert by_id["r2"]["label"] == "negative"
    assert by_id["r2"]["rule"]["features"][1]["values"] == ["soon", "late", "none"]
    assert by_id["r2"]["teacher"] == "gemini-3-flash-preview"
    assert server.total_calls == 6


def test_rerun_skips_extracted_ids(
    tmp_path: Path, server: GeminiServer, dataset: Dataset, prompt: ExtractionPrompt
) -> None:
    first_cache = CallCache(tmp_path / "first.sqlite")
    extract(dataset.examples, prompt, teacher(server, first_cache), ExtractStore(tmp_path / "run"))
    first_cache.close()
    # A fresh cache: only extract.jsonl can prevent the calls.
    second_cache = CallCache(tmp_path / "second.sqlite")
    report = extract(dataset.examples, prompt, teacher(server, second_cache), ExtractStore(tmp_path / "run"))
    second_cache.close()
    assert report.skipped == 6
    assert report.extracted == 0
    assert server.total_calls == 6
    assert len(read_records(tmp_path / "run")) == 6


def test_cache_answers_lost_output(
    tmp_path: Path, server: GeminiServer, cache: CallCache, dataset: Dataset, prompt: ExtractionPrompt
) -> None:
    extract(dataset.examples, prompt, teacher(server, cache), ExtractStore(tmp_path / "first"))
    report = extract(dataset.examples, prompt, teacher(server, cache), ExtractStore(tmp_path / "second"))
    assert report.extracted == 6
    assert server.total_calls == 6


def test_refusal_reported_and_run_continues(
    tmp_path: Path,
    server: GeminiServer,
    cache: CallCache,
    dataset: Dataset,
    prompt: ExtractionPrompt,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.inject("r4", "refusal")
    report = extract(dataset.examples, prompt, teacher(server, cache), ExtractStore(tmp_path / "run"))
    assert report.failures == ["r4"]
    assert report.extracted == 5
    assert "example r4" in caplog.text
    assert "finishReason SAFETY" in caplog.text
    assert "r4" not in {record["id"] for record in read_records(tmp_path / "run")}


def test_malformed_answer_reasked(
    tmp_path: Path, server: GeminiServer, cache: CallCache, dataset: Dataset, prompt: ExtractionPrompt
) -> None:
    server.inject("r3", "malformed")
    report = extract(dataset.examples, prompt, teacher(server, cache), ExtractStore(tmp_path / "run"))
    assert report.extracted == 6
    assert server.calls_for("r3") == 2


def test_incomplete_last_line_dropped(tmp_path: Path, dataset: Dataset) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    good = (FIXTURES / "distill" / "extract_one.jsonl").read_text(encoding="utf-8")
    (run_dir / EXTRACT_FILE).write_text(good + '{"id": "r2", "label": "neg', encoding="utf-8")
    store = ExtractStore(run_dir)
    assert list(store.records) == ["r1"]
    assert (run_dir / EXTRACT_FILE).read_text(encoding="utf-8") == good


def test_invalid_middle_line_names_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    good = (FIXTURES / "distill" / "extract_one.jsonl").read_text(encoding="utf-8")
    (run_dir / EXTRACT_FILE).write_text('{"id": "r0"}\n' + good, encoding="utf-8")
    with pytest.raises(InputError, match=r"extract.jsonl:1: invalid record"):
        ExtractStore(run_dir)


def test_other_teacher_in_run_dir_rejected(
    tmp_path: Path, server: GeminiServer, cache: CallCache, dataset: Dataset, prompt: ExtractionPrompt
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / EXTRACT_FILE).write_text(
        (FIXTURES / "distill" / "extract_one.jsonl").read_text(encoding="utf-8"), encoding="utf-8"
    )
    settings = GeminiSettings(model="gemini-3-pro-preview", base_url=server.url)
    with pytest.raises(UsageError, match="gemini-3-flash-preview"):
        extract(dataset.examples, prompt, GeminiClient(settings, cache, api_key="test-key"), ExtractStore(run_dir))
    assert server.total_calls == 0


def test_cli_extract_then_rerun_calls_nothing(tmp_path: Path, server: GeminiServer) -> None:
    env = cli_env(server, tmp_path)
    command = ["distill", "extract", str(TASK), *DATA_ARGS, "--run-dir", str(tmp_path / "run")]
    first = subprocess.run([sys.executable, "-m", "pldc", *command], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    assert "6 extracted" in first.stdout
    # Nothing is left to ask, so the re-run needs no API key.
    env.pop("GEMINI_API_KEY")
    second = subprocess.run([sys.executable, "-m", "pldc", *command], capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr
    assert "0 extracted, 6 already" in second.stdout
    assert server.total_calls == 6
    assert "test-key" not in first.stdout + first.stderr + second.stdout + second.stderr


def test_cli_refusal_exits_4_naming_example(tmp_path: Path, server: GeminiServer) -> None:
    server.inject("r5", "blocked")
    env = cli_env(server, tmp_path)
    command = ["distill", "extract", str(TASK), *DATA_ARGS, "--run-dir", str(tmp_path / "run")]
    result = subprocess.run([sys.executable, "-m", "pldc", *command], capture_output=True, text=True, env=env)
    assert result.returncode == 4
    assert "example r5" in result.stderr
    assert "1 examples have no rule (r5)" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_server_errors_exit_4_without_key(tmp_path: Path, server: GeminiServer) -> None:
    server.inject("r1", "500", "500")
    env = cli_env(server, tmp_path)
    command = ["distill", "extract", str(TASK), *DATA_ARGS, "--run-dir", str(tmp_path / "run")]
    command += ["--workers", "1", "--max-attempts", "2"]
    result = subprocess.run([sys.executable, "-m", "pldc", *command], capture_output=True, text=True, env=env)
    assert result.returncode == 4
    assert "example r1: Gemini request failed after 2 attempts (HTTP 500 INTERNAL)" in result.stderr
    assert "Traceback" not in result.stderr
    assert "test-key" not in result.stdout + result.stderr
    assert server.calls_for("r1") == 2


def test_cli_missing_api_key_exits_4(tmp_path: Path, server: GeminiServer) -> None:
    env = cli_env(server, tmp_path)
    env.pop("GEMINI_API_KEY")
    env.pop("GOOGLE_API_KEY", None)
    command = ["distill", "extract", str(TASK), *DATA_ARGS, "--run-dir", str(tmp_path / "run")]
    result = subprocess.run([sys.executable, "-m", "pldc", *command], capture_output=True, text=True, env=env)
    assert result.returncode == 4
    assert "set GEMINI_API_KEY" in result.stderr
    assert server.total_calls == 0


def test_killed_extraction_resumes_without_repeated_calls(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    extract_file = run_dir / EXTRACT_FILE
    with serve("extract_reviews.json", delay=0.5) as server:
        env = cli_env(server, tmp_path)
        command = [sys.executable, "-m", "pldc", "distill", "extract", str(TASK), *DATA_ARGS]
        command += ["--run-dir", str(run_dir), "--workers", "1"]
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if extract_file.is_file() and extract_file.read_text(encoding="utf-8").count("\n") >= 2:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        written = {record["id"] for record in read_records(run_dir)}
        calls_before = {name: server.calls_for(name) for name in IDS}
        assert 2 <= len(written) < 6
        # With one worker, at most one request was in flight when the process died.
        assert sum(calls_before.values()) <= len(written) + 1

        server.delay = 0.0
        rerun = subprocess.run(command, env=env, capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
        assert sorted(record["id"] for record in read_records(run_dir)) == IDS
        for name in written:
            assert server.calls_for(name) == 1, name
        # Only the request in flight when the process died may have been sent twice.
        repeated = [name for name in IDS if server.calls_for(name) > 1]
        assert len(repeated) <= 1
        assert all(server.calls_for(name) <= 2 for name in IDS)
        total = server.total_calls

        again = subprocess.run(command, env=env, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        assert server.total_calls == total


# ---- Batch API files --------------------------------------------------------


def test_export_batch_lines_validate(tmp_path: Path, dataset: Dataset, prompt: ExtractionPrompt) -> None:
    path = tmp_path / "batch.jsonl"
    settings = GeminiSettings(thinking_budget=1024, temperature=1.0)
    written = export_batch(path, dataset.examples, prompt, settings, ExtractStore(tmp_path / "run"))
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert written == 6
    assert [line["key"] for line in lines] == IDS
    for line in lines:
        BatchRequestLine.model_validate(line)
        request = line["request"]
        # The SDK's own models of the request parts accept them too.
        types.Content.model_validate(request["contents"][0])
        config = types.GenerateContentConfig.model_validate(request["generationConfig"])
        assert config.response_mime_type == "application/json"
        assert config.thinking_config is not None
        assert config.thinking_config.thinking_budget == 1024
    assert lines[1]["request"]["contents"][0]["parts"][0]["text"].endswith("Gold label: negative")


def test_export_batch_thinking_level(tmp_path: Path, dataset: Dataset, prompt: ExtractionPrompt) -> None:
    path = tmp_path / "batch.jsonl"
    settings = GeminiSettings(thinking_level="high")
    export_batch(path, dataset.examples, prompt, settings, ExtractStore(tmp_path / "run"))
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first["request"]["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "HIGH"}
    config = types.GenerateContentConfig.model_validate(first["request"]["generationConfig"])
    assert config.thinking_config is not None
    assert config.thinking_config.thinking_level == types.ThinkingLevel.HIGH


def test_export_batch_skips_extracted(tmp_path: Path, dataset: Dataset, prompt: ExtractionPrompt) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / EXTRACT_FILE).write_text(
        (FIXTURES / "distill" / "extract_one.jsonl").read_text(encoding="utf-8"), encoding="utf-8"
    )
    path = tmp_path / "batch.jsonl"
    written = export_batch(path, dataset.examples, prompt, GeminiSettings(), ExtractStore(run_dir))
    assert written == 5
    assert "r1" not in {json.loads(line)["key"] for line in path.read_text(encoding="utf-8").splitlines()}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda line: line["request"].pop("contents"), "contents"),
        (lambda line: line["request"]["generationConfig"].update(responseMimeType="text/plain"), "responseMimeType"),
        (lambda line: line["request"]["generationConfig"].update(response_schema={}), "response_schema"),
        (lambda line: line.update(key=""), "key"),
    ],
)
def test_batch_request_model_rejects_bad_line(
    change: Any, field: str, dataset: Dataset, prompt: ExtractionPrompt
) -> None:
    line = {"key": "r1", "request": GeminiSettings().rest_body(prompt.request(dataset.examples[0]))}
    BatchRequestLine.model_validate(line)
    change(line)
    with pytest.raises(ValueError, match=field):
        BatchRequestLine.model_validate(line)


def test_import_batch_reports_every_problem(tmp_path: Path, dataset: Dataset) -> None:
    store = ExtractStore(tmp_path / "run")
    result = import_batch(BATCH_RESULTS, dataset.examples, store, "gemini-3-flash-preview")
    problems = {(problem.line, problem.key): problem.message for problem in result.problems}
    assert result.imported == 2
    assert sorted(store.records) == ["r1", "r2"]
    assert problems[(3, "r3")].startswith("request failed (429 RESOURCE_EXHAUSTED)")
    assert problems[(4, None)].startswith("malformed line: not valid JSON")
    assert problems[(5, "r5")] == "refused: finishReason SAFETY"
    assert "gold label is 'negative'" in problems[(6, "r6")]
    assert problems[(7, "r99")] == "not an example id of the data file"
    assert problems[(8, "r1")].startswith("key appears more than once")
    assert problems[(None, "r4")] == "no result line for this example"
    assert len(result.problems) == 7


def test_cli_import_batch_exits_1_listing_lines(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_pldc(
        "distill", "extract", str(TASK), *DATA_ARGS, "--run-dir", str(run_dir), "--import-batch", str(BATCH_RESULTS)
    )
    assert result.returncode == 1
    assert "imported 2 answers" in result.stdout
    assert f"{BATCH_RESULTS}:3: key 'r3': request failed" in result.stderr
    assert f"{BATCH_RESULTS}: key 'r4': no result line for this example" in result.stderr
    assert len(read_records(run_dir)) == 2


def test_cli_export_batch_calls_nothing(tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    result = run_pldc(
        "distill", "extract", str(TASK), *DATA_ARGS, "--run-dir", str(tmp_path / "run"), "--export-batch", str(path)
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 6 batch requests" in result.stdout
    assert len(path.read_text(encoding="utf-8").splitlines()) == 6


def test_cli_sample_keeps_file_ids(tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    run_dir = str(tmp_path / "run")
    args = ["distill", "extract", str(TASK), *DATA_ARGS, "--run-dir", run_dir, "--sample", "3", "--seed", "7"]
    result = run_pldc(*args, "--export-batch", str(path))
    assert result.returncode == 0, result.stderr
    keys = [json.loads(line)["key"] for line in path.read_text(encoding="utf-8").splitlines()]
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    chosen = sorted(random.Random(7).sample(range(len(rows)), 3))
    assert keys == [str(rows[index]["id"]) for index in chosen]


def test_cli_sample_larger_than_data_exits_2(tmp_path: Path) -> None:
    args = ["distill", "extract", str(TASK), *DATA_ARGS, "--run-dir", str(tmp_path / "run"), "--sample", "7"]
    result = run_pldc(*args, "--export-batch", str(tmp_path / "batch.jsonl"))
    assert result.returncode == 2
    assert "--sample 7 is more than its 6 examples" in result.stderr
