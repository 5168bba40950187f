"""What every teacher model shares: the request, the answer, the errors and the :class:`Teacher` protocol.

A teacher request is a system instruction, one user turn and a response format: a MIME type and,
for JSON answers, a schema in the Gemini API's OpenAPI subset (``type: OBJECT``, ``enum``,
``required``...). Gemini takes the schema as it is; other teachers translate it with
:func:`json_schema`. A teacher returns an :class:`Answer` whose text passed the caller's
parser, after re-asking a bounded number of times, or raises :class:`InvalidAnswerError` or
:class:`RefusalError`, each a one-line :class:`~pldc.errors.ModelError` that names the request.
Every teacher runs the call cache lookup and the re-ask loop through :func:`ask_through_cache`
and supplies only the function that sends one conversation to its model.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from pldc.errors import ModelError

if TYPE_CHECKING:
    from pldc.cache import CallCache

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


@dataclass(frozen=True)
class Turn:
    """One turn of a teacher conversation after the system instruction."""

    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True)
class Reply:
    """The text a model returned for one conversation, and the tokens it generated."""

    text: str
    tokens: int


def ask_through_cache(
    request_id: str,
    request: TeacherRequest,
    parse: Callable[[str], T],
    *,
    send: Callable[[Sequence[Turn]], Reply],
    cache: CallCache,
    cache_parts: dict[str, Any],
    stats: CallStats,
    model: str,
    max_reasks: int,
    hint: str = "re-run to ask again or raise --max-reasks",
) -> Answer[T]:
    """Return the parsed answer to ``request``, from the cache or from ``send``.

    A cached answer is parsed again, so a parser that became stricter rejects it and the model
    is asked anew. Otherwise ``send`` gets the conversation, which starts with the user turn.
    After an answer that ``parse`` rejects, the conversation becomes the user turn, the rejected
    answer and :func:`reask_message`, up to ``max_reasks`` times. An empty answer is sent again
    unchanged instead, because some APIs (Gemini's) reject an empty model turn. Only an accepted
    answer is stored under ``cache_parts``. Raises :class:`InvalidAnswerError` naming
    ``request_id`` when every answer was rejected; ``hint`` ends its message.
    """
    stored = cache.get(cache_parts)
    if stored is not None:
        try:
            value = parse(stored["text"])
        except RejectedAnswer as error:
            logger.warning("example %s: cached answer rejected (%s); asking the model again", request_id, error)
        else:
            stats.add(cache_hits=1)
            return Answer(value, stored["text"], int(stored["tokens"]), float(stored["seconds"]), cached=True)
    answer = _ask_with_reasks(request_id, request, parse, send, stats, model, max_reasks, hint)
    cache.put(cache_parts, {"text": answer.text, "tokens": answer.tokens, "seconds": answer.seconds})
    return answer


def _ask_with_reasks(
    request_id: str,
    request: TeacherRequest,
    parse: Callable[[str], T],
    send: Callable[[Sequence[Turn]], Reply],
    stats: CallStats,
    model: str,
    max_reasks: int,
    hint: str,
) -> Answer[T]:
    first = Turn("user", request.user)
    turns = [first]
    reason = ""
    for reask in range(max_reasks + 1):
        started = time.perf_counter()
        reply = send(turns)
        seconds = time.perf_counter() - started
        try:
            value = parse(reply.text)
        except RejectedAnswer as error:
            reason = str(error)
        else:
            return Answer(value, reply.text, reply.tokens, seconds, cached=False)
        if reask == max_reasks:
            break
        stats.add(reasks=1)
        logger.info("example %s: answer rejected (%s); asking again", request_id, reason)
        if reply.text:
            turns = [first, Turn("assistant", reply.text), Turn("user", reask_message(reason))]
        else:
            turns = [first]
    raise InvalidAnswerError(
        f"example {request_id}: {model} gave no valid answer in {max_reasks + 1} attempts (last: {reason}); {hint}"
    )


# One Markdown code fence around the whole answer, with an optional info string (```json).
_CODE_FENCE = re.compile(r"\A\s*```[\w+.-]*[ \t]*\n(?P<body>.*?)\n?```\s*\Z", re.DOTALL)


def strip_code_fence(text: str) -> str:
    """Remove one Markdown code fence that encloses the whole of ``text``; return other text unchanged."""
    matched = _CODE_FENCE.match(text)
    return matched["body"] if matched is not None else text


# Keywords of the Gemini schema subset that mean the same in JSON Schema and are copied as they are.
_SAME_KEYWORDS = frozenset(
    {
        "description",
        "enum",
        "format",
        "maxItems",
        "maxLength",
        "maxProperties",
        "maximum",
        "minItems",
        "minLength",
        "minProperties",
        "minimum",
        "pattern",
        "required",
        "title",
        "default",
    }
)
# Keywords that guide Gemini's output only and have no JSON Schema counterpart.
_DROPPED_KEYWORDS = frozenset({"propertyOrdering", "example"})


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Translate a response schema in the Gemini API's OpenAPI subset into JSON Schema.

    Types become lower case, ``nullable: true`` adds ``"null"`` to the type, and every object
    gets ``additionalProperties: false``, as OpenAI's strict structured outputs require. The
    properties are listed in ``propertyOrdering`` order, which JSON Schema has no keyword for
    but which servers that decode in property order follow. ``example`` is dropped. Raises
    :class:`ModelError` on a keyword this function does not know.
    """
    translated: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYWORDS:
            continue
        if key == "type":
            translated["type"] = str(value).lower()
        elif key == "nullable":
            continue
        elif key == "properties":
            order = schema.get("propertyOrdering") or []
            names = [name for name in order if name in value] + [name for name in value if name not in order]
            translated["properties"] = {name: json_schema(value[name]) for name in names}
        elif key == "items":
            translated["items"] = json_schema(value)
        elif key == "anyOf":
            translated["anyOf"] = [json_schema(option) for option in value]
        elif key in _SAME_KEYWORDS:
            translated[key] = value
        else:
            raise ModelError(f"response schema keyword {key!r} has no JSON Schema translation")
    if translated.get("type") == "object":
        translated["additionalProperties"] = False
    if schema.get("nullable") is True and "type" in translated:
        translated["type"] = [translated["type"], "null"]
    return translated


def system_with_schema(request: TeacherRequest) -> str:
    """Return the system instruction with the response schema appended as JSON Schema.

    For teachers that cannot constrain their output to the schema, so that the model sees the
    format it must follow. Requests for other MIME types than JSON get the instruction alone.
    """
    if request.response_mime_type != "application/json":
        return request.system
    schema = json.dumps(json_schema(request.response_schema), ensure_ascii=False)
    return f"{request.system}\n\nThe answer must be one JSON object that is valid against this JSON Schema:\n{schema}"
