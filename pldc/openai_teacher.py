"""A teacher behind any server that speaks the OpenAI chat completions API.

vLLM, Ollama, llama.cpp's ``llama-server``, ``transformers serve`` and OpenAI itself answer
``POST /v1/chat/completions``. A request is the system instruction as the system message and
the conversation turns as user and assistant messages. How the answer format is enforced is
chosen with ``--response-format``, because servers differ in what they support and pldc never
falls back on its own:

``json_schema`` (default)
    ``response_format`` carries the request's schema, translated to JSON Schema by
    :func:`pldc.teacher.json_schema`, with ``strict: true``, so a server with structured
    output decodes only answers that fit the schema.
``json_object``
    ``response_format`` is ``{"type": "json_object"}``: the server returns JSON, and the schema
    is appended to the system message.
``none``
    No ``response_format``; the schema is appended to the system message.

One Markdown code fence around the whole answer is removed before the answer is parsed,
because models asked for JSON without structured output often wrap it in one.

Requests go through :class:`pldc.openai_http.JsonClient`: HTTP 408, 429 and 5xx, timeouts and
dropped connections are retried with backoff or after ``Retry-After``, up to ``max_attempts``
requests; other statuses fail at once. Every failure ends in a one-line
:class:`~pldc.errors.ModelError` that names the request.

The teacher records its answers as ``openai:MODEL``, so ``extract.jsonl`` and a built
ruleset's header show which kind of teacher answered. The call cache key holds the server's
base URL, the model name, the temperature and the response format, but never the API key,
which is read from the environment variable ``api_key_env`` names and is sent only in the
``Authorization`` header.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pldc.cache import CallCache
from pldc.errors import ModelError, UsageError
from pldc.openai_backend import DEFAULT_API_KEY_ENV
from pldc.openai_http import JsonClient, RequestFailed, RetryPolicy, normalise_base_url
from pldc.teacher import (
    Answer,
    CallStats,
    RefusalError,
    Reply,
    TeacherRequest,
    Turn,
    ask_through_cache,
    json_schema,
    strip_code_fence,
    system_with_schema,
)

logger = logging.getLogger("pldc")

T = TypeVar("T")

RESPONSE_FORMATS = ("json_schema", "json_object", "none")
MODEL_PREFIX = "openai:"
# The name sent in response_format.json_schema.name; OpenAI requires one of at most 64 characters.
SCHEMA_NAME = "teacher_answer"


@dataclass(frozen=True)
class OpenAITeacherSettings:
    """The server, the model, how the answer format is enforced, and the retry policy.

    ``temperature`` None leaves the server's default. Times are in seconds, and ``timeout``
    bounds one HTTP request.
    """

    base_url: str
    model: str
    api_key_env: str = DEFAULT_API_KEY_ENV
    response_format: str = "json_schema"
    temperature: float | None = None
    max_attempts: int = 5
    max_reasks: int = 2
    timeout: float = 300.0
    initial_backoff: float = 0.5
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        if not self.model:
            raise UsageError("--teacher openai needs --model NAME, the model name the server serves")
        if self.response_format not in RESPONSE_FORMATS:
            raise UsageError(f"--response-format must be one of {', '.join(RESPONSE_FORMATS)}")
        if self.max_attempts < 1:
            raise UsageError("--max-attempts must be at least 1")
        if self.max_reasks < 0:
            raise UsageError("--max-reasks must be 0 or more")
        if not self.timeout > 0:
            raise UsageError("--timeout must be a positive number of seconds")


class OpenAITeacher:
    """Sends :class:`TeacherRequest` s to an OpenAI-compatible server with retries, re-asks and the call cache."""

    def __init__(self, settings: OpenAITeacherSettings, cache: CallCache) -> None:
        self.settings = settings
        self.cache = cache
        self.stats = CallStats()
        self.base_url = normalise_base_url(settings.base_url)
        api_key = os.environ.get(settings.api_key_env) or None
        if api_key is None:
            logger.debug("no API key in $%s; requests carry no Authorization header", settings.api_key_env)
        policy = RetryPolicy(
            retries=settings.max_attempts - 1, backoff=settings.initial_backoff, max_backoff=settings.max_backoff
        )
        self._client = JsonClient(
            self.base_url,
            settings.timeout,
            policy,
            api_key,
            timeout_option="--timeout",
            on_retry=lambda: self.stats.add(retries=1, requests=1),
        )

    @property
    def model(self) -> str:
        return MODEL_PREFIX + self.settings.model

    def parameters(self) -> dict[str, Any]:
        """Return what changes the answers besides the request, as stored in cache keys."""
        return {
            "base_url": self.base_url,
            "temperature": self.settings.temperature,
            "response_format": self.settings.response_format,
        }

    def ask(self, request_id: str, request: TeacherRequest, parse: Callable[[str], T]) -> Answer[T]:
        """Return the parsed answer to ``request``, from the cache or from the server.

        ``parse`` turns the answer text into a value or raises :class:`~pldc.teacher.RejectedAnswer`.
        ``request_id`` (an example id) names the request in logs and errors.
        """
        return ask_through_cache(
            request_id,
            request,
            parse,
            send=lambda turns: self._generate(request_id, request, turns),
            cache=self.cache,
            cache_parts=request.cache_parts("openai", self.settings.model, self.parameters()),
            stats=self.stats,
            model=self.model,
            max_reasks=self.settings.max_reasks,
        )

    def payload(self, request: TeacherRequest, turns: Sequence[Turn]) -> dict[str, Any]:
        """Build the chat completions request body for ``request`` and the conversation ``turns``."""
        structured = self.settings.response_format == "json_schema"
        system = request.system if structured else system_with_schema(request)
        messages = [{"role": "system", "content": system}]
        messages += [{"role": turn.role, "content": turn.text} for turn in turns]
        body: dict[str, Any] = {"model": self.settings.model, "messages": messages}
        if self.settings.temperature is not None:
            body["temperature"] = self.settings.temperature
        if request.max_output_tokens is not None:
            body["max_tokens"] = request.max_output_tokens
        if request.response_mime_type == "application/json":
            if structured:
                schema = json_schema(request.response_schema)
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": True},
                }
            elif self.settings.response_format == "json_object":
                body["response_format"] = {"type": "json_object"}
        return body

    def _generate(self, request_id: str, request: TeacherRequest, turns: Sequence[Turn]) -> Reply:
        self.stats.add(requests=1)
        try:
            response = self._client.post("/chat/completions", self.payload(request, turns))
        except RequestFailed as error:
            raise ModelError(f"example {request_id}: {error}") from None
        return self._answer(request_id, response)

    def _answer(self, request_id: str, response: dict[str, Any]) -> Reply:
        """Return the answer text, without a surrounding code fence, or raise on a refusal."""
        choices = response.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(choice, dict) or not isinstance(message, dict):
            raise ModelError(
                f"example {request_id}: {self.base_url}/chat/completions returned no choices[0].message; "
                "check --base-url"
            )
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal.strip():
            raise self._refusal(request_id, " ".join(refusal.split())[:200])
        finish = choice.get("finish_reason")
        if finish == "content_filter":
            raise self._refusal(request_id, "finish_reason content_filter")
        if finish == "length":
            # A cut-off answer still goes to the parser; truncated JSON fails there and is re-asked.
            logger.info("example %s: answer cut off at the output token limit", request_id)
        content = message.get("content")
        text = strip_code_fence(content) if isinstance(content, str) else ""
        usage = response.get("usage")
        tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
        return Reply(text, tokens if isinstance(tokens, int) else 0)

    def _refusal(self, request_id: str, reason: str) -> RefusalError:
        return RefusalError(
            f"example {request_id}: {self.model} refused to answer ({reason}); check the example's text or leave it out"
        )
