"""Chunk embeddings for semantic ranking, made in the background.

Invariants:

* Only with ``WORKBENCH_EMBEDDINGS_MODEL`` set and the ``vector`` extension in the database
  (``enable_vector_search``); otherwise search is full-text alone, and the log says so once.
* Never on a turn's path: ``DocumentEmbedder``'s worker embeds chunks as the reader indexes
  them, in batches of ``WORKBENCH_EMBEDDINGS_BATCH``; a search embeds only its query
  (``documents.ranking``).
* The work list is in Postgres: every chunk gets a ``document_embeddings`` row as it is
  indexed (migration 0004's trigger). Rows are claimed with a lease, taken ``FOR UPDATE
  SKIP LOCKED``, so any number of server processes embed side by side, each chunk once; a
  claim whose worker died runs out and is taken again. A result is written only under its
  own claim.
* A chunk's embedding is current when its model and dimensions are the configured ones;
  others are stale and embedded again (waiting chunks first, the newest documents first:
  someone may be waiting for them); a search uses current ones only.
* Failures: the ``openai`` client retries 429s, 5xx and network errors with backoff
  (``WORKBENCH_EMBEDDINGS_MAX_RETRIES``); past that the error is logged, the batch's chunks
  wait 2^attempts seconds (up to an hour) before they are tried again, and the worker pauses
  (1 s, doubling up to a minute) before its next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Sequence
from typing import Any

import openai
from openai import AsyncOpenAI
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from workbench.config import Settings

logger = logging.getLogger(__name__)

FULL_TEXT_ALONE = (
    "document search ranks by full-text alone: the Postgres server has no `vector` extension "
    "(pgvector), or this role may not create it, so WORKBENCH_EMBEDDINGS_MODEL is not used"
)

Vector = list[float]
MAX_DIMENSIONS = 16000  # pgvector's limit for the ``vector`` type
_IDLE_POLL = 2.0  # seconds between looks for chunks indexed by any process
_FIRST_PAUSE = 1.0  # seconds a worker waits after a failed batch, doubling...
_LAST_PAUSE = 60.0  # ...up to this
_INPUT_CHARS = 8000  # of a chunk sent (chunks are shorter; headings add a little)


class EmbeddingsError(Exception):
    """The embeddings endpoint failed or answered something unusable; says which."""


class EmbeddingsClient:
    """``WORKBENCH_EMBEDDINGS_MODEL`` at its OpenAI-compatible ``/v1/embeddings``."""

    def __init__(self, settings: Settings) -> None:
        assert settings.embeddings_model is not None
        self.model = settings.embeddings_model
        self.dimensions = settings.embeddings_dimensions
        self.timeout = settings.embeddings_timeout
        self.max_retries = settings.embeddings_max_retries
        api_key, base_url = _endpoint(settings)
        self._client = AsyncOpenAI(
            api_key=api_key, base_url=base_url, timeout=self.timeout, max_retries=self.max_retries
        )

    @classmethod
    def configured(cls, settings: Settings) -> EmbeddingsClient | None:
        return cls(settings) if settings.embeddings_model else None

    @property
    def where(self) -> str:
        return f"{self.model} at {self._client.base_url}"

    async def embed(self, texts: Sequence[str], *, within: float | None = None) -> list[Vector]:
        """One embedding per text, in order. ``within``: one try of at most that many
        seconds (a search is waiting); else the client's timeout and retries."""
        client = self._client
        if within is not None:
            client = client.with_options(timeout=within, max_retries=0)
        try:
            async with asyncio.timeout(within):
                response = await client.embeddings.create(
                    model=self.model,
                    input=[text[:_INPUT_CHARS] for text in texts],
                    encoding_format="float",
                    dimensions=self.dimensions if self.dimensions else openai.omit,
                )
            # Not validated by the client: a server may answer anything.
            items = sorted(response.data, key=lambda item: int(item.index))
            vectors = [[float(x) for x in item.embedding] for item in items]
        except (TypeError, ValueError, AttributeError) as error:
            raise EmbeddingsError(
                f"{self.where} answered something other than embeddings ({error})"
            ) from None
        except TimeoutError:
            raise EmbeddingsError(f"{self.where} gave no answer within {within:g} s") from None
        except openai.APIStatusError as error:
            raise EmbeddingsError(
                f"{self.where} answered HTTP {error.status_code}: {_message(error)}"
            ) from None
        except openai.APIError as error:  # connection errors, timeouts, unreadable answers
            raise EmbeddingsError(f"{self.where}: {type(error).__name__}: {error}") from None
        return self._checked(len(texts), vectors)

    def _checked(self, expected: int, vectors: list[Vector]) -> list[Vector]:
        if len(vectors) != expected:
            raise EmbeddingsError(f"{self.where} returned {len(vectors)} embeddings for {expected}")
        sizes = {len(vector) for vector in vectors}
        if len(sizes) > 1 or not sizes <= set(range(1, MAX_DIMENSIONS + 1)):
            raise EmbeddingsError(
                f"{self.where} returned embeddings of {sorted(sizes)} dimensions (1 to "
                f"{MAX_DIMENSIONS}, all alike, are usable)"
            )
        if not all(math.isfinite(x) for vector in vectors for x in vector):
            raise EmbeddingsError(f"{self.where} returned an embedding that is not finite")
        return vectors

    async def aclose(self) -> None:
        await self._client.close()


