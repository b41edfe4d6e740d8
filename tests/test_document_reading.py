"""Reading documents in the background, over HTTP: bad and hostile files end as failed
documents with a note (the turn completes, the server stays up), a document still being read
is searched as far as it is, the same bytes are read once, many documents at once are each
read exactly once, deletion takes the documents with it, and a reader that died is
replaced."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from tests import documents
from tests.document_steps import (
    attaching,
    chunks_of,
    healthy,
    no_errors,
    outputs,
    query,
    reader_errors,
    reading_tasks,
    scripted_server,
    search_call,
    settled,
    thread_documents,
    until,
    upload,
)
from tests.live import (
    LiveServer,
    ScriptedOpenAI,
    add_message,
    create_thread,
    list_items,
    provider_settings,
    responses_step,
    running,
    stream_events,
    title_step,
)
from workbench.agent.response_events import Text
from workbench.config import Settings
from workbench.documents.chunks import Chunk
from workbench.documents.library import Claimed, DocumentLibrary

# -- bad files ------------------------------------------------------------------------------


async def test_bad_files_each_end_with_a_clear_note_and_the_turn_completes(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient,
    pool: AsyncConnectionPool,
) -> None:  # fmt: skip
    server = scripted_server(
        database_url, tmp_path / "data", scripted_openai,
        documents_max_pages=2, documents_max_unpacked_mb=1, documents_max_mb=1,
    )  # fmt: skip
    three_pages = [(None, f"Page {n} of the long survey: rivers and lakes.") for n in (1, 2, 3)]
    files = {
        "broken.pdf": (documents.corrupt_pdf(), documents.PDF),
        "locked.pdf": (documents.encrypted_pdf("Secret rivers."), documents.PDF),
        "bomb.docx": (documents.zip_bomb(documents.docx([("A", "b")]), 2), documents.DOCX),
        "bomb.xlsx": (documents.zip_bomb(documents.xlsx({"A": [["b"]]}), 3), documents.XLSX),
        "junk.docx": (b"PK\x03\x04" + bytes(range(256)) * 8, documents.DOCX),
        "big.txt": (b"rivers " * 200_000, documents.TEXT),
        "empty.txt": (b"", documents.TEXT),
        "survey.pdf": (documents.pdf(three_pages), documents.PDF),
        "scan.pdf": (documents.scanned_pdf(pages=2), documents.PDF),
    }
    notes = {
        "broken.pdf": "broken.pdf: it is not a readable PDF (corrupt or damaged).",
        "locked.pdf": "locked.pdf: the PDF is encrypted (password-protected).",
        "bomb.docx": "bomb.docx: it unpacks to 2 MiB, more than the 1 MiB allowed (a zip bomb?).",
        "bomb.xlsx": "bomb.xlsx: it unpacks to 3 MiB, more than the 1 MiB allowed (a zip bomb?).",
        "junk.docx": "junk.docx: it is not a valid DOCX file (corrupt?).",
        "big.txt": "big.txt: it is larger than 1 MiB, the most read for search "
        "(WORKBENCH_DOCUMENTS_MAX_MB).",
        "empty.txt": "empty.txt: the file is empty.",
        "survey.pdf": "Only the first 2 of 3 pages of survey.pdf were read for search "
        "(WORKBENCH_DOCUMENTS_MAX_PAGES).",
        "scan.pdf": "scan.pdf: it has no text to search (a scanned PDF without a text layer? "
        "it would need OCR).",
    }
    scripted_openai.script(
        responses_step([search_call("c1", "rivers")]),
        responses_step([Text("Only part of the survey could be read [1].")]),
        title_step("Survey"),
    )
    with running(server) as live:
        ids = [await upload(http, live, name, data, mime) for name, (data, mime) in files.items()]
        events = await stream_events(http, live.url, attaching(create_thread("Read"), *ids))
        no_errors(events)
        thread_id = events[0].thread.id
        found = await settled(pool, thread_id)
        items = await list_items(http, live.url, thread_id)
        await healthy(http, live)

    assert {n: (d["status"], d["note"]) for n, d in found.items()} == {
        name: ("ready" if name == "survey.pdf" else "failed", note) for name, note in notes.items()
    }
    assert (found["survey.pdf"]["pages"], found["survey.pdf"]["pages_total"]) == (2, 3)
    given = outputs(scripted_openai.streamed[1])["c1"]
    for note in notes.values():
        assert f"\nNote: {note}" in given
    assert "[1] survey.pdf, page 1\nPage 1 of the long survey" in given
    assert "page 3" not in given
    tasks = reading_tasks(items)
    for name, note in notes.items():
        title = "Read survey.pdf" if name == "survey.pdf" else f"Could not read {name}"
        assert tasks[title].status_indicator == "complete"
        assert note in (tasks[title].content or "")
    assert items[-1].type == "assistant_message"


async def test_a_file_beyond_the_memory_or_time_limit_fails_and_the_server_stays_up(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient,
    pool: AsyncConnectionPool,
) -> None:  # fmt: skip
    server = scripted_server(
        database_url, tmp_path / "data", scripted_openai,
        documents_memory_mb=128, documents_timeout=2.0, documents_max_pages=100_000,
    )  # fmt: skip
    files = {
        # 300,000 paragraphs: 120 KiB packed, far more than 128 MiB as a parse tree.
        "huge.docx": (documents.docx_of_size(300_000, "word " * 10), documents.DOCX),
        # 20,000 pages take ten seconds and more to read; the limit is two.
        "endless.pdf": (documents.long_pdf(20_000, "Lorem ipsum dolor sit amet. " * 30),
                        documents.PDF),
        "fine.md": (documents.markdown([("Fine", "This one reads in no time.")]),
                    documents.MARKDOWN),
    }  # fmt: skip
    scripted_openai.script(responses_step([Text("Received.")]), title_step("Limits"))
    with running(server) as live:
        ids = [await upload(http, live, name, data, mime) for name, (data, mime) in files.items()]
        events = await stream_events(http, live.url, attaching(create_thread("Hi"), *ids))
        no_errors(events)
        found = await settled(pool, events[0].thread.id)
        await healthy(http, live)

    assert found["huge.docx"]["status"] == "failed"
    assert found["huge.docx"]["note"] == "huge.docx: reading it needs more than 128 MiB."
    assert found["endless.pdf"]["status"] == "failed"
    assert found["endless.pdf"]["note"] in {
        "endless.pdf: reading it took longer than 2 seconds.",
        "endless.pdf: reading it took more than 2 seconds of CPU.",
    }
    assert (found["fine.md"]["status"], found["fine.md"]["note"]) == ("ready", None)


# -- searching while reading; deleting -----------------------------------------------------


async def test_a_second_turn_searches_a_document_still_being_read_and_deleting_stops_it(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient,
    pool: AsyncConnectionPool, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, "workbench.documents")
    pages = 8_000  # seconds of reading; the test needs it to last a moment only
    server = scripted_server(
        database_url, tmp_path / "data", scripted_openai,
        documents_search_wait=0.5, documents_max_pages=pages,
    )  # fmt: skip
    book = documents.long_pdf(pages, "The lighthouse keeper counts the ships every evening. " * 20)
    scripted_openai.script(responses_step([Text("Got it.")]), title_step("Book"))
    with running(server) as live:
        attachment = await upload(http, live, "book.pdf", book, documents.PDF)
        events = await stream_events(http, live.url, attaching(create_thread("Read"), attachment))
        no_errors(events)
        thread_id = events[0].thread.id

        async def partly_read() -> dict[str, Any] | None:
            document = (await thread_documents(pool, thread_id))["book.pdf"]
            return document if document["status"] == "reading" and document["chunks"] else None

        await until(partly_read)
        scripted_openai.script(
            responses_step([search_call("c1", "lighthouse keeper")]),
            responses_step([Text("It is about a keeper [1].")]),
        )
        second = await stream_events(http, live.url, add_message(thread_id, "What is it?"))
        no_errors(second)
        given = outputs(scripted_openai.streamed[-1])["c1"]
        reading = reading_tasks(await list_items(http, live.url, thread_id))
        document = (await thread_documents(pool, thread_id))["book.pdf"]
        assert document["status"] == "reading", (
            "the book was read before the search: make it longer"
        )

        delete = {"type": "threads.delete", "params": {"thread_id": thread_id}}
        assert (await http.post(live.url, json=delete)).status_code == 200
        scratch = live.settings.data_dir / "tmp"

        async def let_go() -> bool | None:
            return True if not any(scratch.iterdir()) else None

        await until(let_go)  # the reader dropped its copy

    [note] = [line for line in given.splitlines() if line.startswith("Note: ")]
    so_far = int(note.split("pages 1–")[1].split(" ")[0])
    assert 0 < so_far < pages
    assert note == (
        f"Note: book.pdf is still being read; pages 1–{so_far} of {pages} can be searched so far. "
        "Search again later for the rest."
    )
    assert "[1] book.pdf, page 1\nThe lighthouse keeper counts the ships" in given
    assert await thread_documents(pool, thread_id) == {}
    assert await query(pool, "SELECT 1 FROM document_chunks WHERE thread_id = %s", thread_id) == []
    assert reader_errors(caplog) == []
    assert any("was deleted while being read" in r.getMessage() for r in caplog.records)
    # While the search waited, its task showed how far the reading was.
    progress = {
        e.update.task.title
        for e in second
        if e.type == "thread.item.updated" and hasattr(e.update, "task")
    }
    assert any(title.startswith("Reading book.pdf — page ") for title in progress), progress
    # The first turn ended long before the book: its task says reading goes on.
    [task] = reading.values()
    assert task.title.startswith("Reading book.pdf")
    assert task.title.endswith("(continues in the background)")
    assert task.status_indicator == "none"


# -- the same bytes once; many at once -------------------------------------------------------


async def test_the_same_bytes_are_read_once_until_the_first_copy_is_deleted(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient,
    pool: AsyncConnectionPool,
) -> None:  # fmt: skip
    data = documents.docx([("Tides", "The tide turns twice a day at the harbour.")])
    first = await upload(http, provider, "tides.docx", data, documents.DOCX)
    scripted_openai.script(responses_step([Text("Ok.")]), title_step("Tides"))
    events = await stream_events(http, provider.url, attaching(create_thread("One"), first))
    thread_id = events[0].thread.id
    original = (await settled(pool, thread_id))["tides.docx"]

    again = await upload(http, provider, "tides again.docx", data, documents.DOCX)
    scripted_openai.script(
        responses_step([search_call("c1", "tide harbour")]), responses_step([Text("Twice [1].")])
    )
    turn = attaching(add_message(thread_id, "And again"), again)
    no_errors(await stream_events(http, provider.url, turn))

    found = await settled(pool, thread_id)
    copy = found["tides again.docx"]
    assert (copy["status"], copy["same_as"], copy["chunks"]) == ("duplicate", original["id"], 0)
    assert await chunks_of(pool, copy["id"]) == []
    given = outputs(scripted_openai.streamed[-1])["c1"]
    assert given.count("The tide turns twice a day") == 1
    tasks = reading_tasks(await list_items(http, provider.url, thread_id))
    assert tasks["tides again.docx is already among the documents"].status_indicator == "complete"

    # Deleting the first upload takes its document and chunks; the copy is then read itself.
    delete = {"type": "attachments.delete", "params": {"attachment_id": first}}
    assert (await http.post(provider.url, json=delete)).status_code == 200
    assert await chunks_of(pool, original["id"]) == []

    async def read_itself() -> dict[str, Any] | None:
        found = await thread_documents(pool, thread_id)
        return found if found["tides again.docx"]["status"] == "ready" else None

    assert list(await until(read_itself)) == ["tides again.docx"]
    [chunk] = await chunks_of(pool, copy["id"])
    assert chunk["body"] == "The tide turns twice a day at the harbour."


async def test_ten_documents_at_once_are_each_read_exactly_once_by_two_servers(
    settings: Settings, http: httpx.AsyncClient, pool: AsyncConnectionPool,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    shared = settings.model_copy(update={"documents_workers": 3})
    texts = [f"Report {n}: the river {n} floods in spring {n} times." * 40 for n in range(9)]
    files = {
        f"report{n}.md": documents.markdown([("Rivers", text)]) for n, text in enumerate(texts)
    }
    files["same as report0.md"] = files["report0.md"]
    # Two servers on one database and one data directory: their readers compete for each
    # document, as two processes of one deployment do.
    with running(LiveServer(shared)) as live, running(LiveServer(shared)):
        ids = await asyncio.gather(*(
            upload(http, live, name, data, documents.MARKDOWN) for name, data in files.items()
        ))  # fmt: skip
        events = await stream_events(http, live.url, attaching(create_thread("All"), *ids))
        no_errors(events)
        found = await settled(pool, events[0].thread.id)

    statuses = {name: d["status"] for name, d in found.items()}
    copies = sorted(
        name for name in ("report0.md", "same as report0.md") if statuses[name] == "duplicate"
    )
    assert len(copies) == 1, statuses
    assert {n: s for n, s in statuses.items() if n not in copies} == dict.fromkeys(
        [n for n in files if n not in copies], "ready"
    )
    for name, document in found.items():
        if name in copies:
            continue
        rows = await chunks_of(pool, document["id"])
        assert [r["seq"] for r in rows] == list(range(document["chunks"])) != []
        assert len({r["body"] for r in rows}) == len(rows)  # nothing indexed twice
    assert reader_errors(caplog) == []


# -- a reader that died ---------------------------------------------------------------------


async def test_a_document_whose_reader_died_is_read_again_from_the_start(
    settings: Settings, http: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    data = documents.markdown([("Owls", "The barn owl hunts at dusk over the meadow.")])
    with running(LiveServer(settings)) as live:
        events = await stream_events(http, live.url, create_thread("Hello"))
        thread_id = events[0].thread.id
        attachment = await upload(http, live, "owls.md", data, documents.MARKDOWN)
    # With no server running, the state a reader leaves when it dies mid-document: the
    # document claimed, a first chunk indexed, the lease run out.
    library = DocumentLibrary(pool)
    owner = settings.local_user
    document_id = await library.add_attachment(
        owner, thread_id, attachment, "owls.md", documents.MARKDOWN, "markdown"
    )
    assert document_id is not None
    await query(
        pool,
        "UPDATE documents SET status = 'reading', lease_until = now() - interval '1 second', "
        "lease_token = 'dead reader' WHERE id = %s RETURNING 1",
        document_id,
    )
    claimed = Claimed(
        document_id, owner, thread_id, "owls.md", "markdown", attachment, None, "dead reader"
    )
    assert await library.add_chunks(claimed, "simple", 0, [Chunk("half-read", 1, None)], 1)
    await query(
        pool, "UPDATE documents SET lease_until = now() - interval '1 second' WHERE id = %s "
        "RETURNING 1", document_id,
    )  # fmt: skip

    with running(LiveServer(settings)):  # a new process: its reader takes the document over
        found = await settled(pool, thread_id)

    assert (found["owls.md"]["status"], found["owls.md"]["chunks"]) == ("ready", 1)
    [chunk] = await chunks_of(pool, document_id)
    assert (chunk["seq"], chunk["body"]) == (0, "The barn owl hunts at dusk over the meadow.")


async def test_a_search_before_any_page_is_indexed_says_nothing_is_searchable_yet(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient,
    pool: AsyncConnectionPool,
) -> None:  # fmt: skip
    settings = provider_settings(
        database_url, tmp_path / "data", scripted_openai, documents_search_wait=0
    )
    scripted_openai.script(responses_step([Text("Hi.")]), title_step("Owls"))
    with running(LiveServer(settings)) as live:
        thread_id = (await stream_events(http, live.url, create_thread("Hello")))[0].thread.id
        attachment = await upload(http, live, "owls.pdf", documents.pdf([(None, "Owls.")]),
                                  documents.PDF)  # fmt: skip
    # A reader (of another process, alive: its lease runs) has opened the file, 80 pages,
    # and indexed nothing yet.
    document_id = await DocumentLibrary(pool).add_attachment(
        settings.local_user, thread_id, attachment, "owls.pdf", documents.PDF, "pdf"
    )
    await query(
        pool,
        "UPDATE documents SET status = 'reading', pages = 80, pages_total = 80, "
        "lease_until = now() + interval '1 minute' WHERE id = %s RETURNING 1",
        document_id,
    )
    scripted_openai.script(
        responses_step([search_call("c1", "owls")]), responses_step([Text("Not yet.")])
    )
    with running(LiveServer(settings)) as live:
        no_errors(await stream_events(http, live.url, add_message(thread_id, "Owls?")))
        delete = {"type": "threads.delete", "params": {"thread_id": thread_id}}
        assert (await http.post(live.url, json=delete)).status_code == 200

    assert outputs(scripted_openai.streamed[-1])["c1"] == (
        "No passage matches “owls”. Try other words.\n"
        "Note: owls.pdf is still being read; none of it can be searched yet. "
        "Search again in a moment."
    )


async def test_bytes_that_failed_to_read_are_read_again_when_attached_again(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient,
    pool: AsyncConnectionPool,
) -> None:  # fmt: skip
    """A failure (a timeout under load, say) is not what the same bytes get next time."""
    broken = documents.corrupt_pdf()
    first = await upload(http, provider, "broken.pdf", broken, documents.PDF)
    scripted_openai.script(responses_step([Text("Ok.")]), title_step("Broken"))
    events = await stream_events(http, provider.url, attaching(create_thread("One"), first))
    thread_id = events[0].thread.id
    assert (await settled(pool, thread_id))["broken.pdf"]["status"] == "failed"

    again = await upload(http, provider, "broken again.pdf", broken, documents.PDF)
    scripted_openai.script(responses_step([Text("Ok.")]))
    no_errors(
        await stream_events(http, provider.url, attaching(add_message(thread_id, "Two"), again))
    )

    found = await settled(pool, thread_id)
    assert (found["broken again.pdf"]["status"], found["broken again.pdf"]["same_as"]) == (
        "failed", None,
    )  # fmt: skip
