"""Search benchmark: reading a document until it is searchable, and a query's latency as a
thread grows.

Prints, from one run against one throwaway database:

* ingest: pages per second of a 200-page text PDF (fpdf2, ~3,000 characters of prose a page,
  a heading every ten pages) through Workbench's real pipeline — a ``DocumentIndexer`` with
  its background readers on a real pool, the file an attachment in a ``LocalBlobStore`` —
  timed from queueing the document (``add_attachment``) until its status is ``ready`` (both
  by Postgres's clock: the row's ``created_at`` and the ``updated_at`` of its last update),
  over the speed of the extraction library itself on the same file measured in the same run:
  pypdfium2 in this process, opening the file and taking every page's text
  (``get_textpage`` + ``get_text_bounded``), its module already imported (target >= 0.8);
  each the best of interleaved rounds, as in bench/upload.py. A round counts only if
  ``search_passages`` then finds the word only the last page has. Also printed: what the
  spare extraction process saves (a process's start), and the CPU time a document costs —
  extraction process, Postgres backends, this process — with the best ratio that allows on
  this machine's cores: the ceiling.
* query: the p50 (and p90) of ``search_passages(pool, scope, query, limit=5)`` on a thread
  of 100,000 chunks over the same on a thread of 1,000 (target <= 2), with 100,000 more
  chunks in other threads and users, bulk-loaded with COPY and then VACUUM ANALYZEd. Queries
  are what someone looking for a passage types: 2 or 3 distinct words (no stop words) of a
  passage drawn like the others; each query runs on both threads, alternately. Also printed:
  how many chunks the queries match, and Postgres alone ranking every match of each query
  in the thread (the same index scan, one statement), which grows with the thread whatever
  a search around it does: the ceiling.

The text (``search_corpus``): English words with Zipf frequencies, so a query of a few
words matches as many passages as words of their rank do.

Exit code 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pypdfium2 as pdfium
from psycopg_pool import AsyncConnectionPool
from tests.postgres_server import admin_server, throwaway_database

from search_corpus import BIG, NEEDLE, OTHERS, PAGES, SMALL, Vocabulary, load, make_pdf, queries
from workbench.config import Settings
from workbench.documents.indexer import DocumentIndexer
from workbench.documents.library import DocumentLibrary
from workbench.documents.search import Scope, search_passages
from workbench.files.blobs import LocalBlobStore
from workbench.sandbox.workspaces import Workspaces
from workbench.store import open_pool
from workbench.store.migrations import apply_migrations

INGEST_ROUNDS = 9
INGEST_TARGET = 0.8
QUERY_ROUNDS = 5
QUERY_TARGET = 2.0


# -- ingest ------------------------------------------------------------------------------


def library_speed(path: Path) -> float:
    """Seconds pypdfium2 takes to open ``path`` and take every page's text, in-process."""
    started = time.perf_counter()
    pdf = pdfium.PdfDocument(path)
    for index in range(len(pdf)):
        page = pdf[index]
        textpage = page.get_textpage()
        textpage.get_text_bounded()
        textpage.close()
        page.close()
    pdf.close()
    return time.perf_counter() - started