def _endpoint(settings: Settings) -> tuple[str, str | None]:
    """The key and base URL embeddings are asked of: their own, else the model provider's."""
    if settings.embeddings_base_url:
        key = settings.embeddings_api_key
        # Local servers ignore the key, but the client insists on one.
        return (key.get_secret_value() if key else "unused"), settings.embeddings_base_url
    if settings.resolved_provider == "openai":
        assert settings.openai_api_key is not None
        key = settings.embeddings_api_key or settings.openai_api_key
        return key.get_secret_value(), settings.openai_base_url
    key = settings.embeddings_api_key or settings.chat_completions_api_key
    return (key.get_secret_value() if key else "unused"), settings.chat_completions_base_url


def _message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return error.message


def vector_literal(vector: Vector) -> str:
    """``vector`` as pgvector's text form, ``[0.1,0.2,...]``."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


async def enable_vector_search(pool: AsyncConnectionPool) -> bool:
    """Create the ``vector`` extension and the embeddings table where the server has it;
    whether vector search can be used (migration 0004's function, idempotent)."""
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT workbench_enable_vector_search()")
        row = await cursor.fetchone()
        return bool(row and row[0])


async def vector_support(conn: AsyncConnection[Any]) -> str:
    """``ready`` (the embeddings table exists), ``available`` (the extension could be
    created: the server creates the table as it starts) or ``missing``."""
    cursor = await conn.execute(
        """
        SELECT to_regclass('document_embeddings') IS NOT NULL,
               EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')
        """
    )
    row = await cursor.fetchone()
    assert row is not None
    return "ready" if row[0] else ("available" if row[1] else "missing")


async def backlog(conn: AsyncConnection[Any], client: EmbeddingsClient) -> tuple[int, int]:
    """How many passages still want an embedding of ``client``'s model, of how many."""
    cursor = await conn.execute(
        """
        SELECT count(*) FILTER (WHERE embedding IS NULL OR model IS DISTINCT FROM %s
                                   OR coalesce(dimensions, 0) <> %s),
               count(*)
        FROM document_embeddings
        """,
        (client.model, client.dimensions or 0),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def start_embedder(pool: AsyncConnectionPool, settings: Settings) -> DocumentEmbedder | None:
    """The background embedder, started, when an embeddings model is configured."""
    client = EmbeddingsClient.configured(settings)
    if client is None:
        logger.info("document search ranks by full-text alone (WORKBENCH_EMBEDDINGS_MODEL is "
                    "unset)")  # fmt: skip
        return None
    embedder = DocumentEmbedder(pool, client, settings.embeddings_batch)
    embedder.start()
    return embedder


class DocumentEmbedder:
    """The background worker embedding every chunk without a current embedding."""

    def __init__(self, pool: AsyncConnectionPool, client: EmbeddingsClient, batch: int) -> None:
        self._pool = pool
        self.client = client
        self._batch = batch
        # Long enough for one request and all its retries; a claim older than this is taken
        # to be a dead worker's.
        self._lease_seconds = client.timeout * (client.max_retries + 1) + 30
        self._enabled: asyncio.Task[bool] | None = None
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._enabled = asyncio.create_task(self._enable())
        self._worker = asyncio.create_task(self._work(), name="document-embedder")

    async def ready(self) -> bool:
        """Whether vector search can be used (known once the database was asked)."""
        assert self._enabled is not None, "start() first"
        return await asyncio.shield(self._enabled)

    async def close(self) -> None:
        for task in (self._worker, self._enabled):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.client.aclose()

    async def _enable(self) -> bool:
        try:
            enabled = await enable_vector_search(self._pool)
        except Exception:
            logger.exception("checking for the vector extension failed; " + FULL_TEXT_ALONE)
            return False
        if enabled:
            logger.info("document search: full-text and semantic ranking (%s)", self.client.where)
        else:
            logger.warning(FULL_TEXT_ALONE)
        return enabled

    async def _work(self) -> None:
        if not await self.ready():
            return
        pause = _FIRST_PAUSE
        while True:
            try:
                embedded = await self.embed_batch()
            except EmbeddingsError as error:
                embedded = None
                logger.warning("embedding document chunks failed: %s; trying again in %g s",
                               error, pause)  # fmt: skip
            except Exception:
                embedded = None
                logger.exception("embedding document chunks failed; trying again in %g s", pause)
            if embedded is None:
                await asyncio.sleep(pause)
                pause = min(pause * 2, _LAST_PAUSE)
                continue
            pause = _FIRST_PAUSE
            if embedded == 0:
                await asyncio.sleep(_IDLE_POLL)

    async def embed_batch(self) -> int:
        """Claim up to a batch of chunks, embed them and store the embeddings; how many."""
        claim = uuid.uuid4().hex
        chunks = await self._claim(claim)
        if not chunks:
            return 0
        try:
            vectors = await self.client.embed([text for _, _, text in chunks])
        except BaseException as error:
            stopping = isinstance(error, asyncio.CancelledError)
            with contextlib.suppress(Exception):
                await self._release(claim, chunks, failed=not stopping)
            raise
        async with self._pool.connection() as conn:
            await conn.execute(
                """
                UPDATE document_embeddings e
                SET embedding = v.embedding::vector, lease_until = NULL, claim = NULL,
                    attempts = 0
                FROM unnest(%s::text[], %s::int[], %s::text[]) AS v(document_id, seq, embedding)
                WHERE e.document_id = v.document_id AND e.seq = v.seq AND e.claim = %s
                """,
                ([c[0] for c in chunks], [c[1] for c in chunks],
                 [vector_literal(v) for v in vectors], claim),
            )  # fmt: skip
        return len(chunks)

    async def _claim(self, claim: str) -> list[tuple[str, int, str]]:
        """Lease up to a batch of chunks waiting for an embedding, or whose embedding is stale
        (a row locked by another claimer is skipped, not waited for); their (document, seq,
        text). Both are found by index: an idle poll reads next to nothing."""
        params = {
            "model": self.client.model, "dimensions": self.client.dimensions,
            "dims": self.client.dimensions or 0, "batch": self._batch,
            "lease": self._lease_seconds, "claim": claim,
        }  # fmt: skip
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                """
                WITH waiting AS (
                    SELECT document_id, seq FROM document_embeddings
                    WHERE embedding IS NULL AND (lease_until IS NULL OR lease_until < now())
                    ORDER BY document_id DESC, seq
                    LIMIT %(batch)s
                    FOR UPDATE SKIP LOCKED
                ), stale AS (
                    SELECT document_id, seq FROM document_embeddings
                    WHERE ((model, coalesce(dimensions, 0)) < (%(model)s, %(dims)s)
                           OR (model, coalesce(dimensions, 0)) > (%(model)s, %(dims)s))
                      AND embedding IS NOT NULL
                    LIMIT %(batch)s
                    FOR UPDATE SKIP LOCKED
                ), todo AS (
                    SELECT * FROM waiting UNION ALL SELECT * FROM stale LIMIT %(batch)s
                )
                UPDATE document_embeddings e
                SET model = %(model)s, dimensions = %(dimensions)s::int, embedding = NULL,
                    lease_until = now() + make_interval(secs => %(lease)s), claim = %(claim)s
                FROM todo
                WHERE e.document_id = todo.document_id AND e.seq = todo.seq
                RETURNING e.document_id, e.seq
                """,
                params,
            )
            keys = await cursor.fetchall()
            cursor = await conn.execute(
                """
                SELECT c.document_id, c.seq, concat_ws(E'\\n', c.heading, c.body)
                FROM unnest(%s::text[], %s::int[]) AS k(document_id, seq)
                JOIN document_chunks c ON c.document_id = k.document_id AND c.seq = k.seq
                ORDER BY c.document_id DESC, c.seq
                """,
                ([k[0] for k in keys], [k[1] for k in keys]),
            )
            return [(str(d), int(s), str(t)) for d, s, t in await cursor.fetchall()]

    async def _release(
        self, claim: str, chunks: list[tuple[str, int, str]], *, failed: bool
    ) -> None:
        """Give the claim's chunks back: at once if the worker is stopping, else not before
        2^attempts seconds (at most an hour), so a batch the endpoint keeps refusing does not
        hold up the others."""
        async with self._pool.connection() as conn:
            await conn.execute(
                """
                UPDATE document_embeddings e SET claim = NULL,
                    lease_until = CASE WHEN %(failed)s
                        THEN now() + make_interval(secs => least(power(2, e.attempts), 3600))
                    END,
                    attempts = e.attempts + %(failed)s::int
                FROM unnest(%(documents)s::text[], %(seqs)s::int[]) AS k(document_id, seq)
                WHERE e.document_id = k.document_id AND e.seq = k.seq AND e.claim = %(claim)s
                """,
                {"failed": failed, "documents": [c[0] for c in chunks],
                 "seqs": [c[1] for c in chunks], "claim": claim},
            )  # fmt: skip
