"""What every teacher model shares: the request, the answer, the errors and the :class:`Teacher` protocol.

A teacher request is a system instruction, one user turn and a response format: a MIME type and,
for JSON answers, a schema in the Gemini API's OpenAPI subset (``type: OBJECT``, ``enum``,
``required``...). Gemini takes the schema as it is; other teachers translate it. A teacher
returns an :class:`Answer` whose text passed the caller's parser, after re-asking a bounded
number of times, or raises :class:`InvalidAnswerError` or :class:`RefusalError`, each a
one-line :class:`~pldc.errors.ModelError` that names the request.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from pldc.errors import ModelError

logger = logging.getLogger("pldc")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class RefusalError(ModelError):
    """Raised when the model declined to answer a request (blocked prompt or safety stop)."""


class InvalidAnswerError(ModelError):
    """Raised when every answer to a request failed validation."""


class PendingAnswer(ModelError):
    """Raised by a teacher that queues requests for a batch, for a request that has no answer yet."""


class RejectedAnswer(ValueError):
    """Raised by an answer parser; the message says why the answer was rejected."""


@dataclass(frozen=True)
class TeacherRequest:
    """One request: the system instruction, the user turn and the response format.

    ``response_schema`` is in the Gemini API's OpenAPI subset, as sent in
    ``generationConfig.responseSchema``.
    """

    system: str
    user: str
    response_mime_type: str
    response_schema: dict[str, Any]
    max_output_tokens: int | None = None

    def cache_parts(self, backend: str, model: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """Return what identifies this request to ``model`` in the call cache."""
        return {
            "backend": backend,
            "model": model,
            "parameters": parameters,
            "max_output_tokens": self.max_output_tokens,
            "response_mime_type": self.response_mime_type,
            "response_schema": self.response_schema,
            "system": self.system,
            "input": self.user,
        }


@dataclass(frozen=True)
class Answer(Generic[T]):
    """A validated answer, its text and cost; ``cached`` is True when no request was sent."""

    value: T
    text: str
    tokens: int
    seconds: float
    cached: bool


@dataclass
class CallStats:
    """Counts of what a teacher did, for the end-of-run summary."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    reasks: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class Teacher(Protocol):
    """A model that answers :class:`TeacherRequest` s through the call cache.

    ``model`` is the id recorded with every answer (in ``extract.jsonl`` and in the header of a
    built ruleset).
    """

    stats: CallStats

    @property
    def model(self) -> str: ...

    def ask(self, request_id: str, request: TeacherRequest, parse: Callable[[str], T]) -> Answer[T]: ...


def reask_message(reason: str) -> str:
    """Build the user turn that follows a rejected answer."""
    return (
        f"Your previous answer was rejected: {reason}. "
        "Reply again with only the answer, in exactly the format the response schema requires."
    )


def validate_answer(model: type[M], text: str) -> M:
    """Validate an answer text against a pydantic model, raising :class:`RejectedAnswer` with the first error."""
    try:
        return model.model_validate_json(text)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "answer"
        raise RejectedAnswer(f"{where}: {first['msg']} ({error.error_count()} errors in all)") from None


def parse_json_answer(text: str) -> Any:
    """Decode an answer that must be one JSON value, raising :class:`RejectedAnswer` otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise RejectedAnswer(f"not valid JSON ({error.msg} at character {error.pos})") from None


@dataclass
class AskRound(Generic[T]):
    """The parsed answers of several requests by request id, and the ids still waiting or without a valid answer."""

    answers: dict[str, T] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def ask_each(
    teacher: Teacher,
    requests: Sequence[tuple[str, TeacherRequest, Callable[[str], T]]],
    workers: int = 4,
    progress: Callable[[int], None] | None = None,
) -> AskRound[T]:
    """Send ``(request id, request, parser)`` triples ``workers`` at a time and sort the outcomes.

    A refusal or an answer that stays invalid is logged and listed in ``failures``; a request
    that a batch teacher queued is listed in ``pending``. Any other error stops the round.
    """
    outcome: AskRound[T] = AskRound()

    def one(item: tuple[str, TeacherRequest, Callable[[str], T]]) -> tuple[str, T | None, str | None]:
        request_id, request, parse = item
        try:
            return request_id, teacher.ask(request_id, request, parse).value, None
        except PendingAnswer:
            return request_id, None, None
        except (InvalidAnswerError, RefusalError) as error:
            return request_id, None, str(error)
        finally:
            if progress is not None:
                progress(1)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="pldc-teacher") as pool:
        for request_id, value, failure in pool.map(one, requests):
            if value is not None:
                outcome.answers[request_id] = value
            elif failure is not None:
                logger.warning("%s", failure)
                outcome.failures.append(request_id)
            else:
                outcome.pending.append(request_id)
    return outcome
