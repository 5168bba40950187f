"""A student backend for any server that speaks the OpenAI chat completions API.

vLLM, Ollama, llama.cpp's ``llama-server`` and ``transformers serve`` all offer
``POST /v1/chat/completions``. Each example becomes one request: the system prompt as the
system message and :func:`pldc.backend.user_content` as the user message. The server applies
the model's chat template, so a template without a system role (Gemma's) is the server's to
handle. Requests run in a bounded thread pool and always ask for greedy decoding
(``temperature`` 0).

Servers differ in what they return, so the backend probes the server once when it is created
and scores labels in the first of these ways that works:

``logprobs``
    Each request sets ``logprobs`` and requests the :data:`TOP_LOGPROBS` most likely
    alternatives at each of the first :data:`LOGPROB_POSITIONS` answer positions. A label's
    score is the sum of the log-probabilities of the tokens that spell it, read along the
    answer: at each position, the alternative with the longest text that continues the label,
    with leading whitespace ignored at the first position.
    The score is exact when the label is the greedy answer, or when it is spelt by one token
    among the alternatives (the usual case for one-word labels). Otherwise it is an upper
    bound: when the label's next token is not among the alternatives, the least likely
    alternative's log-probability stands in for it, and when the label's tokens leave the
    greedy answer, later positions are unknown and the sum stops there.
``guided-choice``
    vLLM's constrained decoding (``structured_outputs.choice``, and ``guided_choice`` for
    versions before 0.12) makes the answer exactly one label. That label scores 0 and the
    others minus infinity: a choice, not a distribution.
``json-schema``
    ``response_format`` with a JSON schema whose ``label`` property is an enum of the labels
    (llama-server, Ollama, OpenAI). Scored as ``guided-choice``.
``generate``
    A free greedy answer, matched to a label by :func:`match_label`. The matched label scores
    0 and the others minus infinity. An answer that names no label scores minus infinity for
    every label.

Only ``logprobs`` gives log-probabilities, so only it sets ``supports_logprobs``.

The API key is read from an environment variable and sent only in the ``Authorization``
header. It appears in no log record, error message or :meth:`OpenAIBackend.identity`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from enum import StrEnum
from typing import Any, TypeVar

from pldc.backend import Generation, user_content
from pldc.data import Example
from pldc.errors import ModelError, UsageError
from pldc.openai_http import JsonClient, RequestFailed, RetryPolicy, normalise_base_url

logger = logging.getLogger("pldc")

T = TypeVar("T")

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_CONCURRENCY = 4
DEFAULT_REQUEST_TIMEOUT = 120.0
# OpenAI accepts at most 20 alternatives per position, and vLLM's default cap is also 20.
TOP_LOGPROBS = 20
# Answer positions read in logprobs mode: labels longer than this many tokens get a bound.
LOGPROB_POSITIONS = 8
# Two strings no model answers unprompted: a server that returns one of them honoured the constraint.
PROBE_CHOICES = ("kestrel-7", "juniper-3")
PROBE_MESSAGES = [{"role": "user", "content": "Reply with one word: yes or no."}]
# Statuses with which servers reject a field they do not support.
UNSUPPORTED_STATUS = frozenset({400, 422, 501})


class Scoring(StrEnum):
    """A way of scoring labels, chosen per server (see the module docstring)."""

    LOGPROBS = "logprobs"
    GUIDED_CHOICE = "guided-choice"
    JSON_SCHEMA = "json-schema"
    GENERATE = "generate"


def match_label(answer: str, labels: Sequence[str]) -> str | None:
    """Return the label a free answer names, or None.

    The answer names a label when, ignoring case, surrounding whitespace, quotes, asterisks
    and final punctuation, it equals the label, or its first word (letters, digits, ``_`` and
    ``-``) equals the label.
    """
    folded = {label.casefold(): label for label in labels}
    text = answer.strip().strip("\"'`*").rstrip(".!,;:").strip().strip("\"'`*").casefold()
    if text in folded:
        return folded[text]
    first = re.match(r"[\w-]+", text)
    if first is not None and first.group(0) in folded:
        return folded[first.group(0)]
    return None


class OpenAIBackend:
    """A student model behind an OpenAI-compatible server.

    Creating the backend probes the server to choose how labels are scored, unless
    ``scoring`` is given.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = DEFAULT_API_KEY_ENV,
        concurrency: int = DEFAULT_CONCURRENCY,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        scoring: Scoring | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.base_url = normalise_base_url(base_url)
        if not model:
            raise UsageError("--model is empty; give the model name the server serves")
        if concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if request_timeout <= 0:
            raise UsageError("--request-timeout must be a positive number of seconds")
        self.model = model
        self.name = f"{model} at {self.base_url}"
        self.concurrency = concurrency
        api_key = os.environ.get(api_key_env) or None
        if api_key is None:
            logger.debug("no API key in $%s; requests carry no Authorization header", api_key_env)
        self._client = JsonClient(self.base_url, request_timeout, retry or RetryPolicy(), api_key)
        self.scoring = scoring if scoring is not None else self.detect_scoring()
        self.supports_logprobs = self.scoring is Scoring.LOGPROBS

    def identity(self) -> dict[str, Any]:
        """Return the backend kind, base URL and model, the fields that key this backend's results in the call cache."""
        return {"backend": "openai", "base_url": self.base_url, "model": self.model}

    # -- capability ---------------------------------------------------------

    def detect_scoring(self) -> Scoring:
        """Probe the server with small requests and return the best scoring it supports."""
        # NOTE: the logprobs, guided-choice and json-schema cases are tested against a scripted fake
        # server only, because the real server in the tests (transformers serve) supports none of them.
        try:
            response = self._chat(PROBE_MESSAGES, max_tokens=1, logprobs=True, top_logprobs=5)
        except RequestFailed as error:
            if error.status not in UNSUPPORTED_STATUS:
                raise
            logger.debug("server rejected logprobs: %s", error)
        else:
            # A server that ignores top_logprobs returns the generated token alone at each position.
            if any(len(alternatives) > 1 for _, alternatives in _answer_positions(response)):
                return self._chose(Scoring.LOGPROBS, f"label log-probabilities from the top {TOP_LOGPROBS} tokens")
        for scoring in (Scoring.GUIDED_CHOICE, Scoring.JSON_SCHEMA):
            try:
                response = self._chat(PROBE_MESSAGES, max_tokens=16, **_constraint(scoring, PROBE_CHOICES))
            except RequestFailed as error:
                if error.status not in UNSUPPORTED_STATUS:
                    raise
                logger.debug("server rejected %s: %s", scoring, error)
                continue
            if _constrained_label(scoring, _content(response), PROBE_CHOICES) is not None:
                return self._chose(scoring, "the label the server's constrained decoding picks")
        return self._chose(Scoring.GENERATE, "the label named by the greedy free answer")

    def _chose(self, scoring: Scoring, description: str) -> Scoring:
        logger.info("%s: scoring '%s', %s", self.name, scoring, description)
        return scoring

    # -- scoring and generation ----------------------------------------------

    def score(
        self,
        system_prompt: str,
        examples: Sequence[Example],
        labels: Sequence[str],
        input_names: Sequence[str],
        progress: Callable[[int], None] | None = None,
    ) -> list[list[float]]:
        """Score every label of each example, in ``labels`` order (see the module docstring)."""
        if len(set(labels)) != len(labels) or not all(labels):
            raise ModelError(f"labels must be distinct and non-empty: {list(labels)}")
        if self.scoring is Scoring.LOGPROBS:
            scored = self._map(
                lambda e: self._score_logprobs(system_prompt, e, labels, input_names), examples, progress
            )
            bounded = sum(not exact for _, exact in scored)
            if bounded:
                logger.warning(
                    "%d of %d label scores are upper bounds: a label token outside the top %d alternatives, "
                    "or a multi-token label that is not the greedy answer",
                    bounded,
                    len(scored) * len(labels),
                    TOP_LOGPROBS,
                )
            return [row for row, _ in scored]
        chosen = self._map(lambda e: self._choose(system_prompt, e, labels, input_names), examples, progress)
        missing = sum(label is None for label in chosen)
        if missing:
            logger.warning(
                "%d of %d answers named no label; they score minus infinity for every label", missing, len(chosen)
            )
        return [[0.0 if label == candidate else -math.inf for candidate in labels] for label in chosen]

    def generate(
        self,
        system_prompt: str,
        examples: Sequence[Example],
        input_names: Sequence[str],
        max_new_tokens: int,
        progress: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """Generate the greedy answer to each example, with its completion token count (from ``usage``) and seconds."""

        def one(example: Example) -> Generation:
            started = time.perf_counter()
            response = self._chat(_messages(system_prompt, example, input_names), max_tokens=max_new_tokens)
            seconds = time.perf_counter() - started
            usage = response.get("usage")
            tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
            if not isinstance(tokens, int):
                raise ModelError(
                    f"{self._url()} returned no usage.completion_tokens, which pldc reports as cost; "
                    "use a server that returns usage"
                )
            return Generation(_content(response), tokens, seconds)

        return self._map(one, examples, progress)

    def _score_logprobs(
        self, system_prompt: str, example: Example, labels: Sequence[str], input_names: Sequence[str]
    ) -> tuple[list[float], bool]:
        response = self._chat(
            _messages(system_prompt, example, input_names),
            max_tokens=LOGPROB_POSITIONS,
            logprobs=True,
            top_logprobs=TOP_LOGPROBS,
        )
        positions = _answer_positions(response)
        if not positions:
            raise ModelError(f"{self._url()} stopped returning logprobs; rerun, or check the server's log")
        scores = [label_logprob(label, positions) for label in labels]
        return [score for score, _ in scores], all(exact for _, exact in scores)

    def _choose(
        self, system_prompt: str, example: Example, labels: Sequence[str], input_names: Sequence[str]
    ) -> str | None:
        messages = _messages(system_prompt, example, input_names)
        # A token covers at least one byte, so a label needs at most its UTF-8 length in tokens.
        longest = max(len(label.encode("utf-8")) for label in labels)
        if self.scoring is Scoring.GENERATE:
            answer = _content(self._chat(messages, max_tokens=longest + 8))
            label = match_label(answer, labels)
        else:
            answer = _content(self._chat(messages, max_tokens=longest + 32, **_constraint(self.scoring, labels)))
            label = _constrained_label(self.scoring, answer, labels)
        if label is None:
            logger.debug("answer to example %s names no label: %r", example.id, answer[:200])
        return label

    # -- requests -------------------------------------------------------------

    def _chat(self, messages: list[dict[str, str]], **fields: Any) -> dict[str, Any]:
        payload = {"model": self.model, "messages": messages, "temperature": 0, **fields}
        return self._client.post("/chat/completions", payload)

    def _url(self) -> str:
        return self.base_url + "/chat/completions"

    def _map(
        self, call: Callable[[Example], T], examples: Sequence[Example], progress: Callable[[int], None] | None
    ) -> list[T]:
        """Run ``call`` on every example, at most ``concurrency`` at a time, keeping the order.

        The first failure cancels the requests not yet sent and is raised once the requests in
        flight have finished, so no partial result is returned.
        """
        if not examples:
            return []
        results: dict[int, T] = {}
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(examples))) as pool:
            futures: dict[Future[T], int] = {pool.submit(call, example): i for i, example in enumerate(examples)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    error = future.exception()
                    if error is not None:
                        for other in pending:
                            other.cancel()
                        raise error
                    results[futures[future]] = future.result()
                if progress:
                    progress(len(done))
        return [results[i] for i in range(len(examples))]


def label_logprob(label: str, positions: Sequence[tuple[str, dict[str, float]]]) -> tuple[float, bool]:
    """Compute the log-probability of ``label`` from the answer's positions, and whether it is exact.

    ``positions`` holds, per answer token, the generated token and its alternatives with their
    log-probabilities. The module docstring describes when the result is an upper bound.
    """
    remaining = label
    total = 0.0
    for index, (generated, alternatives) in enumerate(positions):
        best: tuple[str, str, float] | None = None
        for token, logprob in alternatives.items():
            text = token.lstrip() if index == 0 else token
            if text and remaining.startswith(text) and (best is None or len(text) > len(best[1])):
                best = (token, text, logprob)
        if best is None:
            return total + min(alternatives.values()), False
        token, text, logprob = best
        total += logprob
        remaining = remaining[len(text) :]
        if not remaining:
            return total, True
        if token != generated:
            return total, False
    return total, False


def _answer_positions(response: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """Extract the generated token and its alternatives at each answer position; empty without logprobs.

    The generated token is among its own alternatives. Under greedy decoding it is the likeliest,
    so with no other alternative its log-probability still bounds every other token's.
    """
    try:
        content = response["choices"][0]["logprobs"]["content"]
    except (KeyError, IndexError, TypeError):
        return []
    positions: list[tuple[str, dict[str, float]]] = []
    for entry in content or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            return []
        alternatives: dict[str, float] = {}
        for item in [entry, *(entry.get("top_logprobs") or [])]:
            token, logprob = item.get("token"), item.get("logprob")
            if isinstance(token, str) and isinstance(logprob, int | float):
                # Distinct token ids can decode to the same text, so keep the likelier.
                alternatives[token] = max(float(logprob), alternatives.get(token, -math.inf))
        positions.append((entry["token"], alternatives))
    return positions


def _constraint(scoring: Scoring, labels: Sequence[str]) -> dict[str, Any]:
    """Request fields that restrict the answer to one of ``labels``."""
    if scoring is Scoring.GUIDED_CHOICE:
        return {"structured_outputs": {"choice": list(labels)}, "guided_choice": list(labels)}
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(labels)}},
        "required": ["label"],
        "additionalProperties": False,
    }
    return {
        "response_format": {"type": "json_schema", "json_schema": {"name": "label", "schema": schema, "strict": True}}
    }


def _constrained_label(scoring: Scoring, content: str, labels: Sequence[str]) -> str | None:
    if scoring is Scoring.GUIDED_CHOICE:
        text = content.strip()
        return text if text in labels else None
    try:
        decoded = json.loads(content)
    except json.JSONDecodeError:
        return None
    label = decoded.get("label") if isinstance(decoded, dict) else None
    return label if isinstance(label, str) and label in labels else None


def _messages(system_prompt: str, example: Example, input_names: Sequence[str]) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": user_content(example, input_names)},
    ]


def _content(response: dict[str, Any]) -> str:
    try:
        content = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ModelError("the server returned a chat completion without choices[0].message; check --base-url") from None
    return content if isinstance(content, str) else ""
