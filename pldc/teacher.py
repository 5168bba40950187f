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
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pldc.errors import ModelError

T = TypeVar("T")


class RefusalError(ModelError):
    """Raised when the model declined to answer a request (blocked prompt or safety stop)."""


class InvalidAnswerError(ModelError):
    """Raised when every answer to a request failed validation."""


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


def parse_json_answer(text: str) -> Any:
    """Decode an answer that must be one JSON value, raising :class:`RejectedAnswer` otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise RejectedAnswer(f"not valid JSON ({error.msg} at character {error.pos})") from None
