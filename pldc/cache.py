"""A content-addressed store of model call results.

Every model call pldc makes (a student scoring an example, a teacher answering a request) is
keyed by the SHA-256 of a canonical JSON document naming everything that determines its result:
the backend and model, the call's parameters, the rendered prompt and the input. Re-running
the same work reads the stored results and calls nothing; an interrupted run resumes from what
was stored before it stopped, because results are committed as they arrive.

Callers must not put credentials in a key's parts: keys are hashes, but parts are also kept
beside each result so that a stored entry can be audited.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pldc.errors import InputError

logger = logging.getLogger("pldc")

SCHEMA = 1


class CacheMode(enum.Enum):
    """The cache mode of a run: read and write, write only (``--refresh``), or off."""

    USE = "use"
    REFRESH = "refresh"
    OFF = "off"


def call_key(parts: Mapping[str, Any]) -> str:
    """Hash ``parts`` as canonical JSON (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_cache_path() -> Path:
    """``PLDC_CALL_CACHE`` if set, else ``calls.sqlite`` in pldc's cache home."""
    import os

    from pldc.embedded import cache_home

    configured = os.environ.get("PLDC_CALL_CACHE")
    return Path(configured) if configured else cache_home() / "calls.sqlite"


class CallCache:
    """A SQLite file of ``key -> JSON result``, safe to share between threads of one process."""

    def __init__(self, path: Path | None = None, mode: CacheMode = CacheMode.USE) -> None:
        self.mode = mode
        self.path = path if path is not None else default_cache_path()
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if mode is not CacheMode.OFF:
            self._db = self._open(self.path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, parts TEXT NOT NULL,"
                " result TEXT NOT NULL, created REAL NOT NULL, schema INTEGER NOT NULL)"
            )
            db.commit()
        except (OSError, sqlite3.Error) as error:
            raise InputError(
                f"{path}: cannot open the call cache ({error}); use --no-cache or set PLDC_HOME"
            ) from error
        return db

    def get(self, parts: Mapping[str, Any]) -> Any | None:
        """Return the stored result for ``parts``, or None (always None unless the mode is USE)."""
        if self._db is None or self.mode is not CacheMode.USE:
            self.misses += 1
            return None
        key = call_key(parts)
        with self._lock:
            row = self._db.execute("SELECT result FROM calls WHERE key = ? AND schema = ?", (key, SCHEMA)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(row[0])

    def put(self, parts: Mapping[str, Any], result: Any) -> None:
        self.put_many([(parts, result)])

    def put_many(self, entries: Iterable[tuple[Mapping[str, Any], Any]]) -> None:
        """Store several results in one transaction, so that a kill leaves whole entries only."""
        if self._db is None:
            return
        rows = [
            (
                call_key(parts),
                json.dumps(parts, sort_keys=True, ensure_ascii=False),
                json.dumps(result, ensure_ascii=False),
                time.time(),
                SCHEMA,
            )
            for parts, result in entries
        ]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?)", rows)
            self._db.commit()

    def __len__(self) -> int:
        if self._db is None:
            return 0
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
