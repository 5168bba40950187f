"""A local HTTP server that speaks the Gemini REST protocol, for tests of the real google-genai client.

The server listens on 127.0.0.1 on an ephemeral port, in a background thread, and answers
``POST /{version}/models/{model}:generateContent`` the way the Gemini API does. Answers are
recorded ``GenerateContentResponse`` documents read from fixture files under
``tests/fixtures/gemini/``. A fixture file is a JSON object::

    {"replies": [{"name": "r1", "match": "text found in the request", "response": {...}}]}

A request is served by the first reply whose ``match`` occurs in the request body's text parts
(the system instruction and every content part). Tests can queue faults for a reply with
:meth:`GeminiServer.inject`; each request that matches takes the next queued fault, and the
recorded response is served once the queue is empty. The faults are:

- ``"429"``: status 429 RESOURCE_EXHAUSTED with a ``Retry-After`` header;
- ``"500"``: status 500 INTERNAL;
- ``"malformed"``: status 200 whose candidate text is not valid JSON;
- ``"refusal"``: status 200 whose only candidate stopped with finishReason SAFETY and no content;
- ``"blocked"``: status 200 with no candidates and a prompt blocked for SAFETY.

It also answers ``:batchEmbedContents`` and ``:embedContent`` from a fixture of recorded
embeddings, ``{"embeddings": [{"text": "...", "values": [...]}]}``, and serves the faults
``"429"`` and ``"500"`` queued with :meth:`GeminiServer.inject_embedding`.

The server counts requests per reply name (``calls``) and texts embedded (``embedded``), and
keeps every request body (``requests``), so tests can check how many calls a client made.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gemini"
FAULTS = ("429", "500", "malformed", "refusal", "blocked")

_PATH = re.compile(r"^/(?P<version>v1(?:beta|alpha)?)/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$")


@dataclass
class Reply:
    """A recorded response and the text that selects it."""

    name: str
    match: str
    response: dict[str, Any]
    faults: deque[str] = field(default_factory=deque)


@dataclass
class RecordedRequest:
    """One request the server received."""

    reply: str | None
    model: str
    method: str
    api_key: str | None
    body: dict[str, Any]


def load_replies(path: Path) -> list[Reply]:
    """Read a fixture file of recorded replies."""
    document = json.loads(path.read_text(encoding="utf-8"))
    return [Reply(entry["name"], entry["match"], entry["response"]) for entry in document.get("replies", [])]


def load_embeddings(path: Path) -> dict[str, list[float]]:
    """Read a fixture file of recorded embeddings, keyed by text."""
    document = json.loads(path.read_text(encoding="utf-8"))
    return {entry["text"]: entry["values"] for entry in document.get("embeddings", [])}


def request_text(body: dict[str, Any]) -> str:
    """Join every text part of a GenerateContentRequest body, system instruction first."""
    texts: list[str] = []
    contents = list(body.get("contents", []))
    system = body.get("systemInstruction") or body.get("system_instruction")
    if system:
        contents.insert(0, system)
    for content in contents:
        for part in content.get("parts", []):
            if "text" in part:
                texts.append(part["text"])
    return "\n".join(texts)


class GeminiServer:
    """A threaded HTTP server that replays recorded Gemini responses and injects faults."""

    def __init__(
        self,
        replies: list[Reply],
        delay: float = 0.0,
        retry_after: str = "0",
        embeddings: dict[str, list[float]] | None = None,
    ) -> None:
        self.replies = replies
        self.embeddings = embeddings or {}
        self.embedded: Counter[str] = Counter()
        self.embedding_faults: deque[str] = deque()
        self.delay = delay
        self.retry_after = retry_after
        self.calls: Counter[str] = Counter()
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._serve, name="gemini-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def total_calls(self) -> int:
        with self._lock:
            return len(self.requests)

    def _serve(self) -> None:
        self._httpd.serve_forever(poll_interval=0.05)

    def start(self) -> GeminiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def inject(self, name: str, *faults: str) -> None:
        """Queue ``faults`` for the reply called ``name``; each matching request takes one."""
        unknown = [fault for fault in faults if fault not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; use {', '.join(FAULTS)}")
        self._reply(name).faults.extend(faults)

    def inject_embedding(self, *faults: str) -> None:
        """Queue ``"429"`` or ``"500"`` faults for the next embedding requests."""
        unknown = [fault for fault in faults if fault not in ("429", "500")]
        if unknown:
            raise ValueError(f"unknown embedding faults {unknown}; use 429 or 500")
        self.embedding_faults.extend(faults)

    def calls_for(self, name: str) -> int:
        with self._lock:
            return self.calls[name]

    def _reply(self, name: str) -> Reply:
        for reply in self.replies:
            if reply.name == name:
                return reply
        raise KeyError(f"no reply named {name!r}")

    def _select(self, body: dict[str, Any]) -> tuple[Reply | None, str | None]:
        """Pick the reply for ``body`` and take its next fault, under the lock."""
        text = request_text(body)
        for reply in self.replies:
            if reply.match in text:
                fault = reply.faults.popleft() if reply.faults else None
                return reply, fault
        return None, None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        matched = _PATH.match(handler.path.split("?", 1)[0])
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length)
        methods = ("generateContent", "batchEmbedContents", "embedContent")
        if matched is None or matched["method"] not in methods:
            _send_json(handler, 404, _error(404, "NOT_FOUND", f"no route for {handler.path}"))
            return
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            _send_json(handler, 400, _error(400, "INVALID_ARGUMENT", "request body is not JSON"))
            return
        if matched["method"] != "generateContent":
            self._handle_embedding(handler, matched["model"], matched["method"], body)
            return
        with self._lock:
            reply, fault = self._select(body)
            name = reply.name if reply is not None else None
            self.requests.append(
                RecordedRequest(name, matched["model"], matched["method"], handler.headers.get("x-goog-api-key"), body)
            )
            if name is not None:
                self.calls[name] += 1
        if self.delay:
            time.sleep(self.delay)
        if reply is None:
            _send_json(handler, 400, _error(400, "INVALID_ARGUMENT", "no recorded reply matches this request"))
            return
        if fault == "429":
            _send_json(
                handler,
                429,
                _error(429, "RESOURCE_EXHAUSTED", "Resource exhausted."),
                {"Retry-After": self.retry_after},
            )
        elif fault == "500":
            _send_json(handler, 500, _error(500, "INTERNAL", "An internal error has occurred."))
        elif fault == "malformed":
            _send_json(handler, 200, _text_response('{"rationale": "unterminated', "STOP"))
        elif fault == "refusal":
            _send_json(handler, 200, {"candidates": [{"finishReason": "SAFETY", "index": 0}]})
        elif fault == "blocked":
            _send_json(handler, 200, {"promptFeedback": {"blockReason": "SAFETY"}})
        else:
            _send_json(handler, 200, reply.response)

    def _handle_embedding(self, handler: BaseHTTPRequestHandler, model: str, method: str, body: dict[str, Any]) -> None:
        requests = body.get("requests", [body]) if method == "batchEmbedContents" else [body]
        texts = [request_text({"contents": [request.get("content", {})]}) for request in requests]
        with self._lock:
            self.requests.append(RecordedRequest(None, model, method, handler.headers.get("x-goog-api-key"), body))
            fault = self.embedding_faults.popleft() if self.embedding_faults else None
            if fault is None:
                self.embedded.update(texts)
        if fault == "429":
            headers = {"Retry-After": self.retry_after}
            _send_json(handler, 429, _error(429, "RESOURCE_EXHAUSTED", "Resource exhausted."), headers)
            return
        if fault == "500":
            _send_json(handler, 500, _error(500, "INTERNAL", "An internal error has occurred."))
            return
        unknown = [text for text in texts if text not in self.embeddings]
        if unknown:
            _send_json(handler, 400, _error(400, "INVALID_ARGUMENT", f"no recorded embedding for {unknown[0]!r}"))
            return
        vectors = [{"values": self.embeddings[text]} for text in texts]
        if method == "batchEmbedContents":
            _send_json(handler, 200, {"embeddings": vectors})
        else:
            _send_json(handler, 200, {"embedding": vectors[0]})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _error(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


def _text_response(text: str, finish_reason: str) -> dict[str, Any]:
    return {
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": finish_reason}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
    }


def _send_json(
    handler: BaseHTTPRequestHandler, status: int, document: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    data = json.dumps(document).encode("utf-8")
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=UTF-8")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        # The client went away (a killed subprocess); the request was still counted.
        pass


@contextmanager
def serve(fixture: str | Path, delay: float = 0.0) -> Iterator[GeminiServer]:
    """Run a server over the replies in ``fixture`` (a path, or a file name under the fixture folder)."""
    path = Path(fixture)
    if not path.is_absolute() and not path.exists():
        path = FIXTURES / path
    server = GeminiServer(load_replies(path), delay=delay, embeddings=load_embeddings(path)).start()
    try:
        yield server
    finally:
        server.stop()
