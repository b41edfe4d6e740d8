"""Semantic ranking of a scope's chunks, and its fusion with the full-text ranking.

* The query is embedded at search time only, in one try bounded by
  ``WORKBENCH_EMBEDDINGS_QUERY_TIMEOUT``; when that fails (or vector search is unavailable)
  the search ranks by full-text alone, and the log says so once until it works again.
* The vector ranking orders the scope's chunks with a current embedding (the configured
  model and dimensions) by cosine distance (``<=>``), scoped by owner and thread in the same
  statement (the embeddings carry both, indexed), as the full-text ranking is. An exact scan
  of the thread's embeddings: no approximate index misses a passage for being in a small
  thread of a large table.
* The two rankings are fused by reciprocal rank fusion (k = 60): a chunk scores
  ``Σ 1 / (60 + rank)`` over the rankings it is in; ties keep the full-text order.
* A passage found by meaning alone (no word of the query in it) gets its opening words as
  its snippet, where a full-text one gets ``ts_headline``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from workbench.config import Settings
from workbench.documents.embeddings import (
    DocumentEmbedder,
    EmbeddingsClient,
    EmbeddingsError,
    Vector,
    start_embedder,
    vector_literal,
)

if TYPE_CHECKING:
    from workbench.documents.search import ChunkKey, Passage, Scope

logger = logging.getLogger(__name__)

RRF_K = 60
_OPENING_CHARS = 200


def candidates(limit: int) -> int:
    """How deep each ranking is read before fusing: past ``limit``, so a passage second in
    both rankings can beat one first in a single ranking."""
    return max(4 * limit, 20)


class VectorSearch:
    """The query side of semantic ranking (the chunks are embedded by ``DocumentEmbedder``)."""

    def __init__(
        self, client: EmbeddingsClient, ready: Callable[[], Awaitable[bool]], timeout: float,
        embedder: DocumentEmbedder | None = None,
    ) -> None:  # fmt: skip
        self._client = client
        self._ready = ready
        self._timeout = timeout
        self._embedder = embedder  # stopped with this
        self._failing = False  # only so the log says it once per outage

    async def aclose(self) -> None:
        if self._embedder is not None:
            await self._embedder.close()

    async def query_vector(self, query: str) -> Vector | None:
        """``query``'s embedding, or None: rank by full-text alone."""
        if not query.strip() or not await self._ready():
            return None
        try:
            [vector] = await self._client.embed([query], within=self._timeout)
        except EmbeddingsError as error:
            if not self._failing:
                logger.warning(
                    "document search ranks by full-text alone until queries can be embedded "
                    "again: %s", error,
                )  # fmt: skip
            self._failing = True
            return None
        if self._failing:
            logger.info("document search: queries are embedded again (%s)", self._client.where)
        self._failing = False
        return vector

    async def ranking(
        self, conn: AsyncConnection[Any], scope: Scope, vector: Vector, limit: int
    ) -> list[ChunkKey]:
        """The ``limit`` chunks of ``scope`` nearest to ``vector``."""
        cursor = await conn.execute(
            """
            SELECT document_id, seq FROM document_embeddings
            WHERE thread_id = %(thread)s AND owner = %(owner)s
              AND (%(documents)s::text[] IS NULL OR document_id = ANY(%(documents)s))
              AND model = %(model)s AND coalesce(dimensions, 0) = %(dimensions)s
              AND embedding IS NOT NULL AND vector_dims(embedding) = %(size)s
            ORDER BY embedding <=> %(q)s::vector, document_id, seq
            LIMIT %(limit)s
            """,
            {
                "thread": scope.thread_id, "owner": scope.owner,
                "documents": None if scope.document_ids is None else list(scope.document_ids),
                "model": self._client.model, "dimensions": self._client.dimensions or 0,
                "size": len(vector), "q": vector_literal(vector), "limit": limit,
            },
        )  # fmt: skip
        return [(str(document_id), int(seq)) for document_id, seq in await cursor.fetchall()]


def start_vector_search(pool: AsyncConnectionPool, settings: Settings) -> VectorSearch | None:
    """Semantic ranking with its background embedder started, if an embeddings model is
    configured (None: full-text alone)."""
    embedder = start_embedder(pool, settings)
    if embedder is None:
        return None
    return VectorSearch(embedder.client, embedder.ready, settings.embeddings_query_timeout,
                        embedder)  # fmt: skip


def reciprocal_rank_fusion(rankings: Sequence[Sequence[ChunkKey]], limit: int) -> list[ChunkKey]:
    """The best ``limit`` chunks of all ``rankings`` together, best first."""
    scores: dict[ChunkKey, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (RRF_K + rank)
    # sorted() is stable: equal scores stay in the order first seen (the first ranking's).
    return sorted(scores, key=lambda key: -scores[key])[:limit]


def with_openings(found: list[Passage], matched: set[ChunkKey]) -> list[Passage]:
    """``found``, the snippet of each passage not in ``matched`` (not found by its words)
    being its opening words."""
    for passage in found:
        if (passage.document_id, passage.seq) not in matched:
            passage.snippet = _opening(passage.body)
    return found


def _opening(body: str) -> str:
    text = " ".join(body.split())
    if len(text) <= _OPENING_CHARS:
        return text
    cut = text.rfind(" ", 0, _OPENING_CHARS)
    return text[: cut if cut > 0 else _OPENING_CHARS] + " …"
