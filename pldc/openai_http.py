"""JSON POST requests to an OpenAI-compatible server, with bounded retries.

The client is the standard library's ``urllib.request``: the backend sends two kinds of JSON
request, so an HTTP dependency would add nothing, and owning the retry loop keeps its logging
and error messages free of the API key. A request is retried on HTTP 408, 429 and 5xx, on
connection errors and on timeouts. The wait before each retry is the server's ``Retry-After``
when it sends one, else an exponential backoff with jitter.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pldc.errors import ModelError, UsageError

logger = logging.getLogger("pldc")

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a failed request; times in seconds."""

    retries: int = 4
    backoff: float = 0.5
    max_backoff: float = 30.0
    # A Retry-After longer than this fails the call at once instead of stalling the run.
    max_retry_after: float = 120.0

    def delay(self, attempt: int) -> float:
        """Backoff before retry ``attempt`` (0-based): half fixed, half random ("equal jitter")."""
        ceiling = min(self.max_backoff, self.backoff * 2**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class RequestFailed(ModelError):
    """A request that failed for good: a rejected request, or a fault that outlasted the retries."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass
class JsonClient:
    """POST JSON to ``base_url + path`` with an optional bearer token, retrying transient faults."""

    base_url: str
    timeout: float
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    api_key: str | None = field(default=None, repr=False)
    # The option that sets ``timeout``, named in the error after a timeout.
    timeout_option: str = "--request-timeout"
    # Called before each retry, so that callers can count retries.
    on_retry: Callable[[], None] | None = field(default=None, repr=False)

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send ``payload`` and return the decoded JSON object of a 2xx response.

        Raises :class:`RequestFailed` on a non-retryable status, or once the retries are spent.
        """
        url = self.base_url + path
        data = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        attempt = 0
        while True:
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return self._decode(url, response.read())
            except urllib.error.HTTPError as error:
                body = self._redact(_read_body(error))
                retry_after = _retry_after(error.headers.get("Retry-After"))
                if error.code not in RETRYABLE_STATUS:
                    raise RequestFailed(_rejected_message(url, error.code, body), error.code, body) from None
                fault = f"HTTP {error.code}"
                status: int | None = error.code
            except TimeoutError:
                fault, status, retry_after, body = f"no response within {self.timeout:g} s", None, None, ""
            except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as error:
                # urllib wraps a timeout while connecting in URLError; one while reading arrives bare.
                reason = getattr(error, "reason", error)
                if isinstance(reason, TimeoutError):
                    fault = f"no response within {self.timeout:g} s"
                else:
                    fault = f"connection failed ({self._redact(str(reason))})"
                status, retry_after, body = None, None, ""
            if attempt >= self.policy.retries:
                raise RequestFailed(
                    f"request to {url} failed after {attempt + 1} attempts: {fault}; "
                    f"check that the server is running and reachable, or raise {self.timeout_option}",
                    status,
                    body,
                )
            if retry_after is not None and retry_after > self.policy.max_retry_after:
                raise RequestFailed(
                    f"request to {url} failed: {fault} and the server asks to retry after {retry_after:g} s; "
                    "try again later",
                    status,
                    body,
                )
            wait = retry_after if retry_after is not None else self.policy.delay(attempt)
            attempt += 1
            logger.warning(
                "request to %s failed (%s); retry %d of %d in %.1f s", url, fault, attempt, self.policy.retries, wait
            )
            if self.on_retry is not None:
                self.on_retry()
            time.sleep(wait)

    def _decode(self, url: str, raw: bytes) -> dict[str, Any]:
        try:
            decoded = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RequestFailed(f"{url} returned a response that is not JSON; is --base-url the /v1 root?") from None
        if not isinstance(decoded, dict):
            raise RequestFailed(f"{url} returned JSON that is not an object; is --base-url the /v1 root?")
        return decoded

    def _redact(self, text: str) -> str:
        """Remove the API key from text that came from the server or the network stack."""
        return text.replace(self.api_key, "[API key]") if self.api_key else text


def _read_body(error: urllib.error.HTTPError) -> str:
    try:
        return error.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _rejected_message(url: str, status: int, body: str) -> str:
    detail = _error_detail(body)
    what = {401: "authentication failed", 403: "access denied", 404: "not found"}.get(status, "request rejected")
    hint = {
        401: "set the server's API key in the variable named by --api-key-env",
        403: "set the server's API key in the variable named by --api-key-env",
        404: "check --base-url (it ends in /v1) and --model",
    }.get(status, "check --model and the server's log")
    return f"{url}: {what} (HTTP {status}{': ' + detail if detail else ''}); {hint}"


def _error_detail(body: str) -> str:
    """Extract the server's error message from an OpenAI-style error body, on one line and shortened."""
    try:
        decoded = json.loads(body)
    except json.JSONDecodeError:
        text = body
    else:
        error = decoded.get("error", decoded) if isinstance(decoded, dict) else decoded
        message = error.get("message", error) if isinstance(error, dict) else error
        text = message if isinstance(message, str) else json.dumps(message)
    text = " ".join(text.split())
    return text[:200] + ("..." if len(text) > 200 else "")


def normalise_base_url(base_url: str) -> str:
    """Check that ``base_url`` is an http(s) URL and remove its trailing slashes."""
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"--base-url {base_url!r}: expected an http(s) URL such as http://127.0.0.1:8000/v1")
    return base_url.rstrip("/")
