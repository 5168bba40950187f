"""A local HTTP server on 127.0.0.1 that speaks the OpenAI chat completions API, for tests.

:class:`FakeServer` answers every ``POST`` from a script of :class:`Reply` s, then from a
function of the request body, and keeps every request with its headers.
:class:`RecordedAnswers` is such a function: it replays recorded teacher answers from a
fixture file and serves faults queued with :meth:`RecordedAnswers.inject`. A fixture file is a
JSON object::

    {"replies": [{"name": "train.jsonl:1", "match": "text found in the first user message",
                  "text": "the answer text"}]}
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Reply:
    """One scripted response: status, JSON body, headers, and a delay before answering."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def completion(content: str, logprobs: list[dict[str, Any]] | None = None, tokens: int = 3) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content}}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {"choices": [choice], "usage": {"prompt_tokens": 10, "completion_tokens": tokens, "total_tokens": 13}}


class FakeServer:
    """An OpenAI-style server on 127.0.0.1 that answers from a script and records every request.

    ``script`` replies are used in order; after it runs out, ``answer(body)`` builds the reply.
    """

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.answer: Callable[[dict[str, Any]], Reply] = lambda body: Reply(body=completion("race"))
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append((dict(self.headers), body))
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                    reply = fake.script.pop(0) if fake.script else None
                try:
                    reply = reply or fake.answer(body)
                    time.sleep(reply.delay)
                    data = json.dumps(reply.body if reply.body is not None else {}).encode()
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the timeout tests)
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


FAULTS = ("malformed", "fenced", "refusal", "429", "500", "401")


@dataclass
class RecordedReply:
    """A recorded answer text and the text of the first user message that selects it."""

    name: str
    match: str
    text: str
    faults: deque[str] = field(default_factory=deque)


class RecordedAnswers:
    """Builds a :class:`FakeServer` reply from recorded answers, with faults queued per answer.

    A request is served by the first reply whose ``match`` occurs in its first user message.
    Each request that matches takes the next queued fault; the recorded answer is served once
    the queue is empty. The faults are:

    - ``"malformed"``: status 200 whose content is not valid JSON;
    - ``"fenced"``: status 200 whose content is the recorded answer inside a Markdown code fence;
    - ``"refusal"``: status 200 whose message has a ``refusal`` and no content;
    - ``"429"``: status 429 with ``Retry-After: 0``;
    - ``"500"``: status 500;
    - ``"401"``: status 401.

    ``calls`` counts the requests per reply name; a request that matches no reply gets HTTP 400.
    """

    def __init__(self, path: Path) -> None:
        document = json.loads(path.read_text(encoding="utf-8"))
        self.replies = [RecordedReply(entry["name"], entry["match"], entry["text"]) for entry in document["replies"]]
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def inject(self, name: str, *faults: str) -> None:
        """Queue ``faults`` for the reply called ``name``; each matching request takes one."""
        unknown = [fault for fault in faults if fault not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; use {', '.join(FAULTS)}")
        [reply] = [reply for reply in self.replies if reply.name == name]
        reply.faults.extend(faults)

    def __call__(self, body: dict[str, Any]) -> Reply:
        users = [message["content"] for message in body.get("messages", []) if message.get("role") == "user"]
        first = users[0] if users else ""
        with self.lock:
            matched = next((reply for reply in self.replies if reply.match in first), None)
            if matched is None:
                return Reply(400, {"error": {"message": "no recorded reply matches this request"}})
            self.calls[matched.name] += 1
            fault = matched.faults.popleft() if matched.faults else None
        if fault == "malformed":
            return Reply(body=completion('{"rationale": "unterminated'))
        if fault == "fenced":
            return Reply(body=completion(f"```json\n{matched.text}\n```"))
        if fault == "refusal":
            refused = completion("")
            refused["choices"][0]["message"] = {"role": "assistant", "content": None, "refusal": "I cannot help."}
            return Reply(body=refused)
        if fault == "429":
            return Reply(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"})
        if fault == "500":
            return Reply(500, {"error": {"message": "internal error"}})
        if fault == "401":
            return Reply(401, {"error": {"message": "invalid API key"}})
        return Reply(body=completion(matched.text, tokens=len(matched.text) // 4))
