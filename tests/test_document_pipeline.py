"""The reading pipeline's parts, on a real Postgres and real extraction processes: spare
processes started ahead, chunks indexed while the rest of a document is read, and full-text
search scoped to one thread (through its GIN index) in every language of its documents."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
from fpdf import FPDF
from psycopg_pool import AsyncConnectionPool

from workbench.config import Settings
from workbench.documents.chunks import Chunk, chunks_of, language_model
from workbench.documents.formats import Section
from workbench.documents.indexer import DocumentIndexer
from workbench.documents.library import Claimed, DocumentLibrary
from workbench.documents.reader import Extractors, Opened, Read, ReadLimits
from workbench.documents.search import Scope, search_passages
from workbench.files.blobs import LocalBlobStore
from workbench.sandbox.workspaces import Workspaces

LIMITS = ReadLimits(
    max_pages=500, max_unpacked_bytes=2**28, memory_bytes=2**30, cpu_seconds=60,
    wall_seconds=60,
)  # fmt: skip


def extractors_running() -> list[psutil.Process]:
    running = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "workbench.documents.extract" in (
                " ".join(child.cmdline())
            ):
                running.append(child)
        except psutil.NoSuchProcess:
            pass
    return running


def pdf(path: Path, pages: list[str]) -> Path:
    document = FPDF()
    document.set_font("helvetica", size=10)
    for text in pages:
        document.add_page()
        if text:
            document.multi_cell(0, 5, text)
    document.output(str(path))
    return path


async def read_all(extractors: Extractors, path: Path, kind: str) -> list[Opened | Read]:
    return [event async for event in extractors.read(path, kind)]


# -- spare extraction processes --------------------------------------------------------


async def test_a_spare_is_started_ahead_used_for_one_document_and_closed(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("Barn owls hunt at dusk.\n\nThey nest in old barns.")
    extractors = Extractors(LIMITS)
    await extractors.restock()
    [spare] = extractors_running()
    try:
        events = await read_all(extractors, notes, "text")
        assert not spare.is_running() or spare.status() == psutil.STATUS_ZOMBIE
        assert [c.text for e in events if isinstance(e, Read) for c in e.chunks] == [
            "Barn owls hunt at dusk.\n\nThey nest in old barns."
        ]
        await extractors.restock()
        [next_spare] = extractors_running()
        assert next_spare.pid != spare.pid
        await extractors.restock()  # one is waiting: no second
        assert [p.pid for p in extractors_running()] == [next_spare.pid]
    finally:
        await extractors.close()
    assert extractors_running() == []


async def test_readers_done_at_once_leave_one_spare_and_close_leaves_none() -> None:
    before = {process.pid for process in extractors_running()}
    extractors = Extractors(LIMITS)
    try:
        await asyncio.gather(*(extractors.restock() for _ in range(3)))
        assert len([p for p in extractors_running() if p.pid not in before]) == 1
    finally:
        await extractors.close()
    assert [p for p in extractors_running() if p.pid not in before] == []


async def test_a_spare_that_died_is_replaced_by_a_new_process(tmp_path: Path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# Owls\n\nThe barn owl hunts at dusk.")
    extractors = Extractors(LIMITS)
    await extractors.restock()
    [spare] = extractors_running()
    spare.kill()
    spare.wait(timeout=10)
    await asyncio.sleep(0.1)  # the event loop notices the exit
    try:
        events = await read_all(extractors, notes, "markdown")
    finally:
        await extractors.close()
    assert [(c.text, c.heading) for e in events if isinstance(e, Read) for c in e.chunks] == [
        ("The barn owl hunts at dusk.", "Owls")
    ]


def test_an_extraction_process_given_no_document_exits_quietly() -> None:
    """A spare whose server went away sees its stdin close, and leaves."""
    done = subprocess.run(
        [sys.executable, "-B", "-m", "workbench.documents.extract", json.dumps({
            "max_pages": 10, "max_unpacked_bytes": 2**20, "memory_bytes": 2**30,
            "cpu_seconds": 10})],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")


# -- indexing while reading ------------------------------------------------------------


async def queued_pdf(
    pool: AsyncConnectionPool, blobs: LocalBlobStore, name: str, data: bytes
) -> tuple[str, str, str]:
    """(owner, thread, document id) of a PDF queued as a new thread's attachment."""
    owner, thread, attachment = "reader", f"thr_{secrets.token_hex(4)}", secrets.token_hex(8)
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO threads (id, owner, created_at, data) VALUES (%s, %s, now(), '{}')",
            (thread, owner),
        )
        await conn.execute(
            "INSERT INTO attachments (id, owner, thread_id, data) VALUES (%s, %s, %s, '{}')",
            (attachment, owner, thread),
        )

    async def content() -> AsyncIterator[bytes]:
        yield data

    await blobs.write(attachment, content(), "application/pdf")
    document = await DocumentLibrary(pool).add_attachment(
        owner, thread, attachment, name, "application/pdf", "pdf"
    )
    assert document is not None
    return owner, thread, document


