"""evaluate() through the call cache with any backend: hits, misses, refresh, no cache, resume."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pldc.backend import Generation, StudentBackend, user_content
from pldc.cache import CacheMode, CallCache
from pldc.data import Dataset, Example, load_dataset
from pldc.errors import UsageError
from pldc.evaluate import evaluate
from pldc.pipeline import CheckedRuleset, load_ruleset

from conftest import FIXTURES

LABELS = ["positive", "negative"]


@dataclass
class RecordingBackend:
    """A backend without a model: scores favour 'positive' for texts that contain 'great'.

    It records every example it is asked about, so tests can tell computed results from cached ones.
    """

    name: str = "recording"
    supports_logprobs: bool = True
    version: int = 1
    answers: dict[str, str] = field(default_factory=dict)
    scored: list[str] = field(default_factory=list)
    generated: list[str] = field(default_factory=list)
    fail_after: int | None = None

    def identity(self) -> dict[str, Any]:
        return {"backend": "recording", "version": self.version}

    def score(
        self,
        system_prompt: str,
        examples: Sequence[Example],
        labels: Sequence[str],
        input_names: Sequence[str],
        progress: Callable[[int], None] | None = None,
    ) -> list[list[float]]:
        if self.fail_after is not None and len(self.scored) >= self.fail_after:
            raise KeyboardInterrupt
        self.scored.extend(example.id for example in examples)
        positive = [float("great" in user_content(e, input_names).lower()) * self.version for e in examples]
        return [[score, -score] for score in positive]

    def generate(
        self,
        system_prompt: str,
        examples: Sequence[Example],
        input_names: Sequence[str],
        max_new_tokens: int,
        progress: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        self.generated.extend(example.id for example in examples)
        return [Generation(self.answers[example.id], 3, 0.01) for example in examples]


@pytest.fixture
def checked() -> CheckedRuleset:
    return load_ruleset(FIXTURES / "valid" / "minimal.pld")


@pytest.fixture
def dataset(checked: CheckedRuleset) -> Dataset:
    assert checked.ruleset.task is not None
    path = FIXTURES / "data" / "reviews_train.jsonl"
    return load_dataset(path, checked.ruleset.task, "jsonl", {"review": "body"}, "sentiment")


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])


def test_recording_backend_is_a_student_backend() -> None:
    backend: StudentBackend = RecordingBackend()
    assert backend.supports_logprobs


def test_second_run_hits_cache(checked: CheckedRuleset, dataset: Dataset, tmp_path: Path) -> None:
    backend = RecordingBackend()
    first = evaluate(checked, dataset, backend, cache=CallCache(tmp_path / "c.sqlite"), chunk_size=3)
    assert first.cache_hits == 0
    assert first.computed == 9  # 8 examples and the content-free calibration input
    assert _rows(tmp_path / "c.sqlite") == 9
    backend.scored.clear()
    second = evaluate(checked, dataset, backend, cache=CallCache(tmp_path / "c.sqlite"), chunk_size=3)
    assert backend.scored == []
    assert second.cache_hits == 9
    assert second.computed == 0
    assert second.predictions == first.predictions
    assert second.latency_seconds == first.latency_seconds


def test_cache_key_covers_backend_prompt_mode(checked: CheckedRuleset, dataset: Dataset, tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    evaluate(checked, dataset, RecordingBackend(), cache=CallCache(path))
    other_model = evaluate(checked, dataset, RecordingBackend(version=2), cache=CallCache(path))
    assert other_model.cache_hits == 0
    other_prompt = evaluate(checked, dataset, RecordingBackend(), include_rules=False, cache=CallCache(path))
    assert other_prompt.cache_hits == 0
    answers = {example.id: "positive" for example in dataset.examples}
    generated = evaluate(checked, dataset, RecordingBackend(answers=answers), scoring="generate", cache=CallCache(path))
    assert generated.cache_hits == 0
    longer = evaluate(
        checked,
        dataset,
        RecordingBackend(answers=answers),
        scoring="generate",
        max_new_tokens=32,
        cache=CallCache(path),
    )
    assert longer.cache_hits == 0


def test_refresh_recomputes_and_overwrites(checked: CheckedRuleset, dataset: Dataset, tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    evaluate(checked, dataset, RecordingBackend(), calibrate=False, cache=CallCache(path))
    changed = RecordingBackend()
    changed.score = lambda *args, **kwargs: [[0.0, 5.0] for _ in args[1]]  # type: ignore[method-assign]
    refreshed = evaluate(checked, dataset, changed, calibrate=False, cache=CallCache(path, CacheMode.REFRESH))
    assert refreshed.cache_hits == 0
    assert refreshed.computed == 8
    assert {p.predicted for p in refreshed.predictions} == {"negative"}
    assert _rows(path) == 8
    backend = RecordingBackend()
    reread = evaluate(checked, dataset, backend, calibrate=False, cache=CallCache(path))
    assert backend.scored == []
    assert [p.scores for p in reread.predictions] == [p.scores for p in refreshed.predictions]


def test_no_cache_computes_and_stores_nothing(checked: CheckedRuleset, dataset: Dataset, tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    backend = RecordingBackend()
    for _ in range(2):
        result = evaluate(checked, dataset, backend, calibrate=False, cache=CallCache(path, CacheMode.OFF))
        assert result.cache_hits == 0
        assert result.computed == 8
    assert len(backend.scored) == 16
    assert not path.exists()


def test_interrupted_run_keeps_finished_chunks(checked: CheckedRuleset, dataset: Dataset, tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    failing = RecordingBackend(fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        evaluate(checked, dataset, failing, calibrate=False, cache=CallCache(path), chunk_size=3)
    assert _rows(path) == 3
    backend = RecordingBackend()
    resumed = evaluate(checked, dataset, backend, calibrate=False, cache=CallCache(path), chunk_size=3)
    assert backend.scored == [example.id for example in dataset.examples[3:]]
    assert resumed.cache_hits == 3
    whole = evaluate(checked, dataset, RecordingBackend(), calibrate=False, cache=CallCache(path, CacheMode.OFF))
    assert resumed.predictions == whole.predictions


def test_generate_mode_counts_unparseable_as_wrong(checked: CheckedRuleset, dataset: Dataset, tmp_path: Path) -> None:
    answers = {example.id: example.label for example in dataset.examples}
    answers["t1"] = "It is hard to say."
    answers["t2"] = "positive or negative"
    answers["t3"] = "Answer: **pos**"
    backend = RecordingBackend(answers=answers)
    result = evaluate(checked, dataset, backend, scoring="generate", cache=CallCache(tmp_path / "c.sqlite"))
    assert result.unparseable == ("t1", "t2")
    assert result.metrics.accuracy == pytest.approx(6 / 8)
    assert result.calibration is None
    assert result.generated_tokens == 3 * 8
    by_id = {p.example_id: p for p in result.predictions}
    assert by_id["t3"].predicted == "positive"
    assert by_id["t1"].answer == "It is hard to say."
    assert result.to_json()["unparseable"] == {"count": 2, "ids": ["t1", "t2"]}


def test_cot_mode_parses_final_answer_line(checked: CheckedRuleset, dataset: Dataset, tmp_path: Path) -> None:
    answers = {example.id: f"The tone decides it.\nAnswer: {example.label}" for example in dataset.examples}
    answers["t4"] = "The tone is cold, so the review"
    backend = RecordingBackend(answers=answers)
    result = evaluate(checked, dataset, backend, scoring="cot", cache=CallCache(tmp_path / "c.sqlite"))
    assert result.unparseable == ("t4",)
    assert result.metrics.accuracy == pytest.approx(7 / 8)


def test_logprob_mode_needs_logprobs(checked: CheckedRuleset, dataset: Dataset, tmp_path: Path) -> None:
    backend = RecordingBackend(supports_logprobs=False)
    with pytest.raises(UsageError, match="--scoring generate"):
        evaluate(checked, dataset, backend, cache=CallCache(tmp_path / "c.sqlite"))
