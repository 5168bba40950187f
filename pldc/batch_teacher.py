"""A teacher that answers from Gemini Batch API result files, for the teacher stages of ``pldc distill build``.

The merge and resolve stages ask the teacher one request per cluster or finding. With
``--export-batch FILE`` they run against a :class:`BatchTeacher`: every request without an
answer is collected, and the stage writes them all to one Batch API input file and stops.
Once the batch has run, possibly on another machine, ``--import-batch FILE`` reads the results
and the build asks again: each answer is validated by the stage's own parser, stored in the
call cache under the same key a live Gemini call would use, and returned.

A request's batch key is its request id followed by ``@`` and 16 hex digits of the SHA-256 of
its cache key, so a results file from an export of other rules cannot answer a changed request.
A result line answers the request whose digest its key ends with, even when the request id
before the ``@`` differs, since the id only names the request.
Every result line that fails or holds an invalid answer is reported with its line number, and
every line that answers no request of a stage that ran is listed as a warning; none is dropped
silently.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pldc.cache import CallCache
from pldc.files import open_output, read_text
from pldc.gemini import GeminiSettings
from pldc.gemini_batch import BatchProblem, BatchRequestLine, read_result_line
from pldc.stage_files import digest
from pldc.teacher import Answer, CallStats, InvalidAnswerError, PendingAnswer, RejectedAnswer, TeacherRequest

logger = logging.getLogger("pldc")

T = TypeVar("T")


@dataclass
class BatchResults:
    """The answer texts of result files by key, and the problems found while reading them."""

    texts: dict[str, tuple[str, int, Path]] = field(default_factory=dict)
    by_digest: dict[str, str] = field(default_factory=dict)
    failed: dict[str, BatchProblem] = field(default_factory=dict)
    problems: list[BatchProblem] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> BatchResults:
        results = cls()
        for number, raw in enumerate(read_text(path).splitlines(), start=1):
            if not raw.strip():
                continue
            line = read_result_line(raw)
            if line.key is None:
                results.problems.append(BatchProblem(None, number, line.problem or "malformed line", path))
            elif line.key in results.texts or line.key in results.failed:
                results.problems.append(
                    BatchProblem(line.key, number, "key appears more than once; only the first is used")
                )
            elif line.text is None:
                results.failed[line.key] = BatchProblem(line.key, number, line.problem or "no answer text", path)
            else:
                results.texts[line.key] = (line.text, number, path)
                results.by_digest.setdefault(line.key.rpartition("@")[2], line.key)
        return results


class BatchTeacher:
    """A :class:`~pldc.teacher.Teacher` that answers from the cache or imported results, or queues the request."""

    def __init__(self, settings: GeminiSettings, cache: CallCache, results: BatchResults | None = None) -> None:
        self.settings = settings
        self.cache = cache
        self.results = results if results is not None else BatchResults()
        self.stats = CallStats()
        self.pending: dict[str, TeacherRequest] = {}
        self.used: set[str] = set()
        self.stages: set[str] = set()
        self.invalid: list[BatchProblem] = []
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return self.settings.model

    def key(self, request_id: str, request: TeacherRequest) -> str:
        return f"{request_id}@{digest(self._parts(request))[:16]}"

    def _parts(self, request: TeacherRequest) -> dict[str, object]:
        return request.cache_parts("gemini", self.settings.model, self.settings.parameters())

    def ask(self, request_id: str, request: TeacherRequest, parse: Callable[[str], T]) -> Answer[T]:
        """Return the answer from the cache or the imported results, or queue the request and raise."""
        parts = self._parts(request)
        key = self.key(request_id, request)
        with self._lock:
            self.used.add(key)
            self.stages.add(_stage(key))
        stored = self.cache.get(parts)
        if stored is not None:
            try:
                value = parse(stored["text"])
            except RejectedAnswer as error:
                logger.warning("%s: cached answer rejected (%s)", request_id, error)
            else:
                self.stats.add(cache_hits=1)
                return Answer(value, stored["text"], int(stored["tokens"]), float(stored["seconds"]), cached=True)
        if key not in self.results.texts and key not in self.results.failed:
            key = self.results.by_digest.get(key.rpartition("@")[2], key)
            with self._lock:
                self.used.add(key)
        if key in self.results.failed:
            problem = self.results.failed[key]
            raise InvalidAnswerError(f"{request_id}: {problem.render()}")
        if key not in self.results.texts:
            with self._lock:
                self.pending[key] = request
            raise PendingAnswer(f"{request_id}: no answer yet; export the batch and import its results")
        text, line, path = self.results.texts[key]
        try:
            value = parse(text)
        except RejectedAnswer as error:
            problem = BatchProblem(key, line, f"invalid answer: {error}", path)
            with self._lock:
                self.invalid.append(problem)
            raise InvalidAnswerError(f"{request_id}: {problem.render()}") from None
        self.cache.put(parts, {"text": text, "tokens": 0, "seconds": 0.0})
        # An imported answer counts as a request: the batch sent it.
        self.stats.add(requests=1)
        return Answer(value, text, 0, 0.0, cached=False)

    def unused_results(self) -> list[BatchProblem]:
        """Return a problem for every result line of a stage that ran whose key no request asked for.

        A stage skipped because its output is up to date asks nothing, so its result lines are not reported.
        """
        unused = [
            BatchProblem(key, line, "answers no request of this run; were the rules changed after the export?", path)
            for key, (_, line, path) in self.results.texts.items()
            if key not in self.used and _stage(key) in self.stages
        ]
        unused.extend(
            problem
            for key, problem in self.results.failed.items()
            if key not in self.used and _stage(key) in self.stages
        )
        return sorted(unused, key=lambda problem: (str(problem.path), problem.line or 0))

    def write_export(self, path: Path) -> int:
        """Write the queued requests as a Batch API input file, sorted by key; return how many."""
        lines = [
            BatchRequestLine.model_validate({"key": key, "request": self.settings.rest_body(request)}).model_dump_json(
                exclude_none=True
            )
            for key, request in sorted(self.pending.items())
        ]
        with open_output(path) as handle:
            for line in lines:
                handle.write(line + "\n")
        return len(lines)


def _stage(key: str) -> str:
    """Return the stage that a request id or batch key belongs to: its first word."""
    return key.split(" ", 1)[0]
