"""The OpenAI-compatible backend: a real server on 127.0.0.1, and a scripted fake for faults."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai_server import FakeServer, Reply, completion

from pldc.backend_cli import load_backend
from pldc.cli import build_parser, main
from pldc.data import Example
from pldc.errors import ModelError, UsageError
from pldc.openai_backend import OpenAIBackend, Scoring, label_logprob, match_label
from pldc.openai_http import RetryPolicy

from conftest import DATA, ROOT

FAKE_KEY = "sk-pldc-test-4f1c9a0e7b"
FAST_RETRY = RetryPolicy(retries=2, backoff=0.01, max_backoff=0.02)
LABELS = ["gender", "profession", "race", "religion"]
INPUTS = ["sentence"]


def examples(count: int) -> list[Example]:
    return [Example(f"e{i}", {"sentence": f"sentence number {i}"}, "race", 0) for i in range(count)]


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PLDC_TEST_KEY", FAKE_KEY)
    return FAKE_KEY


def backend(fake: FakeServer, **options: Any) -> OpenAIBackend:
    options.setdefault("scoring", Scoring.GENERATE)
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("api_key_env", "PLDC_TEST_KEY")
    return OpenAIBackend(fake.url, "fake-model", **options)


# -- retries and errors -----------------------------------------------------------------


def test_429_retried_after_retry_after(fake: FakeServer, api_key: str) -> None:
    fake.script = [Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})]
    started = time.monotonic()
    [generation] = backend(fake).generate("system", examples(1), INPUTS, max_new_tokens=4)
    assert generation.text == "race"
    assert len(fake.requests) == 2
    assert time.monotonic() - started >= 1.0


def test_500_exhausts_retries(fake: FakeServer, api_key: str, caplog: pytest.LogCaptureFixture) -> None:
    fake.answer = lambda body: Reply(500, {"error": {"message": f"internal error for {api_key}"}})
    with caplog.at_level(logging.DEBUG, logger="pldc"), pytest.raises(ModelError) as raised:
        backend(fake).generate("system", examples(1), INPUTS, max_new_tokens=4)
    message = str(raised.value)
    assert raised.value.exit_code == 4
    assert len(fake.requests) == 3
    assert fake.url + "/chat/completions" in message
    assert "HTTP 500" in message
    assert "\n" not in message
    assert api_key not in message
    assert api_key not in caplog.text
    assert fake.requests[0][0]["Authorization"] == f"Bearer {api_key}"


def test_500_cli_exit_4_without_key(fake: FakeServer, tmp_path: Path) -> None:
    fake.answer = lambda body: Reply(503, {"error": {"message": "overloaded"}})
    command = [sys.executable, "-m", "pldc", "-vv", "eval", str(ROOT / "rulesets" / "stereoset_domain.pld")]
    command += ["--data", str(DATA / "stereoset" / "dev.jsonl"), "--limit", "2", "--no-calibration"]
    command += ["--backend", "openai", "--base-url", fake.url, "--model", "fake", "--api-key-env", "PLDC_TEST_KEY"]
    result = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PLDC_TEST_KEY": FAKE_KEY},
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("pldc: error:")]
    assert result.returncode == 4, result.stderr
    assert len(errors) == 1, result.stderr
    assert "HTTP 503" in errors[0]
    assert fake.url in errors[0]
    assert "retry 1 of 4" in result.stderr
    assert "Traceback" not in result.stderr
    assert FAKE_KEY not in result.stderr + result.stdout
    assert fake.requests[0][0]["Authorization"] == f"Bearer {FAKE_KEY}"


def test_cli_eval_generate_scoring(fake: FakeServer, tmp_path: Path) -> None:
    fake.answer = lambda body: Reply(body=completion("Race."))
    predictions = tmp_path / "predictions.jsonl"
    command = [sys.executable, "-m", "pldc", "eval", str(ROOT / "rulesets" / "stereoset_domain.pld"), "--json"]
    command += ["--data", str(DATA / "stereoset" / "dev.jsonl"), "--limit", "3", "--no-calibration"]
    command += ["--backend", "openai", "--base-url", fake.url, "--model", "fake", "--predictions", str(predictions)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == f"fake at {fake.url}"
    assert report["results"][0]["examples"] == 3
    assert report["results"][0]["prompt_tokens"] is None
    assert len(fake.requests) == 3 + 3
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [row["predicted"] for row in rows] == ["race"] * 3


def test_401_fails_without_retry(fake: FakeServer, api_key: str) -> None:
    fake.answer = lambda body: Reply(401, {"error": {"message": f"invalid key {api_key}"}})
    with pytest.raises(ModelError) as raised:
        backend(fake).generate("system", examples(1), INPUTS, max_new_tokens=4)
    assert len(fake.requests) == 1
    assert "authentication failed (HTTP 401" in str(raised.value)
    assert "--api-key-env" in str(raised.value)
    assert api_key not in str(raised.value)


def test_timeout_retried_then_fails(fake: FakeServer) -> None:
    fake.answer = lambda body: Reply(body=completion("race"), delay=1.5)
    with pytest.raises(ModelError) as raised:
        backend(fake, request_timeout=0.3).generate("system", examples(1), INPUTS, max_new_tokens=4)
    assert len(fake.requests) == 3
    assert "no response within 0.3 s" in str(raised.value)


def test_timeout_then_success(fake: FakeServer) -> None:
    fake.script = [Reply(body=completion("late"), delay=1.0)]
    [generation] = backend(fake, request_timeout=0.3).generate("system", examples(1), INPUTS, max_new_tokens=4)
    assert generation.text == "race"
    assert len(fake.requests) == 2


def test_connection_refused_fails() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "m", scoring=Scoring.GENERATE, retry=FAST_RETRY)
    with pytest.raises(ModelError) as raised:
        closed.generate("system", examples(1), INPUTS, max_new_tokens=4)
    assert "failed after 3 attempts: connection failed" in str(raised.value)


def test_concurrency_is_bounded(fake: FakeServer) -> None:
    fake.answer = lambda body: Reply(body=completion("race"), delay=0.2)
    generations = backend(fake, concurrency=3).generate("system", examples(12), INPUTS, max_new_tokens=4)
    assert len(generations) == 12
    assert fake.max_in_flight == 3


def test_failure_returns_no_results(fake: FakeServer) -> None:
    fake.answer = lambda body: (
        Reply(400, {"error": {"message": "bad"}}) if "number 5" in json.dumps(body) else Reply(body=completion("race"))
    )
    done: list[int] = []
    with pytest.raises(ModelError, match="request rejected"):
        backend(fake, concurrency=2).generate("system", examples(8), INPUTS, max_new_tokens=4, progress=done.append)
    assert sum(done) < 8


# -- requests, capability detection and scoring -------------------------------------------


def test_generate_request_and_result(fake: FakeServer) -> None:
    fake.answer = lambda body: Reply(body=completion("religion", tokens=2))
    [generation] = backend(fake).generate("the rules", examples(1), INPUTS, max_new_tokens=7)
    _, body = fake.requests[0]
    assert body["model"] == "fake-model"
    assert body["temperature"] == 0
    assert body["max_tokens"] == 7
    assert body["messages"] == [
        {"role": "system", "content": "the rules"},
        {"role": "user", "content": "sentence: sentence number 0"},
    ]
    assert generation.text == "religion"
    assert generation.tokens == 2
    assert generation.seconds > 0


def top(token: str, logprob: float, *alternatives: tuple[str, float]) -> dict[str, Any]:
    listed = [(token, logprob), *alternatives]
    return {"token": token, "logprob": logprob, "top_logprobs": [{"token": t, "logprob": p} for t, p in listed]}


def logprob_server(body: dict[str, Any]) -> Reply:
    if not body.get("logprobs"):
        return Reply(body=completion("anything"))
    answer = [top("rel", -0.5, ("race", -1.5), ("gender", -2.0), ("prof", -3.0)), top("igion", -0.1, ("ig", -4.0))]
    return Reply(body=completion("religion", answer))


def test_detects_logprobs(fake: FakeServer) -> None:
    fake.answer = logprob_server
    detected = backend(fake, scoring=None)
    assert detected.scoring is Scoring.LOGPROBS
    assert detected.supports_logprobs


def test_logprob_scores_and_bounds(fake: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    fake.answer = logprob_server
    with caplog.at_level(logging.WARNING, logger="pldc"):
        [row] = backend(fake, scoring=Scoring.LOGPROBS).score("system", examples(1), LABELS, INPUTS)
    assert row == pytest.approx([-2.0, -3.0, -1.5, -0.6])
    assert fake.requests[0][1]["top_logprobs"] == 20
    assert "1 of 4 label scores are upper bounds" in caplog.text


def test_detects_guided_choice(fake: FakeServer) -> None:
    def guided(body: dict[str, Any]) -> Reply:
        choices = (body.get("structured_outputs") or {}).get("choice")
        return Reply(body=completion(choices[-1] if choices else "no idea"))

    fake.answer = guided
    detected = backend(fake, scoring=None)
    assert detected.scoring is Scoring.GUIDED_CHOICE
    assert not detected.supports_logprobs
    assert detected.score("system", examples(2), LABELS, INPUTS) == [[-math.inf, -math.inf, -math.inf, 0.0]] * 2


def test_detects_json_schema(fake: FakeServer) -> None:
    def schema(body: dict[str, Any]) -> Reply:
        if "response_format" not in body:
            return Reply(400, {"error": {"message": "unknown field"}})
        enum = body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"]
        return Reply(body=completion(json.dumps({"label": enum[0]})))

    fake.answer = schema
    detected = backend(fake, scoring=None)
    assert detected.scoring is Scoring.JSON_SCHEMA
    assert detected.score("system", examples(1), LABELS, INPUTS) == [[0.0, -math.inf, -math.inf, -math.inf]]


def test_detects_generate(fake: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    fake.answer = lambda body: Reply(body=completion("Race."))
    with caplog.at_level(logging.INFO, logger="pldc"):
        detected = backend(fake, scoring=None)
    assert detected.scoring is Scoring.GENERATE
    assert "scoring 'generate'" in caplog.text
    assert len(fake.requests) == 3
    assert detected.score("system", examples(1), LABELS, INPUTS) == [[-math.inf, -math.inf, 0.0, -math.inf]]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("race", "race"),
        (" Race.\n", "race"),
        ('"religion"', "religion"),
        ("**gender**", "gender"),
        ("profession: the text is about a job", "profession"),
        ("The answer is race", None),
        ("racecar", None),
        ("", None),
    ],
)
def test_match_label(answer: str, expected: str | None) -> None:
    assert match_label(answer, LABELS) == expected


def test_label_logprob_single_token_exact() -> None:
    positions = [("race", {"race": -0.2, "gender": -1.9, " religion": -2.5})]
    assert label_logprob("gender", positions) == (-1.9, True)
    assert label_logprob("religion", positions) == (-2.5, True)


def test_label_logprob_missing_token_bounded() -> None:
    positions = [("race", {"race": -0.2, "gender": -1.9})]
    assert label_logprob("profession", positions) == (-1.9, False)


def test_logprobs_without_alternatives_not_detected(fake: FakeServer) -> None:
    fake.answer = lambda body: Reply(body=completion("race", [{"token": "race", "logprob": -0.1, "top_logprobs": []}]))
    assert backend(fake, scoring=None).scoring is Scoring.GENERATE


def test_identity_has_no_key(fake: FakeServer, api_key: str) -> None:
    identity = backend(fake).identity()
    assert identity == {"backend": "openai", "base_url": fake.url, "model": "fake-model"}
    assert api_key not in repr(backend(fake).__dict__)


# -- command line ----------------------------------------------------------------------------


def eval_args(*extra: str) -> list[str]:
    return ["eval", "rules.pld", "--data", "data.jsonl", *extra]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--base-url", "http://127.0.0.1:1/v1"], "--base-url applies only to --backend openai"),
        (["--concurrency", "2", "--api-key-env", "K"], "--api-key-env, --concurrency apply only"),
        (["--backend", "openai", "--model", "m"], "needs --base-url"),
        (["--backend", "openai", "--base-url", "http://127.0.0.1:1/v1"], "needs --model NAME"),
        (["--backend", "openai", "--base-url", "ftp://host", "--model", "m"], r"expected an http\(s\) URL"),
        (
            ["--backend", "openai", "--base-url", "http://127.0.0.1:1", "--model", "m", "--concurrency", "0"],
            "at least 1",
        ),
    ],
)
def test_backend_usage_errors(extra: list[str], message: str) -> None:
    args = build_parser().parse_args(eval_args(*extra))
    with pytest.raises(UsageError, match=message) as raised:
        load_backend(args)
    assert raised.value.exit_code == 2


def test_calibration_needs_logprobs(fake: FakeServer) -> None:
    fake.answer = lambda body: Reply(body=completion("race"))
    args = build_parser().parse_args(eval_args("--backend", "openai", "--base-url", fake.url, "--model", "m"))
    with pytest.raises(UsageError, match="pass --no-calibration"):
        load_backend(args)


def test_cli_usage_error_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(eval_args("--base-url", "http://127.0.0.1:1/v1")) == 2
    assert "applies only to --backend openai" in capsys.readouterr().err


# -- a real server: transformers serve with the embedded student ---------------------------

SERVER_START_SECONDS = 240
# No hub access, and one torch thread: on two busy cores a 6-token answer took about 1 s with one
# thread against 4 to 5 s with two.
SERVER_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
EQUIVALENCE_EXAMPLES = 3
EQUIVALENCE_TOKENS = 6


@pytest.fixture(scope="module")
def served_student(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``transformers serve`` on 127.0.0.1 with the embedded student; yields the base URL and model name."""
    from pldc.embedded import prepare_embedded

    model = str(prepare_embedded())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [sys.executable, "-c", "import sys; from transformers.cli.transformers import main; sys.exit(main())"]
    command += ["serve", model, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    with log.open("w") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **SERVER_ENVIRONMENT}
        )
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not ready in {SERVER_START_SECONDS} s:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1", model
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.model
def test_real_server_matches_transformers(served_student: tuple[str, str]) -> None:
    """The server's answers equal the transformers backend's on the same model and prompts."""
    pytest.importorskip("torch")
    from pldc.compile import compile_prompt
    from pldc.data import load_dataset
    from pldc.pipeline import load_ruleset
    from pldc.student import load_student

    base_url, model = served_student
    checked = load_ruleset(ROOT / "rulesets" / "stereoset_domain.pld")
    task = checked.ruleset.task
    assert task is not None
    labels = [label.name.value for label in task.labels]
    input_names = [i.name.value for i in task.inputs]
    dataset = load_dataset(
        DATA / "stereoset" / "dev.jsonl", task, "stereoset-domain", {}, "label", EQUIVALENCE_EXAMPLES
    )
    # The prompt without rules is about 150 words against 860 with them, which keeps this test near two
    # minutes on two CPU cores; the backend sends either the same way.
    prompt = compile_prompt(checked.ruleset, checked.ordered, "default", include_rules=False).text
    remote = OpenAIBackend(base_url, model, concurrency=2, request_timeout=120)
    local = load_student("embedded")

    if remote.supports_logprobs:
        remote_scores = remote.score(prompt, dataset.examples, labels, input_names)
        local_scores = local.score(prompt, dataset.examples, labels, input_names)
        for remote_row, local_row in zip(remote_scores, local_scores, strict=True):
            assert remote_row.index(max(remote_row)) == local_row.index(max(local_row))
        return

    # transformers serve rejects or ignores logprobs and response_format, so the backend generates.
    # score() matches labels in the same greedy answer, a few tokens longer: equal answers mean equal predictions.
    assert remote.scoring is Scoring.GENERATE
    generations = remote.generate(prompt, dataset.examples, input_names, EQUIVALENCE_TOKENS)
    for example, generation in zip(dataset.examples, generations, strict=True):
        expected_text, expected_tokens = greedy_answer(local, prompt, example, input_names)
        assert generation.text == expected_text, example.id
        assert generation.tokens == expected_tokens, example.id
        assert match_label(generation.text, labels) == match_label(expected_text, labels), example.id


def greedy_answer(student: Any, prompt: str, example: Example, input_names: list[str]) -> tuple[str, int]:
    """Greedy answer of the transformers model to the chat the backend sends, and its token count."""
    import torch

    from pldc.backend import user_content

    messages = [{"role": "system", "content": prompt}, {"role": "user", "content": user_content(example, input_names)}]
    text = student.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    encoded = student.tokenizer(text, add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        output = student.model.generate(**encoded, max_new_tokens=EQUIVALENCE_TOKENS, do_sample=False)
    new = output[0, encoded["input_ids"].shape[1] :]
    return student.tokenizer.decode(new, skip_special_tokens=True), int(new.shape[0])