async def ingest_once(
    pool: AsyncConnectionPool, library: DocumentLibrary, indexer: DocumentIndexer,
    blobs: LocalBlobStore, pdf: bytes, round_: int,
) -> tuple[float, Cpu]:  # fmt: skip
    """Seconds from queueing the PDF as a new thread's attachment until it is ready, and the
    CPU time that took."""
    owner, thread, attachment = "reader", f"thr_ingest_{round_}", f"att_ingest_{round_}"
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO threads (id, owner, created_at, data) VALUES (%s, %s, now(), '{}')",
            (thread, owner),
        )
        await conn.execute(
            "INSERT INTO attachments (id, owner, thread_id, data) VALUES (%s, %s, %s, '{}')",
            (attachment, owner, thread),
        )

    async def content() -> Any:
        yield pdf

    await blobs.write(attachment, content(), "application/pdf")
    before = await cpu_now(pool)
    document = await library.add_attachment(
        owner, thread, attachment, "report.pdf", "application/pdf", "pdf"
    )
    assert document is not None
    indexer.wake()
    while True:  # the timing is Postgres's own; this only waits for the end
        [state] = await library.states(owner, [document])
        if not state.reading:
            break
        await asyncio.sleep(0.02)
    used = (await cpu_now(pool)) - before
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT status, pages_done, extract(epoch FROM updated_at - created_at) "
            "FROM documents WHERE id = %s",
            (document,),
        )
        status, pages_done, seconds = await cursor.fetchone()  # type: ignore[misc]
    found = await search_passages(pool, Scope(owner, thread), NEEDLE, 5)
    if status != "ready" or pages_done != PAGES or [p.page for p in found] != [PAGES]:
        raise RuntimeError(f"not searchable: {status}, {pages_done} pages, hits {found}")
    return float(seconds), used


@dataclass(frozen=True)
class Cpu:
    """CPU seconds used by this process (the server's side), the pool's Postgres backends
    and the extraction processes ended meanwhile."""

    server: float
    postgres: float
    extraction: float

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.server - other.server, self.postgres - other.postgres,
                   self.extraction - other.extraction)  # fmt: skip


async def cpu_now(pool: AsyncConnectionPool) -> Cpu:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        )
        backends = [int(row[0]) for row in await cursor.fetchall()]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Cpu(
        time.process_time(), sum(map(cpu_of, backends)), children.ru_utime + children.ru_stime
    )


def cpu_of(pid: int) -> float:
    """CPU seconds a process of this machine (a Postgres backend) has used."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_start() -> float:
    """Seconds an extraction process takes to start and load PDFium, given no document: what
    a reader waits for without a spare process started ahead."""
    options = {"max_pages": PAGES, "max_unpacked_bytes": 2**20, "memory_bytes": 2**30,
               "cpu_seconds": 60}  # fmt: skip
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-B", "-m", "workbench.documents.extract", json.dumps(options)],
        stdin=subprocess.DEVNULL, check=True,
    )  # fmt: skip
    return time.perf_counter() - started


def process_start_cpu() -> float:
    """CPU seconds of the same: a spare's, counted when it ends with its document."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process_start()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


async def ingest(url: str, root: Path) -> bool:
    pdf = root / "report.pdf"
    make_pdf(pdf, Vocabulary(seed=1))
    settings = Settings(database_url=url, data_dir=root / "data", _env_file=None)
    async with open_pool(url, settings) as pool:
        blobs = LocalBlobStore(settings.data_dir / "blobs")
        library = DocumentLibrary(pool)
        indexer = DocumentIndexer(library, blobs, Workspaces(root / "workspaces"), settings)
        indexer.start()
        try:
            library_speed(pdf)
            content = pdf.read_bytes()
            await ingest_once(pool, library, indexer, blobs, content, -1)  # warm caches
            ours, theirs, used = [], [], []
            for round_ in range(INGEST_ROUNDS):
                # Each side first in half the rounds, after a pause: the server's next spare
                # process starts once a document is done, and is ready well before this ends.
                for side in (0, 1) if round_ % 2 else (1, 0):
                    await asyncio.sleep(0.3)
                    if side:
                        theirs.append(library_speed(pdf))
                        continue
                    seconds, cpu = await ingest_once(pool, library, indexer, blobs, content, round_)
                    ours.append(seconds)
                    used.append(cpu)
        finally:
            await indexer.close()
    start = statistics.median(process_start() for _ in range(3))
    start_cpu = statistics.median(process_start_cpu() for _ in range(3))
    ok = ingest_report(pdf, ours, theirs, start)
    cpu_report(used, start_cpu, min(theirs))
    return ok


