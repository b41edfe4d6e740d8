"""Embeddings benchmark: what semantic ranking costs Postgres, on an embedded Postgres (pgvector).

Prints, from one run:
* indexing 20,000 chunks (~1,400 characters each, one COPY) with the embeddings work-list
  trigger against the same COPY with the trigger disabled (target: at most 15% slower);
* an idle embedder's claim (nothing to embed) on 201,000 embedded chunks (target <= 5 ms
  p50: every server process polls every 2 s);
* the p50 of the vector ranking of a thread of 1,000 chunks and of one of 100,000 (another
  100,000 in another user's thread), at ``--dimensions`` (default 256): an exact scan of the
  thread's embeddings, so it grows with the thread, not with the table (printed, no target).

Exit code 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.config import Settings
from workbench.documents.embeddings import DocumentEmbedder, EmbeddingsClient
from workbench.documents.ranking import VectorSearch
from workbench.documents.search import Scope
from workbench.store import EmbeddedPostgres, open_pool
from workbench.store.migrations import apply_migrations

THREADS = {"big": ("u", 100_000), "small": ("u", 1_000), "other": ("v", 100_000)}
DOCUMENTS = 100  # per thread
COPY_CHUNKS = 20_000
COPY_ROUNDS = 5
SAMPLES = 15
TRIGGER_TARGET = 1.15
CLAIM_TARGET = 0.005
BODY = "repeat(md5(g::text) || ' lorem ipsum dolor sit amet ', 25)"


def fill(conn: psycopg.Connection, dimensions: int) -> None:
    for thread, (owner, chunks) in THREADS.items():
        per = chunks // DOCUMENTS
        conn.execute("INSERT INTO threads (id, owner, created_at, data) VALUES (%s, %s, now(), "
                     "'{}')", (thread, owner))  # fmt: skip
        conn.execute(
            "INSERT INTO documents (id, owner, thread_id, path, name, mime_type, kind, status, "
            "chunks) SELECT %(t)s || '-' || g, %(o)s, %(t)s, 'p' || g, 'n', 'text/plain', "
            "'text', 'ready', %(per)s FROM generate_series(0, %(docs)s - 1) g",
            {"t": thread, "o": owner, "per": per, "docs": DOCUMENTS},
        )
        conn.execute(
            "INSERT INTO document_chunks (document_id, seq, owner, thread_id, body, language) "
            "SELECT %(t)s || '-' || (g / %(per)s), g %% %(per)s, %(o)s, %(t)s, "
            "'passage ' || g, 'simple' FROM generate_series(0, %(n)s - 1) g",
            {"t": thread, "o": owner, "per": per, "n": chunks},
        )
    conn.execute(
        "UPDATE document_embeddings e SET model = 'bench', embedding = (SELECT "
        "array_agg(random())::vector FROM generate_series(1, %s) WHERE e.seq >= 0)",
        (dimensions,),
    )
    conn.execute("VACUUM ANALYZE")


def copy_seconds(conn: psycopg.Connection, first: int) -> float:
    started = time.perf_counter()
    conn.execute(
        f"INSERT INTO document_chunks (document_id, seq, owner, thread_id, body, language) "
        f"SELECT 'small-0', %s + g, 'u', 'small', {BODY}, 'simple' "
        f"FROM generate_series(1, %s) g",
        (first, COPY_CHUNKS),
    )
    took = time.perf_counter() - started
    conn.execute("DELETE FROM document_chunks WHERE seq >= %s", (first,))
    return took


def compare_copies(conn: psycopg.Connection) -> float:
    """The best COPY with the trigger over the best without, interleaved (the host's load
    drifts)."""
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(COPY_ROUNDS):
        for enabled in (True, False):
            state = "ENABLE" if enabled else "DISABLE"
            conn.execute(f"ALTER TABLE document_chunks {state} TRIGGER document_chunks_to_embed")
            times[enabled].append(copy_seconds(conn, 10_000))
    conn.execute("ALTER TABLE document_chunks ENABLE TRIGGER document_chunks_to_embed")
    return min(times[True]) / min(times[False])


async def p50(measure: Callable[[], Awaitable[object]], samples: int = SAMPLES) -> float:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        await measure()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def main(dimensions: int) -> int:
    with tempfile.TemporaryDirectory(prefix="workbench-bench-") as directory:
        embedded = EmbeddedPostgres(Path(directory) / "postgres")
        url = embedded.start()
        try:
            await apply_migrations(url)
            with psycopg.connect(url, autocommit=True) as conn:
                fill(conn, dimensions)
                trigger_ratio = compare_copies(conn)
            return await _measure(url, dimensions, trigger_ratio)
        finally:
            embedded.stop()


async def _measure(url: str, dimensions: int, trigger_ratio: float) -> int:
    settings = Settings(database_url=url, embeddings_model="bench", _env_file=None,
                        embeddings_base_url="http://127.0.0.1:9/v1")  # fmt: skip
    client = EmbeddingsClient(settings)
    async with open_pool(url, settings) as pool:
        embedder = DocumentEmbedder(pool, client, 64)
        claim = await p50(embedder.embed_batch)  # nothing to embed: the claim alone

        async def ready() -> bool:
            return True

        search = VectorSearch(client, ready, 1.0)
        query = [random.random() for _ in range(dimensions)]

        def ranking(thread: str) -> Callable[[], Awaitable[None]]:
            async def rank() -> None:
                async with pool.connection() as conn:
                    await search.ranking(conn, Scope("u", thread), query, 20)

            return rank

        small, big = await p50(ranking("small")), await p50(ranking("big"))
    await client.aclose()
    print(f"COPY of {COPY_CHUNKS} chunks with the embeddings trigger: {trigger_ratio:.2f}x the "
          f"time without (target <= {TRIGGER_TARGET})")  # fmt: skip
    print(f"idle claim on 201,000 embedded chunks: {claim * 1000:.1f} ms p50 "
          f"(target <= {CLAIM_TARGET * 1000:.0f} ms)")  # fmt: skip
    print(f"vector ranking at {dimensions} dimensions: {small * 1000:.1f} ms p50 for a thread of "
          f"1,000 chunks, {big * 1000:.1f} ms for one of 100,000 ({big / small:.0f}x)")  # fmt: skip
    return 0 if trigger_ratio <= TRIGGER_TARGET and claim <= CLAIM_TARGET else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dimensions", type=int, default=256)
    sys.exit(asyncio.run(main(parser.parse_args().dimensions)))