async def test_a_document_is_searchable_page_by_page_while_read_and_whole_at_the_end(
    pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    pages = [
        f"Page {n} of the ledger. " + "The clerk counted barrels of salted herring. " * 60
        for n in range(1, 121)
    ]
    pages[0] += " The first page names the harbourmaster."
    pages[-1] += " The last page names the lighthouse keeper."
    pages += ["", ""]  # blank last pages: read, with nothing to index
    settings = Settings(database_url="unused", data_dir=tmp_path / "data", _env_file=None)
    blobs = LocalBlobStore(tmp_path / "blobs")
    library = DocumentLibrary(pool)
    indexer = DocumentIndexer(library, blobs, Workspaces(tmp_path / "ws"), settings, LIMITS)
    ledger = pdf(tmp_path / "ledger.pdf", pages).read_bytes()
    owner, thread, document = await queued_pdf(pool, blobs, "ledger.pdf", ledger)
    await asyncio.to_thread(language_model)  # loaded once per process; not what is tested
    indexer.start()
    seen = []
    try:
        indexer.wake()
        while True:
            [state] = await library.states(owner, [document])
            if not state.reading:
                break
            if 0 < state.pages_done < len(pages):
                found = await search_passages(pool, Scope(owner, thread), "harbourmaster", 5)
                seen.append((state.pages_done, state.chunks, [p.page for p in found]))
            await asyncio.sleep(0.002)
    finally:
        await indexer.close()
    assert (state.status, state.pages_done, state.pages) == ("ready", 122, 122)
    assert seen, "never seen part-read"
    assert all(pages_found == [1] for _, _, pages_found in seen)
    assert [done for done, _, _ in seen] == sorted(done for done, _, _ in seen)
    found = await search_passages(pool, Scope(owner, thread), "lighthouse keeper", 5)
    assert [p.page for p in found][:1] == [120]
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT array_agg(seq ORDER BY seq) FROM document_chunks WHERE document_id = %s",
            (document,),
        )
        [seqs] = await cursor.fetchone()  # type: ignore[misc]
    assert seqs == list(range(state.chunks))


# -- search ----------------------------------------------------------------------------


async def indexed(
    pool: AsyncConnectionPool, owner: str, thread: str, language: str, texts: list[str]
) -> str:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO threads (id, owner, created_at, data) VALUES (%s, %s, now(), '{}') "
            "ON CONFLICT DO NOTHING",
            (thread, owner),
        )
    library = DocumentLibrary(pool)
    name = f"{secrets.token_hex(4)}.md"
    document = await library.add_path(owner, thread, name, name, "text/markdown", "markdown")
    async with pool.connection() as conn:  # claimed by this test, not by a reader
        await conn.execute(
            "UPDATE documents SET status = 'reading', lease_token = 'test' WHERE id = %s",
            (document,),
        )
    claimed = Claimed(document, owner, thread, name, "markdown", None, name, "test")
    assert await library.add_chunks(claimed, language, 0, [Chunk(t, None, None) for t in texts], 0)
    await library.finish(claimed, "ready")
    return document


async def test_search_reads_only_the_thread_and_owner_asked(pool: AsyncConnectionPool) -> None:
    alice, bob = f"alice_{secrets.token_hex(4)}", f"bob_{secrets.token_hex(4)}"
    threads = {who: f"thr_{secrets.token_hex(6)}" for who in (alice, bob)}
    for who, thread in threads.items():
        await indexed(pool, who, thread, "english", [f"{who} keeps the otter ledger."])
    for who, thread in threads.items():
        found = await search_passages(pool, Scope(who, thread), "otter ledger", 5)
        assert [p.body for p in found] == [f"{who} keeps the otter ledger."]
    assert await search_passages(pool, Scope(alice, threads[bob]), "otter", 5) == []


async def test_search_matches_each_document_in_its_own_language_and_all_words_first(
    pool: AsyncConnectionPool,
) -> None:
    owner, thread = f"user_{secrets.token_hex(4)}", f"thr_{secrets.token_hex(6)}"
    english = await indexed(
        pool, owner, thread, "english",
        ["The tables were laid for the harvest feast.", "Harvest came late that year."],
    )  # fmt: skip
    plain = await indexed(pool, owner, thread, "simple", ["tables galore harvest"])
    found = [(p.document_id, p.body) for p in await search_passages(
        pool, Scope(owner, thread), "table harvest", 5
    )]  # fmt: skip
    # "table" meets "tables" only where stemming applies (English); all words, then some.
    assert found[0] == (english, "The tables were laid for the harvest feast.")
    assert sorted(found[1:]) == sorted(
        [(english, "Harvest came late that year."), (plain, "tables galore harvest")]
    )
    only = await search_passages(pool, Scope(owner, thread, [plain]), "tables", 5)
    assert [p.body for p in only] == ["tables galore harvest"]


def test_chunks_collapse_blanks_and_strip_lines_but_keep_paragraphs() -> None:
    text = "  A \t b\u00a0\u00a0c.  \r\n \u2003 second\tline \n\n\n  Next\u3000paragraph \x00 "
    [chunk] = chunks_of([Section(text, 3, " Heading \t one ")])
    assert chunk == Chunk("A b c.\nsecond line\n\nNext\u3000paragraph \ufffd", 3, "Heading one")