def cpu_report(used: list[Cpu], start_cpu: float, theirs: float) -> None:
    """Where the CPU time goes, and the best ratio it allows on this machine's cores."""
    server = statistics.median(cpu.server for cpu in used)
    postgres = statistics.median(cpu.postgres for cpu in used)
    extraction = statistics.median(cpu.extraction for cpu in used) - start_cpu
    total, cores = server + postgres + extraction, os.cpu_count() or 1
    floor = max(extraction, total / cores)
    print(
        f"  CPU time per document (median): extraction process {extraction * 1e3:.0f} ms "
        f"(PDFium, chunking), Postgres {postgres * 1e3:.0f} ms (tsvectors, GIN, "
        f"COPY), this process {server * 1e3:.0f} ms (its polling too) = {total * 1e3:.0f} ms on "
        f"{cores} cores shared "
        f"with whatever else runs here: at best {floor * 1e3:.0f} ms, ratio {theirs / floor:.2f}"
    )


def ingest_report(pdf: Path, ours: list[float], theirs: list[float], start: float) -> bool:
    ratio = min(theirs) / min(ours)
    ok = ratio >= INGEST_TARGET
    print(
        f"ingest, {PAGES}-page PDF ({pdf.stat().st_size // 1024} KiB), best of {INGEST_ROUNDS} "
        f"interleaved rounds: queued to searchable {PAGES / min(ours):.0f} pages/s "
        f"({min(ours) * 1e3:.0f} ms, median {statistics.median(ours) * 1e3:.0f}) / pypdfium2 "
        f"alone {PAGES / min(theirs):.0f} pages/s ({min(theirs) * 1e3:.0f} ms, median "
        f"{statistics.median(theirs) * 1e3:.0f}) = ratio {ratio:.2f} (target >= {INGEST_TARGET}) "
        f"{'OK' if ok else 'MISSED'}"
    )
    print(
        f"  an extraction process takes {start * 1e3:.0f} ms to start (Python and PDFium): the "
        f"spare started ahead takes that off the path; without it, ratio "
        f"{min(theirs) / (min(ours) + start):.2f}"
    )
    return ok


# -- query -------------------------------------------------------------------------------


# Postgres alone ranking every match of a query in the thread, as search_passages asks it to
# (the query parsed as English and as is), in one statement: the part of a search that grows
# with the thread.
_FLOOR = """
    WITH q AS (
        SELECT string_agg(DISTINCT t, ' | ')::tsquery AS q
        FROM unnest(ARRAY['english', 'simple']) AS language,
             websearch_to_tsquery(language::regconfig, %(q)s) AS parsed, CAST(parsed AS text) t
        WHERE t <> ''
    )
    SELECT max(ts_rank_cd(tsv, q, 1)) FROM document_chunks, q
    WHERE ARRAY[thread_id] @> ARRAY[%(thread)s::text] AND tsv @@ q
"""
_MATCHES = _FLOOR.replace("max(ts_rank_cd(tsv, q, 1))", "count(*)")


async def statement(pool: AsyncConnectionPool, sql: str, thread: str, query: str) -> int:
    async with pool.connection() as conn:
        cursor = await conn.execute(sql, {"thread": thread, "q": query})
        row = await cursor.fetchone()
        return int(row[0] or 0) if row else 0


Scopes = dict[str, Scope]


async def latencies(pool: AsyncConnectionPool, asked: list[str], scopes: Scopes) -> dict[str, Any]:
    """Seconds per search (and per floor statement), per scope, interleaved."""
    for query in asked:  # warm the pool, plans and caches
        for scope in scopes.values():
            await search_passages(pool, scope, query, 5)
    times: dict[str, Any] = {name: [] for name in scopes} | {f"{n} floor": [] for n in scopes}
    for round_ in range(QUERY_ROUNDS):
        for query in asked:
            # Interleaved, each first half the time, so drift falls on both alike.
            for name in sorted(scopes, reverse=round_ % 2 == 1):
                started = time.perf_counter()
                found = await search_passages(pool, scopes[name], query, 5)
                times[name].append(time.perf_counter() - started)
                assert found, f"nothing found for {query!r} in {name}"
                started = time.perf_counter()
                await statement(pool, _FLOOR, scopes[name].thread_id, query)
                times[f"{name} floor"].append(time.perf_counter() - started)
    return times


