"""The Gemini client and student backend, run with the real google-genai SDK against a local server."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ValidationError

pytest.importorskip("google.genai")

from gemini_server import GeminiServer, serve

from pldc import gemini_embed
from pldc.cache import CallCache
from pldc.data import Example
from pldc.errors import ModelError, UsageError
from pldc.gemini import GeminiClient, GeminiSettings, GeminiStudent, api_key_from_env
from pldc.gemini_embed import GeminiEmbedder
from pldc.teacher import InvalidAnswerError, RefusalError, RejectedAnswer, TeacherRequest, parse_json_answer

from conftest import ROOT

SECRET_KEY = "test-key-9f8e7d6c5b4a"
SCHEMA = {
    "type": "OBJECT",
    "properties": {"label": {"type": "STRING", "enum": ["positive", "negative"]}, "reason": {"type": "STRING"}},
    "required": ["label", "reason"],
}


class Verdict(BaseModel):
    label: Literal["positive", "negative"]
    reason: str


def parse_verdict(text: str) -> Verdict:
    try:
        return Verdict.model_validate(parse_json_answer(text))
    except ValidationError as error:
        raise RejectedAnswer(f"does not fit the schema ({error.error_count()} errors)") from None


def verdict_request(review: str) -> TeacherRequest:
    return TeacherRequest(
        system="Classify the sentiment of a product review and give a reason.",
        user=f"Review: {review}",
        response_mime_type="application/json",
        response_schema=SCHEMA,
    )


@pytest.fixture
def server() -> Iterator[GeminiServer]:
    with serve("client.json") as running:
        yield running


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[CallCache]:
    store = CallCache(tmp_path / "calls.sqlite")
    yield store
    store.close()


def make_client(server: GeminiServer, cache: CallCache, **overrides: object) -> GeminiClient:
    options: dict[str, object] = {
        "model": "gemini-3-flash-preview",
        "thinking_budget": 512,
        "max_attempts": 3,
        "max_reasks": 2,
        "initial_backoff": 0.01,
        "max_backoff": 0.05,
        "timeout": 10.0,
        "base_url": server.url,
    }
    options.update(overrides)
    return GeminiClient(GeminiSettings(**options), cache, api_key=SECRET_KEY)  # type: ignore[arg-type]


def test_answer_parsed_from_real_client(server: GeminiServer, cache: CallCache) -> None:
    client = make_client(server, cache)
    answer = client.ask("r1", verdict_request("Great blender, works every morning."), parse_verdict)
    assert answer.value.label == "positive"
    assert answer.cached is False
    assert answer.tokens == 12
    assert server.calls_for("verdict-blender") == 1
    [request] = server.requests
    assert request.model == "gemini-3-flash-preview"
    assert request.api_key == SECRET_KEY
    config = request.body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"]["required"] == ["label", "reason"]
    assert request.body["systemInstruction"]["parts"][0]["text"].startswith("Classify")


def test_thought_parts_left_out_of_answer(server: GeminiServer, cache: CallCache) -> None:
    client = make_client(server, cache)
    answer = client.ask("r1", verdict_request("Great blender, works every morning."), parse_verdict)
    assert "Thinking" not in answer.text


def test_rate_limit_retried_then_succeeds(
    server: GeminiServer, cache: CallCache, caplog: pytest.LogCaptureFixture
) -> None:
    server.inject("verdict-broke", "429")
    client = make_client(server, cache)
    with caplog.at_level(logging.INFO, logger="pldc"):
        answer = client.ask("r2", verdict_request("Broke after a week."), parse_verdict)
    assert answer.value.label == "negative"
    assert server.calls_for("verdict-broke") == 2
    assert client.stats.retries == 1
    assert "HTTP 429 RESOURCE_EXHAUSTED" in caplog.text
    assert "example r2" in caplog.text


def test_server_errors_exhausted_raise_model_error(
    server: GeminiServer, cache: CallCache, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    server.inject("verdict-broke", "500", "500", "500")
    client = make_client(server, cache)
    with caplog.at_level(logging.DEBUG), pytest.raises(ModelError) as raised:
        client.ask("r2", verdict_request("Broke after a week."), parse_verdict)
    message = str(raised.value)
    assert server.calls_for("verdict-broke") == 3
    assert "example r2" in message
    assert "after 3 attempts" in message
    assert "HTTP 500 INTERNAL" in message
    assert "\n" not in message
    captured = capsys.readouterr()
    for text in (message, caplog.text, captured.out, captured.err):
        assert SECRET_KEY not in text
    assert len(cache) == 0


def test_malformed_json_reasked_then_accepted(server: GeminiServer, cache: CallCache) -> None:
    server.inject("verdict-broke", "malformed")
    client = make_client(server, cache)
    answer = client.ask("r2", verdict_request("Broke after a week."), parse_verdict)
    assert answer.value.label == "negative"
    assert server.calls_for("verdict-broke") == 2
    assert client.stats.reasks == 1
    reask = server.requests[-1].body["contents"]
    assert [turn["role"] for turn in reask] == ["user", "model", "user"]
    assert "not valid JSON" in reask[2]["parts"][0]["text"]


def test_malformed_json_every_time_raises(server: GeminiServer, cache: CallCache) -> None:
    server.inject("verdict-broke", "malformed", "malformed", "malformed")
    client = make_client(server, cache, max_reasks=2)
    with pytest.raises(InvalidAnswerError) as raised:
        client.ask("r2", verdict_request("Broke after a week."), parse_verdict)
    assert "example r2" in str(raised.value)
    assert server.calls_for("verdict-broke") == 3
    assert len(cache) == 0


@pytest.mark.parametrize("fault", ["refusal", "blocked"])
def test_refusal_names_example(server: GeminiServer, cache: CallCache, fault: str) -> None:
    server.inject("verdict-broke", fault)
    client = make_client(server, cache)
    with pytest.raises(RefusalError) as raised:
        client.ask("r2", verdict_request("Broke after a week."), parse_verdict)
    assert "example r2" in str(raised.value)
    assert "SAFETY" in str(raised.value)
    assert server.calls_for("verdict-broke") == 1


def test_cached_rerun_sends_nothing(server: GeminiServer, tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    first_cache = CallCache(path)
    first = make_client(server, first_cache).ask(
        "r1", verdict_request("Great blender, works every morning."), parse_verdict
    )
    first_cache.close()
    second_cache = CallCache(path)
    second = make_client(server, second_cache).ask(
        "r1", verdict_request("Great blender, works every morning."), parse_verdict
    )
    second_cache.close()
    assert server.total_calls == 1
    assert second.cached is True
    assert second.value == first.value


def test_cache_key_includes_model_parameters(server: GeminiServer, cache: CallCache) -> None:
    make_client(server, cache).ask("r1", verdict_request("Great blender, works every morning."), parse_verdict)
    make_client(server, cache, thinking_budget=0).ask(
        "r1", verdict_request("Great blender, works every morning."), parse_verdict
    )
    assert server.total_calls == 2


def test_client_error_not_retried(server: GeminiServer, cache: CallCache) -> None:
    client = make_client(server, cache)
    with pytest.raises(ModelError) as raised:
        client.ask("r9", verdict_request("No recorded reply matches this text."), parse_verdict)
    assert "HTTP 400 INVALID_ARGUMENT" in str(raised.value)
    assert server.total_calls == 1


def test_api_key_read_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", "from-google-variable")
    assert api_key_from_env() == "from-google-variable"
    monkeypatch.setenv("GEMINI_API_KEY", "from-gemini-variable")
    assert api_key_from_env() == "from-gemini-variable"


def test_missing_api_key_explains_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(ModelError, match="set GEMINI_API_KEY"):
        api_key_from_env()


def test_student_generates_labels_from_enum(server: GeminiServer, cache: CallCache) -> None:
    student = GeminiStudent(make_client(server, cache, thinking_budget=0), ["positive", "negative"])
    examples = [
        Example("r3", {"review": "Lovely colour, very quiet."}, "positive"),
        Example("r2", {"review": "Broke after a week."}, "negative"),
    ]
    generations = student.generate("Label the review.", examples, ["review"], max_new_tokens=8)
    assert [g.text for g in generations] == ["positive", "negative"]
    assert student.supports_logprobs is False
    config = server.requests[0].body["generationConfig"]
    assert config["responseMimeType"] == "text/x.enum"
    assert config["responseSchema"]["enum"] == ["positive", "negative"]
    assert config["maxOutputTokens"] == 8


def test_student_score_raises_model_error(server: GeminiServer, cache: CallCache) -> None:
    student = GeminiStudent(make_client(server, cache), ["positive", "negative"])
    with pytest.raises(ModelError, match="generate mode"):
        student.score("Label the review.", [], ["positive", "negative"], ["review"])


def test_thinking_level_sent_to_model(server: GeminiServer, cache: CallCache) -> None:
    client = make_client(server, cache, thinking_budget=None, thinking_level="low")
    client.ask("r1", verdict_request("Great blender, works every morning."), parse_verdict)
    thinking = server.requests[0].body["generationConfig"]["thinkingConfig"]
    assert thinking.get("thinkingLevel", thinking.get("thinking_level")) == "LOW"
    assert "thinkingBudget" not in thinking
    assert "thinking_budget" not in thinking


def test_thinking_budget_and_level_exclusive() -> None:
    with pytest.raises(UsageError, match="not both"):
        GeminiSettings(thinking_budget=128, thinking_level="high")


def test_timeouts_exhausted_raise_model_error(server: GeminiServer, cache: CallCache) -> None:
    server.delay = 1.5
    client = make_client(server, cache, timeout=0.3, max_attempts=2)
    with pytest.raises(ModelError) as raised:
        client.ask("r1", verdict_request("Great blender, works every morning."), parse_verdict)
    assert "after 2 attempts" in str(raised.value)
    assert "Timeout" in str(raised.value)
    assert server.calls_for("verdict-blender") == 2


# ---- embeddings -------------------------------------------------------------

RULE_TEXTS = [
    "The review praises how well or how reliably the product works.",
    "The review reports that the product broke, cracked or stopped working soon after purchase.",
    "The review compliments the product's look, feel or noise level and makes no complaint.",
    "The review reports a part that broke or cracked during normal first use.",
    "The review complains that the seller or support did not help with a problem.",
]


@pytest.fixture
def embedding_server() -> Iterator[GeminiServer]:
    with serve("embeddings.json") as running:
        yield running


def rule_items(count: int = 5) -> list[tuple[str, str]]:
    return [(f"r{index + 1}", text) for index, text in enumerate(RULE_TEXTS[:count])]


def test_embeddings_returned_in_order(embedding_server: GeminiServer, cache: CallCache) -> None:
    embedder = GeminiEmbedder(make_client(embedding_server, cache), dimensions=4)
    vectors = embedder.embed(rule_items())
    assert len(vectors) == 5
    assert vectors[0] == [0.61, 0.12, -0.05, 0.78]
    assert vectors[4] == [-0.40, 0.10, 0.90, 0.05]
    [request] = embedding_server.requests
    assert request.method == "batchEmbedContents"
    assert request.model == "gemini-embedding-001"
    assert request.body["requests"][0]["taskType"] == "CLUSTERING"
    assert request.body["requests"][0]["outputDimensionality"] == 4


def test_embeddings_cached_per_text(embedding_server: GeminiServer, cache: CallCache) -> None:
    embedder = GeminiEmbedder(make_client(embedding_server, cache), dimensions=4)
    embedder.embed(rule_items(3))
    again = embedder.embed(rule_items(5))
    assert len(again) == 5
    assert all(count == 1 for count in embedding_server.embedded.values())
    assert len(embedding_server.requests) == 2


def test_embeddings_split_into_batches(
    embedding_server: GeminiServer, cache: CallCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gemini_embed, "MAX_BATCH", 2)
    embedder = GeminiEmbedder(make_client(embedding_server, cache), dimensions=4)
    assert len(embedder.embed(rule_items())) == 5
    assert [len(request.body["requests"]) for request in embedding_server.requests] == [2, 2, 1]


def test_embedding_server_error_retried(embedding_server: GeminiServer, cache: CallCache) -> None:
    embedding_server.inject_embedding("500", "429")
    client = make_client(embedding_server, cache)
    vectors = GeminiEmbedder(client, dimensions=4).embed(rule_items(2))
    assert len(vectors) == 2
    assert len(embedding_server.requests) == 3
    assert client.stats.retries == 2


def test_embedding_wrong_dimensions_raise(embedding_server: GeminiServer, cache: CallCache) -> None:
    embedder = GeminiEmbedder(make_client(embedding_server, cache), dimensions=768)
    with pytest.raises(ModelError, match="example r1: gemini-embedding-001 returned 4 dimensions, not 768"):
        embedder.embed(rule_items(1))
    assert len(cache) == 0


def test_eval_with_gemini_backend_scores_generated_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from pldc.cli import main

    monkeypatch.setenv("GEMINI_API_KEY", SECRET_KEY)
    task = ROOT / "tests" / "fixtures" / "distill" / "sentiment_task.pld"
    data = ROOT / "tests" / "fixtures" / "distill" / "reviews.jsonl"
    with serve("student_reviews.json") as server:
        server.inject("review-r2", "429")
        arguments = ["eval", str(task), "--data", str(data), "--framing", "jsonl", "--map", "review=review"]
        arguments += ["--label-field", "sentiment", "--backend", "gemini", "--base-url", server.url]
        arguments += ["--model", "gemini-test", "--scoring", "generate", "--no-rules"]
        arguments += ["--cache", str(tmp_path / "calls.sqlite"), "--json"]
        output = tmp_path / "out.json"
        with output.open("w") as handle:
            monkeypatch.setattr("sys.stdout", handle)
            assert main(arguments) == 0
        assert sum(server.calls.values()) == 7
    [result] = json.loads(output.read_text())["results"]
    assert result["metrics"]["accuracy"] == pytest.approx(5 / 6)
    assert result["unparseable"] == {"count": 0, "ids": []}
    assert SECRET_KEY not in output.read_text()
