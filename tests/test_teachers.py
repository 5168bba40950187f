"""The teachers behind ``--teacher``: the OpenAI-compatible one against a local fake server that
replays recorded answers, the transformers one with the embedded model, and the option checks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import pytest
from openai_server import FakeServer, RecordedAnswers

from pldc.cache import CallCache
from pldc.cli import build_parser
from pldc.data import Dataset, load_dataset
from pldc.distill import EXTRACT_FILE, ExtractionPrompt, extraction_schema, parse_extraction
from pldc.errors import ModelError, UsageError
from pldc.openai_teacher import OpenAITeacher, OpenAITeacherSettings
from pldc.pipeline import load_ruleset
from pldc.teacher import InvalidAnswerError, RefusalError, json_schema, reask_message, strip_code_fence
from pldc.teacher_cli import check_teacher_arguments, make_teacher
from pldc.transformers_teacher import render_chat

from conftest import FIXTURES, ROOT

if TYPE_CHECKING:
    from pldc.student import Student

TASK = ROOT / "rulesets" / "stereoset_domain.pld"
DATA = FIXTURES / "teachers" / "train.jsonl"
ANSWERS = FIXTURES / "teachers" / "stereoset_answers.json"
DATA_ARGS = ["--data", str(DATA), "--framing", "stereoset-domain"]
IDS = ["train.jsonl:1", "train.jsonl:2", "train.jsonl:3", "train.jsonl:4"]
FAKE_KEY = "sk-pldc-teacher-test-93be1d"


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    task = load_ruleset(TASK).ruleset.task
    assert task is not None
    return load_dataset(DATA, task, "stereoset-domain")


@pytest.fixture(scope="module")
def prompt() -> ExtractionPrompt:
    task = load_ruleset(TASK).ruleset.task
    assert task is not None
    return ExtractionPrompt.load(task)


@pytest.fixture
def answers() -> RecordedAnswers:
    return RecordedAnswers(ANSWERS)


@pytest.fixture
def server(answers: RecordedAnswers) -> Iterator[FakeServer]:
    fake = FakeServer()
    fake.answer = answers
    yield fake
    fake.close()


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[CallCache]:
    store = CallCache(tmp_path / "calls.sqlite")
    yield store
    store.close()


def openai_teacher(server: FakeServer, cache: CallCache, **options: Any) -> OpenAITeacher:
    options.setdefault("initial_backoff", 0.01)
    options.setdefault("max_backoff", 0.02)
    return OpenAITeacher(OpenAITeacherSettings(base_url=server.url, model="served-model", **options), cache)


def ask(teacher: OpenAITeacher, dataset: Dataset, prompt: ExtractionPrompt, index: int) -> Any:
    example = dataset.examples[index]
    return teacher.ask(example.id, prompt.request(example), lambda text: parse_extraction(text, example.label))


def run_extract(server: FakeServer, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pldc", "-v", "distill", "extract", str(TASK), *DATA_ARGS]
    command += ["--run-dir", str(tmp_path / "run"), "--teacher", "openai", "--base-url", server.url]
    command += ["--model", "served-model", "--api-key-env", "PLDC_TEACHER_TEST_KEY", *extra]
    env = dict(os.environ, PLDC_CALL_CACHE=str(tmp_path / "cli-calls.sqlite"), PYTHONPATH=str(ROOT))
    env["PLDC_TEACHER_TEST_KEY"] = FAKE_KEY
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / EXTRACT_FILE).read_text(encoding="utf-8").splitlines()]


def walk(schema: Any) -> Iterator[dict[str, Any]]:
    """Yield every schema object nested in ``schema``, itself included."""
    if isinstance(schema, dict):
        yield schema
        for value in schema.values():
            yield from walk(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from walk(value)


# ---- schema translation and code fences ------------------------------------------


def test_json_schema_of_extraction_schema(prompt: ExtractionPrompt) -> None:
    translated = json_schema(extraction_schema(prompt.task))
    rule = translated["properties"]["rule"]
    feature = rule["properties"]["features"]["items"]
    assert translated["type"] == "object"
    assert list(translated["properties"]) == ["rationale", "rule"]
    assert translated["required"] == ["rationale", "rule"]
    assert rule["properties"]["label"] == {"type": "string", "enum": ["gender", "profession", "race", "religion"]}
    assert rule["properties"]["features"]["minItems"] == 1
    assert rule["properties"]["features"]["maxItems"] == 4
    assert feature["properties"]["values"] == {"type": "array", "items": {"type": "string"}, "maxItems": 8}
    assert feature["properties"]["name"]["description"] == "lower-case snake_case identifier"
    objects = [node for node in walk(translated) if node.get("type") == "object"]
    assert len(objects) == 3
    assert all(node["additionalProperties"] is False for node in objects)
    assert not any("propertyOrdering" in node for node in walk(translated))
    assert not any(
        isinstance(node.get("type"), str) and node["type"] != node["type"].lower() for node in walk(translated)
    )


def test_json_schema_follows_property_ordering() -> None:
    schema = {"type": "OBJECT", "properties": {"b": {"type": "STRING"}, "a": {"type": "STRING"}}}
    schema["propertyOrdering"] = ["a", "b"]
    assert list(json_schema(schema)["properties"]) == ["a", "b"]


def test_json_schema_nullable_adds_null_type() -> None:
    translated = json_schema({"type": "OBJECT", "nullable": True, "properties": {}})
    assert translated["type"] == ["object", "null"]
    assert translated["additionalProperties"] is False


def test_json_schema_unknown_keyword_raises() -> None:
    with pytest.raises(ModelError, match="'oneOf' has no JSON Schema translation"):
        json_schema({"type": "STRING", "oneOf": []})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('```json\n{"a": 1}\n```', '{"a": 1}'),
        ('```\n{"a": 1}\n```\n', '{"a": 1}'),
        ('  ```JSON\n{"a": 1}```', '{"a": 1}'),
        ('{"a": 1}', '{"a": 1}'),
        ('Here it is:\n```json\n{"a": 1}\n```', 'Here it is:\n```json\n{"a": 1}\n```'),
        ('```json\n{"a": 1}', '```json\n{"a": 1}'),
    ],
)
def test_strip_code_fence(text: str, expected: str) -> None:
    assert strip_code_fence(text) == expected


# ---- the OpenAI-compatible teacher --------------------------------------------------


def test_request_carries_json_schema(
    server: FakeServer, cache: CallCache, dataset: Dataset, prompt: ExtractionPrompt
) -> None:
    answer = ask(openai_teacher(server, cache), dataset, prompt, 0)
    assert answer.value.rule.label == "race"
    [(headers, body)] = server.requests
    request = prompt.request(dataset.examples[0])
    assert body["model"] == "served-model"
    assert body["messages"] == [
        {"role": "system", "content": request.system},
        {"role": "user", "content": request.user},
    ]
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "teacher_answer",
            "schema": json_schema(request.response_schema),
            "strict": True,
        },
    }
    assert "temperature" not in body
    assert "Authorization" not in headers


@pytest.mark.parametrize(("mode", "response_format"), [("json_object", {"type": "json_object"}), ("none", None)])
def test_response_format_without_structured_output(
    server: FakeServer,
    cache: CallCache,
    dataset: Dataset,
    prompt: ExtractionPrompt,
    mode: str,
    response_format: dict[str, str] | None,
) -> None:
    ask(openai_teacher(server, cache, response_format=mode, temperature=0.0), dataset, prompt, 1)
    [(_, body)] = server.requests
    request = prompt.request(dataset.examples[1])
    system = body["messages"][0]["content"]
    assert body.get("response_format") == response_format
    assert body["temperature"] == 0.0
    assert system.startswith(request.system)
    assert json.dumps(json_schema(request.response_schema), ensure_ascii=False) in system


def test_api_key_sent_but_not_cached(
    server: FakeServer,
    cache: CallCache,
    dataset: Dataset,
    prompt: ExtractionPrompt,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PLDC_TEACHER_TEST_KEY", FAKE_KEY)
    teacher = openai_teacher(server, cache, api_key_env="PLDC_TEACHER_TEST_KEY")
    ask(teacher, dataset, prompt, 0)
    [(headers, _)] = server.requests
    assert headers["Authorization"] == f"Bearer {FAKE_KEY}"
    stored = b"".join(path.read_bytes() for path in cache.path.parent.glob(cache.path.name + "*"))
    assert b"served-model" in stored
    assert FAKE_KEY.encode() not in stored


def test_malformed_answer_reasked_with_reason(
    server: FakeServer, answers: RecordedAnswers, cache: CallCache, dataset: Dataset, prompt: ExtractionPrompt
) -> None:
    answers.inject("train.jsonl:3", "malformed")
    teacher = openai_teacher(server, cache)
    answer = ask(teacher, dataset, prompt, 2)
    assert answer.value.rule.label == "profession"
    assert answers.calls["train.jsonl:3"] == 2
    assert teacher.stats.reasks == 1
    second = server.requests[1][1]["messages"]
    assert [message["role"] for message in second] == ["system", "user", "assistant", "user"]
    assert second[2]["content"] == '{"rationale": "unterminated'
    reason = "answer: Invalid JSON: EOF while parsing a string at line 1 column 27 (1 errors in all)"
    assert second[3]["content"] == reask_message(reason)


def test_malformed_every_time_raises_after_reasks(
    server: FakeServer, answers: RecordedAnswers, cache: CallCache, dataset: Dataset, prompt: ExtractionPrompt
) -> None:
    answers.inject("train.jsonl:3", "malformed", "malformed", "malformed")
    with pytest.raises(InvalidAnswerError) as raised:
        ask(openai_teacher(server, cache, max_reasks=2), dataset, prompt, 2)
    assert "example train.jsonl:3: openai:served-model gave no valid answer in 3 attempts" in str(raised.value)
    assert answers.calls["train.jsonl:3"] == 3
    assert len(cache) == 0


def test_fenced_answer_accepted(
    server: FakeServer, answers: RecordedAnswers, cache: CallCache, dataset: Dataset, prompt: ExtractionPrompt
) -> None:
    answers.inject("train.jsonl:4", "fenced")
    answer = ask(openai_teacher(server, cache), dataset, prompt, 3)
    assert answer.value.rule.label == "gender"
    assert not answer.text.startswith("```")
    assert answers.calls["train.jsonl:4"] == 1


def test_refusal_names_example(
    server: FakeServer, answers: RecordedAnswers, cache: CallCache, dataset: Dataset, prompt: ExtractionPrompt
) -> None:
    answers.inject("train.jsonl:1", "refusal")
    with pytest.raises(RefusalError, match=r"example train.jsonl:1: openai:served-model refused to answer \(I cannot"):
        ask(openai_teacher(server, cache), dataset, prompt, 0)
    assert answers.calls["train.jsonl:1"] == 1


def test_429_and_500_retried(
    server: FakeServer, answers: RecordedAnswers, cache: CallCache, dataset: Dataset, prompt: ExtractionPrompt
) -> None:
    answers.inject("train.jsonl:2", "429", "500")
    teacher = openai_teacher(server, cache)
    answer = ask(teacher, dataset, prompt, 1)
    assert answer.value.rule.label == "race"
    assert answers.calls["train.jsonl:2"] == 3
    assert teacher.stats.retries == 2
    assert teacher.stats.requests == 3


def test_401_fails_at_once_naming_example(
    server: FakeServer,
    answers: RecordedAnswers,
    cache: CallCache,
    dataset: Dataset,
    prompt: ExtractionPrompt,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PLDC_TEACHER_TEST_KEY", FAKE_KEY)
    answers.inject("train.jsonl:1", "401")
    with pytest.raises(ModelError) as raised:
        ask(openai_teacher(server, cache, api_key_env="PLDC_TEACHER_TEST_KEY"), dataset, prompt, 0)
    message = str(raised.value)
    assert message.startswith("example train.jsonl:1: ")
    assert "authentication failed (HTTP 401" in message
    assert "\n" not in message
    assert FAKE_KEY not in message
    assert answers.calls["train.jsonl:1"] == 1


def test_cli_extract_writes_records_then_rerun_calls_nothing(
    server: FakeServer, answers: RecordedAnswers, tmp_path: Path
) -> None:
    first = run_extract(server, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "4 extracted, 0 already" in first.stdout
    assert "teacher openai:served-model: 4 requests, 0 cached answers" in first.stdout
    records = {record["id"]: record for record in read_records(tmp_path / "run")}
    assert sorted(records) == IDS
    assert {record["teacher"] for record in records.values()} == {"openai:served-model"}
    assert [records[name]["label"] for name in IDS] == ["race", "race", "profession", "gender"]
    assert len(server.requests) == 4

    again = run_extract(server, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 extracted, 4 already" in again.stdout
    # A new run directory with the same call cache: every answer comes from the cache.
    fresh = run_extract(server, tmp_path, "--run-dir", str(tmp_path / "fresh"))
    assert fresh.returncode == 0, fresh.stderr
    assert "4 cached answers" in fresh.stdout
    assert len(read_records(tmp_path / "fresh")) == 4
    assert len(server.requests) == 4
    assert FAKE_KEY not in first.stdout + first.stderr + again.stdout + fresh.stderr


def test_cli_malformed_answers_reported_exit_4(server: FakeServer, answers: RecordedAnswers, tmp_path: Path) -> None:
    answers.inject("train.jsonl:2", "malformed", "malformed")
    result = run_extract(server, tmp_path, "--max-reasks", "1", "--workers", "1")
    assert result.returncode == 4, result.stderr
    assert "example train.jsonl:2: openai:served-model gave no valid answer in 2 attempts" in result.stderr
    assert "1 examples have no rule (train.jsonl:2)" in result.stderr
    assert "Traceback" not in result.stderr
    assert answers.calls["train.jsonl:2"] == 2
    assert sorted(record["id"] for record in read_records(tmp_path / "run")) == [
        "train.jsonl:1",
        "train.jsonl:3",
        "train.jsonl:4",
    ]

    # The re-run asks the failed example only, and the server now returns its recorded answer.
    rerun = run_extract(server, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 extracted, 3 already" in rerun.stdout
    assert answers.calls["train.jsonl:2"] == 3
    assert len(server.requests) == 6


def test_cli_server_errors_exit_4_naming_example(server: FakeServer, answers: RecordedAnswers, tmp_path: Path) -> None:
    answers.inject("train.jsonl:1", "500", "500")
    result = run_extract(server, tmp_path, "--workers", "1", "--max-attempts", "2")
    errors = [line for line in result.stderr.splitlines() if line.startswith("pldc: error:")]
    assert result.returncode == 4, result.stderr
    assert len(errors) == 1
    assert errors[0].startswith("pldc: error: example train.jsonl:1: request to ")
    assert "failed after 2 attempts: HTTP 500" in errors[0]
    assert "raise --timeout" in errors[0]
    assert FAKE_KEY not in result.stderr + result.stdout
    assert answers.calls["train.jsonl:1"] == 2


# ---- option checks ----------------------------------------------------------------


def extract_args(*extra: str) -> list[str]:
    return ["distill", "extract", str(TASK), *DATA_ARGS, "--run-dir", "unused", *extra]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--teacher", "openai", "--base-url", "http://127.0.0.1:1/v1"], "--teacher openai needs --model NAME"),
        (["--teacher", "openai", "--model", "m"], "--teacher openai needs --base-url"),
        (["--api-key-env", "KEY"], "--api-key-env applies only to --teacher openai, not --teacher gemini"),
        (["--response-format", "none"], "--response-format applies only to --teacher openai"),
        (["--max-new-tokens", "64"], "--max-new-tokens applies only to --teacher transformers, not --teacher gemini"),
        (
            ["--teacher", "openai", "--model", "m", "--base-url", "http://127.0.0.1:1/v1", "--thinking-level", "low"],
            "--thinking-level applies only to --teacher gemini, not --teacher openai",
        ),
        (["--teacher", "transformers", "--thinking-budget", "0"], "--thinking-budget applies only to --teacher gemini"),
        (
            ["--teacher", "transformers", "--temperature", "0.5"],
            "--temperature applies only to --teacher gemini or --teacher openai, not --teacher transformers",
        ),
        (["--teacher", "transformers", "--base-url", "http://127.0.0.1:1/v1"], "--base-url applies only"),
        (["--teacher", "transformers", "--max-attempts", "3"], "--max-attempts applies only"),
        (["--teacher", "transformers", "--timeout", "10"], "--timeout applies only"),
        (["--teacher", "transformers", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        (["--max-reasks", "-1"], "--max-reasks must be 0 or more"),
    ],
)
def test_teacher_option_errors(extra: list[str], message: str) -> None:
    args = build_parser().parse_args(extract_args(*extra))
    with pytest.raises(UsageError) as raised:
        check_teacher_arguments(args)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("extra", "model"),
    [
        ([], "gemini-3-flash-preview"),
        (["--teacher", "transformers"], "transformers:embedded"),
        (["--teacher", "transformers", "--model", "/models/teacher"], "transformers:/models/teacher"),
        (["--teacher", "openai", "--model", "m", "--base-url", "http://127.0.0.1:1/v1"], "openai:m"),
    ],
)
def test_default_model_per_teacher(extra: list[str], model: str, cache: CallCache) -> None:
    teacher = make_teacher(build_parser().parse_args(extract_args(*extra)), cache)
    assert teacher.model == model


@pytest.mark.parametrize("option", ["--export-batch", "--import-batch"])
def test_batch_files_need_gemini_teacher(option: str, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "pldc", *extract_args("--teacher", "transformers", option, str(tmp_path / "b"))]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert f"pldc: error: {option} reads or writes Gemini Batch API files; it applies only to --teacher gemini" in (
        result.stderr
    )
    assert not (tmp_path / "b").exists()


# ---- the transformers teacher with the embedded model ------------------------------

MAX_REASKS = 1


def run_transformers(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pldc", "-v", "distill", "extract", str(TASK), *DATA_ARGS, "--limit", "1"]
    command += ["--run-dir", str(tmp_path / "run"), "--teacher", "transformers", "--max-new-tokens", "12"]
    command += ["--max-reasks", str(MAX_REASKS), "--workers", "1"]
    env = dict(os.environ, PLDC_CALL_CACHE=str(tmp_path / "calls.sqlite"), PYTHONPATH=str(ROOT))
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def requests_made(stdout: str) -> int:
    matched = re.search(r"teacher transformers:embedded: (\d+) requests", stdout)
    assert matched is not None, stdout
    return int(matched.group(1))


@pytest.mark.model
def test_transformers_teacher_records_or_reports_each_example(tmp_path: Path) -> None:
    first = run_transformers(tmp_path)
    assert first.returncode in (0, 4), first.stderr
    assert "Traceback" not in first.stderr
    path = tmp_path / "run" / EXTRACT_FILE
    extracted = {record["id"] for record in read_records(tmp_path / "run")} if path.is_file() else set()
    failed = set(re.findall(r"example (\S+): transformers:embedded gave no valid answer in 2 attempts", first.stderr))
    assert extracted | failed == {"train.jsonl:1"}
    assert not extracted & failed
    assert first.returncode == (4 if failed else 0)
    assert "loaded SmolLM2" in first.stderr
    for name in failed:
        # One re-ask after the first rejected answer, then the failure: max_reasks + 1 generations.
        assert first.stderr.count(f"example {name}: answer rejected") == MAX_REASKS
    generated = requests_made(first.stdout)
    assert len(failed) * (MAX_REASKS + 1) + len(extracted) <= generated
    assert generated <= MAX_REASKS + 1

    # The same inputs again: accepted answers are in extract.jsonl, and greedy decoding would
    # repeat the rejected ones, so they are replayed from the call cache without a model.
    second = run_transformers(tmp_path)
    assert second.returncode == first.returncode, second.stderr
    assert requests_made(second.stdout) == 0
    assert "loaded SmolLM2" not in second.stderr
    assert set(re.findall(r"example (\S+): transformers:embedded gave no valid answer", second.stderr)) == failed


# A chat template that, like Gemma 2's, has no system role and raises on one.
NO_SYSTEM_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "<turn>{{ message['role'] }}\n{{ message['content'] }}</turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<turn>assistant\n{% endif %}"
)


@pytest.mark.model
def test_chat_without_system_role_folds_it() -> None:
    from transformers import AutoTokenizer

    from pldc.embedded import prepare_embedded

    tokenizer = AutoTokenizer.from_pretrained(str(prepare_embedded()), local_files_only=True)
    tokenizer.chat_template = NO_SYSTEM_TEMPLATE
    student = cast("Student", SimpleNamespace(name="no-system", tokenizer=tokenizer))
    messages = [
        {"role": "system", "content": "SYSTEM"},
        {"role": "user", "content": "QUESTION"},
        {"role": "assistant", "content": "REJECTED"},
        {"role": "user", "content": "AGAIN"},
    ]
    rendered = render_chat(student, messages)
    assert rendered == (
        "<turn>user\nSYSTEM\n\nQUESTION</turn>\n<turn>assistant\nREJECTED</turn>\n"
        "<turn>user\nAGAIN</turn>\n<turn>assistant\n"
    )