def percentile(values: Sequence[float], fraction: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * fraction))]


async def query(url: str) -> bool:
    settings = Settings(database_url=url, db_pool_min_size=2, _env_file=None)
    async with open_pool(url, settings) as pool:
        started = time.perf_counter()
        await load(pool)
        print(f"loaded {BIG + SMALL + OTHERS:,} chunks in {time.perf_counter() - started:.0f} s")
        asked = await queries(pool, Vocabulary(seed=3))
        scopes = {"big": Scope("big", "thr_big"), "small": Scope("small", "thr_small")}
        counts = {
            name: [await statement(pool, _MATCHES, scope.thread_id, q) for q in asked]
            for name, scope in scopes.items()
        }
        times = await latencies(pool, asked, scopes)
        memory = await buffers(pool)
    return report(asked, times, counts, memory)


async def buffers(pool: AsyncConnectionPool) -> str:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT current_setting('shared_buffers'), "
            "pg_size_pretty(pg_relation_size('document_chunks'))"
        )
        shared, heap = await cursor.fetchone()  # type: ignore[misc]
    return f"shared_buffers {shared}, the chunks' heap {heap}"


def report(
    asked: list[str], times: dict[str, Any], counts: dict[str, list[int]], memory: str
) -> bool:
    p50 = {name: statistics.median(values) for name, values in times.items()}
    ratio = p50["big"] / p50["small"]
    ok = ratio <= QUERY_TARGET
    print(
        f"query p50, {len(asked)} queries x {QUERY_ROUNDS} rounds: thread of {BIG:,} chunks "
        f"{p50['big'] * 1e3:.2f} ms (p90 {percentile(times['big'], 0.9) * 1e3:.2f}) / thread of "
        f"{SMALL:,} chunks {p50['small'] * 1e3:.2f} ms (p90 "
        f"{percentile(times['small'], 0.9) * 1e3:.2f}) = ratio {ratio:.2f} "
        f"(target <= {QUERY_TARGET}) {'OK' if ok else 'MISSED'}"
    )
    big, small = counts["big"], counts["small"]
    print(
        f"  chunks holding every word of a query: median {statistics.median(big):.0f} (p90 "
        f"{percentile(big, 0.9):.0f}) of {BIG:,}; median {statistics.median(small):.0f} (p90 "
        f"{percentile(small, 0.9):.0f}) of {SMALL:,}; e.g. {', '.join(map(repr, asked[:4]))}"
    )
    # If all else a search does cost the same at both sizes, this part alone sets the ratio.
    ceiling = (p50["small"] + p50["big floor"] - p50["small floor"]) / p50["small"]
    print(
        f"  Postgres alone ranking every match in the thread (one statement), p50: "
        f"{p50['big floor'] * 1e3:.2f} ms / {p50['small floor'] * 1e3:.2f} ms. With all else a "
        f"search does costing the same at both sizes, that alone makes the ratio {ceiling:.2f} "
        f"here ({memory})"
    )
    return ok


async def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with (
        admin_server() as admin_url,
        tempfile.TemporaryDirectory(prefix="workbench-bench-search-") as tmp,
    ):
        with throwaway_database(admin_url, "workbench_bench_search") as url:
            await apply_migrations(url)
            ingested = await ingest(url, Path(tmp))
        with throwaway_database(admin_url, "workbench_bench_search") as url:
            await apply_migrations(url)
            queried = await query(url)
    return 0 if ingested and queried else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
