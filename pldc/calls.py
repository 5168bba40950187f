"""Run a backend's calls through the call cache, in chunks that are stored as they finish.

Each example's call is keyed by the call kind, the backend's identity, the scoring mode and
its parameters, the rendered system prompt, the user content and the labels. The system
prompt and the user content enter the key as SHA-256 digests, so the stored key parts of a
ContractNLI split do not repeat the document once per hypothesis.

A run looks every example up first, then computes only the missing ones, ``chunk_size`` at a
time, and stores each chunk in one transaction. A killed run therefore loses at most the chunk
in progress, and the next run computes only what is still missing.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pldc.backend import user_content
from pldc.cache import CallCache
from pldc.data import Example

logger = logging.getLogger("pldc")

DEFAULT_CHUNK_SIZE = 64


def text_digest(text: str) -> str:
    """Return the SHA-256 hex digest of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def call_parts(
    call: str,
    identity: Mapping[str, Any],
    scoring: Mapping[str, Any],
    system_prompt: str,
    example: Example,
    input_names: Sequence[str],
    labels: Sequence[str],
) -> dict[str, Any]:
    """Build the cache key parts of one example's call."""
    return {
        "call": call,
        "backend": dict(identity),
        "scoring": dict(scoring),
        "system_prompt_sha256": text_digest(system_prompt),
        "user_content_sha256": text_digest(user_content(example, input_names)),
        "labels": list(labels),
    }


@dataclass
class CachedRun:
    """Per-example results of one run, and which of them the backend computed in this run."""

    results: list[dict[str, Any]]
    hits: int
    computed: list[int] = field(default_factory=list)


def run_cached(
    examples: Sequence[Example],
    parts: Sequence[Mapping[str, Any]],
    compute: Callable[[list[Example]], list[dict[str, Any]]],
    cache: CallCache,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Callable[[int], None] | None = None,
) -> CachedRun:
    """Return a result per example, computing with ``compute`` only those the cache lacks.

    ``compute`` receives a chunk of examples and returns one JSON-serialisable dict per example.
    Each stored result gets a ``seconds`` entry: the chunk's wall time divided by its size,
    measured when the result was computed.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    found = [cache.get(part) for part in parts]
    hits = sum(result is not None for result in found)
    if progress and hits:
        progress(hits)
    missing = [index for index, result in enumerate(found) if result is None]
    if hits:
        logger.info("call cache: %d of %d results found, %d to compute", hits, len(examples), len(missing))
    for start in range(0, len(missing), chunk_size):
        chunk = missing[start : start + chunk_size]
        started = time.perf_counter()
        computed = compute([examples[index] for index in chunk])
        seconds = (time.perf_counter() - started) / len(chunk)
        entries = []
        for index, result in zip(chunk, computed, strict=True):
            found[index] = {**result, "seconds": seconds}
            entries.append((parts[index], found[index]))
        cache.put_many(entries)
    results = [result for result in found if result is not None]
    return CachedRun(results, hits, missing)
