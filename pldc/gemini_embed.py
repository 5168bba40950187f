"""Gemini embeddings of texts (such as extracted rules), through the call cache.

Each text is cached on its own, keyed by the embedding model, the task type, the output
dimensionality and the text, so adding examples to a run embeds only the new texts. Texts not
in the cache are sent in ``batchEmbedContents`` requests of at most :data:`MAX_BATCH` texts,
with the retries of :class:`~pldc.gemini.GeminiClient`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from pldc.errors import ModelError, UsageError
from pldc.gemini import GeminiClient

logger = logging.getLogger("pldc")

DEFAULT_EMBEDDING_MODEL = "gemini-embedding-001"
# NOTE: 100 texts per batchEmbedContents request is the limit this code assumes for the Gemini
# API; a smaller limit would surface as HTTP 400 naming the first example of the batch.
MAX_BATCH = 100
TASK_TYPES = (
    "SEMANTIC_SIMILARITY",
    "CLASSIFICATION",
    "CLUSTERING",
    "RETRIEVAL_DOCUMENT",
    "RETRIEVAL_QUERY",
    "QUESTION_ANSWERING",
    "FACT_VERIFICATION",
)


class GeminiEmbedder:
    """Embeds texts with a Gemini embedding model; ``dimensions`` None keeps the model's default size."""

    def __init__(
        self,
        client: GeminiClient,
        model: str = DEFAULT_EMBEDDING_MODEL,
        dimensions: int | None = 768,
        task_type: str = "CLUSTERING",
    ) -> None:
        if task_type not in TASK_TYPES:
            raise UsageError(f"embedding task type {task_type!r} is not one of {', '.join(TASK_TYPES)}")
        if dimensions is not None and dimensions < 1:
            raise UsageError("embedding dimensions must be at least 1")
        self.client = client
        self.model = model
        self.dimensions = dimensions
        self.task_type = task_type

    def cache_parts(self, text: str) -> dict[str, Any]:
        return {
            "backend": "gemini-embedding",
            "model": self.model,
            "task_type": self.task_type,
            "dimensions": self.dimensions,
            "input": text,
        }

    def embed(
        self, items: Sequence[tuple[str, str]], progress: Callable[[int], None] | None = None
    ) -> list[list[float]]:
        """Return one vector per ``(id, text)`` item, in order; ids name the items in errors."""
        vectors: list[list[float] | None] = []
        missing: list[int] = []
        for index, (_, text) in enumerate(items):
            stored = self.client.cache.get(self.cache_parts(text))
            vectors.append(stored)
            if stored is None:
                missing.append(index)
            elif progress is not None:
                progress(1)
        self.client.stats.add(cache_hits=len(items) - len(missing))
        for start in range(0, len(missing), MAX_BATCH):
            batch = missing[start : start + MAX_BATCH]
            found = self._embed_batch([items[index] for index in batch])
            self.client.cache.put_many(
                (self.cache_parts(items[index][1]), vector) for index, vector in zip(batch, found, strict=True)
            )
            for index, vector in zip(batch, found, strict=True):
                vectors[index] = vector
            if progress is not None:
                progress(len(batch))
        result: list[list[float]] = []
        for stored_or_new in vectors:
            assert stored_or_new is not None, "every text missing from the cache was embedded above"
            result.append(stored_or_new)
        return result

    def _embed_batch(self, items: Sequence[tuple[str, str]]) -> list[list[float]]:
        from google.genai import types

        client = self.client.sdk_client()
        config = types.EmbedContentConfig(task_type=self.task_type, output_dimensionality=self.dimensions)
        texts: list[Any] = [text for _, text in items]
        first = items[0][0]
        response = self.client.call_with_retries(
            first, lambda: client.models.embed_content(model=self.model, contents=texts, config=config)
        )
        embeddings = response.embeddings or []
        if len(embeddings) != len(items):
            raise ModelError(
                f"example {first}: {self.model} returned {len(embeddings)} embeddings for {len(items)} texts; "
                "re-run to ask again"
            )
        vectors: list[list[float]] = []
        for (item_id, _), embedding in zip(items, embeddings, strict=True):
            values = [float(value) for value in embedding.values or []]
            if not values:
                raise ModelError(f"example {item_id}: {self.model} returned an empty embedding; re-run to ask again")
            if self.dimensions is not None and len(values) != self.dimensions:
                raise ModelError(
                    f"example {item_id}: {self.model} returned {len(values)} dimensions, not {self.dimensions}; "
                    "choose a dimensionality the model supports"
                )
            vectors.append(values)
        return vectors
