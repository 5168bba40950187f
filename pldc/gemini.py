"""Gemini as a teacher and as a student, through the google-genai SDK.

Every call goes through :class:`~pldc.cache.CallCache`, keyed by the model, the generation
parameters, the system instruction, the user turn and the response schema, so a re-run with the
same inputs sends no request. Only accepted answers are stored: errors, refusals and rejected
answers are asked again on the next run.

The client retries by itself instead of relying on the SDK's retry loop, so that it can honour
``Retry-After``, log each retry and count them. Transient failures (HTTP 408, 429 and 5xx,
timeouts, dropped connections) are retried with exponential backoff up to ``max_attempts``
requests. An answer that fails validation (text that is not JSON, JSON that does not fit the
schema, a label outside the enum) is re-asked up to ``max_reasks`` times: the rejected answer and
the reason are sent back in the conversation. A refusal (a blocked prompt, no candidate, or a
candidate stopped for safety) is not retried. Each failure ends in a one-line
:class:`~pldc.errors.ModelError` that names the example.

The API key comes from ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY``. It is passed to the SDK only:
it is never logged, never part of a cache key, and removed from every error message.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pldc.backend import Generation, user_content
from pldc.cache import CallCache
from pldc.data import Example
from pldc.errors import ModelError, UsageError
from pldc.teacher import (
    Answer,
    CallStats,
    RefusalError,
    RejectedAnswer,
    Reply,
    TeacherRequest,
    Turn,
    ask_through_cache,
)

if TYPE_CHECKING:
    from google.genai import Client
    from google.genai import types as genai_types

logger = logging.getLogger("pldc")

T = TypeVar("T")
R = TypeVar("R")

API_KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
DEFAULT_TEACHER_MODEL = "gemini-3-flash-preview"
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Gemini 3 models take a thinking level; Gemini 2.5 models take a token budget. The API rejects both at once.
THINKING_LEVELS = ("minimal", "low", "medium", "high")
# Finish reasons that mean the model declined to answer, as opposed to stopping or running out of tokens.
REFUSAL_REASONS = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}
)


def api_key_from_env() -> str:
    """Return the Gemini API key from the environment, or raise :class:`ModelError`."""
    for variable in API_KEY_VARIABLES:
        value = os.environ.get(variable, "").strip()
        if value:
            return value
    raise ModelError("no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment")


@dataclass(frozen=True)
class GeminiSettings:
    """The model, its generation parameters and the client's retry policy.

    ``thinking_budget`` (tokens; -1 dynamic, 0 off) and ``thinking_level`` (one of
    :data:`THINKING_LEVELS`) are sent in ``thinkingConfig``; None leaves the model's default, and
    at most one of them may be set. Delays are in seconds; ``timeout`` bounds one HTTP request.
    """

    model: str = DEFAULT_TEACHER_MODEL
    thinking_budget: int | None = None
    thinking_level: str | None = None
    temperature: float | None = None
    max_attempts: int = 5
    max_reasks: int = 2
    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: float = 300.0
    base_url: str | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise UsageError("--max-attempts must be at least 1")
        if self.max_reasks < 0:
            raise UsageError("--max-reasks must be 0 or more")
        if self.thinking_budget is not None and self.thinking_budget < -1:
            raise UsageError("--thinking-budget must be -1 (dynamic), 0 (off) or a positive token count")
        if self.thinking_level is not None and self.thinking_level not in THINKING_LEVELS:
            raise UsageError(f"--thinking-level must be one of {', '.join(THINKING_LEVELS)}")
        if self.thinking_level is not None and self.thinking_budget is not None:
            raise UsageError("give --thinking-budget or --thinking-level, not both; the Gemini API rejects both")

    def parameters(self) -> dict[str, Any]:
        """Return the parameters that change the model's output, as stored in cache keys."""
        parameters: dict[str, Any] = {"temperature": self.temperature, "thinking_budget": self.thinking_budget}
        if self.thinking_level is not None:
            parameters["thinking_level"] = self.thinking_level
        return parameters

    def thinking_config(self) -> dict[str, Any] | None:
        """Build the REST ``thinkingConfig`` object, or None to leave the model's default."""
        if self.thinking_budget is not None:
            return {"thinkingBudget": self.thinking_budget}
        if self.thinking_level is not None:
            return {"thinkingLevel": self.thinking_level.upper()}
        return None

    def generation_config(self, request: TeacherRequest) -> dict[str, Any]:
        """Build the REST ``generationConfig`` object of ``request`` (camelCase field names)."""
        config: dict[str, Any] = {
            "responseMimeType": request.response_mime_type,
            "responseSchema": request.response_schema,
        }
        if self.temperature is not None:
            config["temperature"] = self.temperature
        if request.max_output_tokens is not None:
            config["maxOutputTokens"] = request.max_output_tokens
        thinking = self.thinking_config()
        if thinking is not None:
            config["thinkingConfig"] = thinking
        return config

    def rest_body(self, request: TeacherRequest) -> dict[str, Any]:
        """Build the REST ``GenerateContentRequest`` body of ``request``, as the Batch API takes it."""
        return {
            "contents": [{"role": "user", "parts": [{"text": request.user}]}],
            "systemInstruction": {"parts": [{"text": request.system}]},
            "generationConfig": self.generation_config(request),
        }


def _transient_transport_errors() -> tuple[type[BaseException], ...]:
    """Timeout and connection exceptions of the HTTP libraries google-genai may use."""
    errors: list[type[BaseException]] = [TimeoutError, ConnectionError]
    for module_name in ("httpx", "httpx2"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        errors.extend([module.TimeoutException, module.TransportError])
    return tuple(errors)


class GeminiClient:
    """Sends :class:`TeacherRequest` s to Gemini with retries, re-asks and the call cache."""

    def __init__(
        self,
        settings: GeminiSettings,
        cache: CallCache,
        api_key: str | None = None,
        client: Client | None = None,
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.stats = CallStats()
        self._api_key = api_key
        self._client = client
        self._client_lock = threading.Lock()
        self._transport_errors = _transient_transport_errors()

    @property
    def model(self) -> str:
        return self.settings.model

    def sdk_client(self) -> Client:
        """Create the SDK client on first use, so that a fully cached run needs no API key."""
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Client:
        try:
            from google import genai
            from google.genai import types
        except ImportError as error:
            raise ModelError("google-genai is not installed; run pip install 'pldc[teacher]'") from error
        if self._api_key is None:
            self._api_key = api_key_from_env()
        options = types.HttpOptions(
            base_url=self.settings.base_url,
            timeout=int(self.settings.timeout * 1000),
            # One HTTP attempt per SDK call: this client runs the retry loop itself.
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        return genai.Client(api_key=self._api_key, http_options=options)

    def redact(self, text: str) -> str:
        """Remove the API key from ``text``."""
        if self._api_key:
            text = text.replace(self._api_key, "[API key]")
        return text

    def ask(self, request_id: str, request: TeacherRequest, parse: Callable[[str], T]) -> Answer[T]:
        """Return the parsed answer to ``request``, from the cache or from the model.

        ``parse`` turns the answer text into a value or raises :class:`RejectedAnswer`.
        ``request_id`` (an example id) names the request in logs and errors.
        """
        return ask_through_cache(
            request_id,
            request,
            parse,
            send=lambda turns: self._generate(request_id, request, turns),
            cache=self.cache,
            cache_parts=request.cache_parts("gemini", self.settings.model, self.settings.parameters()),
            stats=self.stats,
            model=self.settings.model,
            max_reasks=self.settings.max_reasks,
        )

    def _generate(self, request_id: str, request: TeacherRequest, turns: Sequence[Turn]) -> Reply:
        contents = [
            {"role": "model" if turn.role == "assistant" else "user", "parts": [{"text": turn.text}]} for turn in turns
        ]
        response = self._send(request_id, request, contents)
        text, tokens = self._answer_text(request_id, response)
        return Reply(text, tokens)

    def _send(
        self, request_id: str, request: TeacherRequest, contents: list[dict[str, Any]]
    ) -> genai_types.GenerateContentResponse:
        """Send one generateContent call, retrying transient failures."""
        from google.genai import types

        client = self.sdk_client()
        config = self._sdk_config(request)
        turns = [types.Content.model_validate(turn) for turn in contents]
        return self.call_with_retries(
            request_id,
            lambda: client.models.generate_content(model=self.settings.model, contents=turns, config=config),
        )

    def call_with_retries(self, request_id: str, call: Callable[[], R]) -> R:
        """Run one SDK call, retrying transient failures with backoff; raise :class:`ModelError` otherwise."""
        from google.genai import errors

        last = ""
        for attempt in range(1, self.settings.max_attempts + 1):
            retry_after: float | None = None
            try:
                self.stats.add(requests=1)
                return call()
            except errors.APIError as error:
                last = self.redact(f"HTTP {error.code} {error.status}")
                if error.code not in RETRYABLE_STATUS:
                    message = self.redact(str(error.message or error.status or ""))
                    hint = "check GEMINI_API_KEY" if error.code in (401, 403) else "check --model and the request"
                    raise ModelError(
                        f"example {request_id}: Gemini rejected the request ({last}: {message}); {hint}"
                    ) from None
                retry_after = _retry_after_seconds(error)
            except self._transport_errors as error:
                last = self.redact(f"{type(error).__name__}: {error}")
            if attempt == self.settings.max_attempts:
                break
            delay = self._backoff(attempt, retry_after)
            self.stats.add(retries=1)
            logger.info(
                "example %s: %s; retrying in %.1f s (attempt %d of %d)",
                request_id,
                last,
                delay,
                attempt + 1,
                self.settings.max_attempts,
            )
            time.sleep(delay)
        raise ModelError(
            f"example {request_id}: Gemini request failed after {self.settings.max_attempts} attempts ({last}); "
            "try again later or raise --max-attempts"
        )

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.settings.max_backoff)
        delay = min(self.settings.initial_backoff * 2 ** (attempt - 1), self.settings.max_backoff)
        return delay * random.uniform(0.5, 1.0)

    def _sdk_config(self, request: TeacherRequest) -> genai_types.GenerateContentConfig:
        from google.genai import types

        thinking_config = self.settings.thinking_config()
        thinking = types.ThinkingConfig.model_validate(thinking_config) if thinking_config is not None else None
        return types.GenerateContentConfig(
            system_instruction=request.system,
            response_mime_type=request.response_mime_type,
            response_schema=request.response_schema,
            temperature=self.settings.temperature,
            max_output_tokens=request.max_output_tokens,
            thinking_config=thinking,
        )

    def _answer_text(self, request_id: str, response: genai_types.GenerateContentResponse) -> tuple[str, int]:
        """Return the answer text (thought parts left out) and its token count, or raise on a refusal."""
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            raise self._refusal(request_id, f"prompt blocked: {_enum_name(feedback.block_reason)}")
        if not response.candidates:
            raise self._refusal(request_id, "no candidates in the response")
        candidate = response.candidates[0]
        finish = _enum_name(candidate.finish_reason) if candidate.finish_reason is not None else ""
        if finish in REFUSAL_REASONS:
            raise self._refusal(request_id, f"finishReason {finish}")
        parts = candidate.content.parts if candidate.content is not None and candidate.content.parts else []
        text = "".join(part.text for part in parts if part.text and not part.thought)
        if finish == "MAX_TOKENS":
            # A cut-off answer still goes to the parser; truncated JSON fails there and is re-asked.
            logger.info("example %s: answer cut off at the output token limit", request_id)
        usage = response.usage_metadata
        tokens = int(usage.candidates_token_count or 0) if usage is not None else 0
        return text, tokens

    def _refusal(self, request_id: str, reason: str) -> RefusalError:
        return RefusalError(
            f"example {request_id}: {self.settings.model} refused to answer ({reason}); "
            "check the example's text or leave it out"
        )


def _retry_after_seconds(error: Any) -> float | None:
    """Read the ``Retry-After`` header of an API error's HTTP response, in seconds (None when absent)."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        # NOTE: the HTTP-date form of Retry-After is not parsed; exponential backoff applies instead.
        return None


def _enum_name(value: Any) -> str:
    return str(getattr(value, "value", value))


class GeminiStudent:
    """A Gemini model as a student backend: it generates the label, constrained to the task's labels.

    The response is requested as ``text/x.enum`` with the labels as the schema's enum, so the
    model can only answer with a label name. Gemini returns no log-probabilities over labels, so
    this backend only generates.
    """

    supports_logprobs = False

    def __init__(self, client: GeminiClient, labels: Sequence[str]) -> None:
        if not labels:
            raise UsageError("a Gemini student needs the task's labels")
        self.client = client
        self.labels = list(labels)
        self.name = f"gemini:{client.settings.model}"

    def identity(self) -> dict[str, Any]:
        return {"backend": "gemini", "model": self.client.settings.model, **self.client.settings.parameters()}

    def score(
        self,
        system_prompt: str,
        examples: Sequence[Example],
        labels: Sequence[str],
        input_names: Sequence[str],
        progress: Callable[[int], None] | None = None,
    ) -> list[list[float]]:
        raise ModelError(f"{self.name} returns no label log-probabilities; evaluate it in generate mode")

    def generate(
        self,
        system_prompt: str,
        examples: Sequence[Example],
        input_names: Sequence[str],
        max_new_tokens: int,
        progress: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """Ask for each example's label, one request per example (cached)."""
        schema = {"type": "STRING", "enum": self.labels}
        generations: list[Generation] = []
        for example in examples:
            request = TeacherRequest(
                system=system_prompt,
                user=user_content(example, input_names),
                response_mime_type="text/x.enum",
                response_schema=schema,
                max_output_tokens=max_new_tokens,
            )
            answer = self.client.ask(example.id, request, self._parse_label)
            generations.append(Generation(answer.value, answer.tokens, answer.seconds))
            if progress is not None:
                progress(1)
        return generations

    def _parse_label(self, text: str) -> str:
        label = text.strip()
        if label not in self.labels:
            raise RejectedAnswer(f"{label!r} is not one of the labels {', '.join(self.labels)}")
        return label
