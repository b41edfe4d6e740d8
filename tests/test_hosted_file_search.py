"""Hosted document search (``WORKBENCH_FILE_SEARCH=openai``) through the real ``openai``
client, against a scripted Responses API and in-memory Files and Vector Stores endpoints:
the mirror a thread's documents get at OpenAI, the search and its citations, and that nothing
is left behind at OpenAI when a thread or an attachment goes, even while OpenAI is down."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from chatkit.types import (
    AssistantMessageItem,
    CustomTask,
    FileSource,
    SearchTask,
    ThreadStreamEvent,
)
from fpdf import FPDF
from psycopg_pool import AsyncConnectionPool

from tests.live import (
    LiveServer,
    ScriptedOpenAI,
    add_message,
    create_thread,
    list_items,
    provider_settings,
    responses_step,
    running,
    started,
    stream_events,
    title_step,
    workflow_tasks,
)
from tests.openai_files import OpenAIFiles
from tests.test_cancellation import eventually, read_until
from workbench.agent.response_events import FileSearch, Text
from workbench.config import Settings
from workbench.tools.file_search import RESULTS_INCLUDE

ANSWER = "Revenue grew 12% in the third quarter."


def report_pdf(text: str = "Q3 report. Revenue grew 12% in the third quarter.") -> bytes:
    pdf = FPDF()
    pdf.set_creation_date(datetime(2026, 1, 1, tzinfo=UTC))  # the same bytes every time
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.multi_cell(0, 10, text)
    return bytes(pdf.output())


@pytest.fixture
def openai_files() -> OpenAIFiles:
    return OpenAIFiles()


@pytest.fixture
def scripted(openai_files: OpenAIFiles) -> Iterator[ScriptedOpenAI]:
    yield from started(ScriptedOpenAI(routes=openai_files.routes()))


def hosted_server(
    database_url: str, data_dir: Path, scripted: ScriptedOpenAI, **overrides: Any
) -> LiveServer:
    settings = provider_settings(
        database_url, data_dir, scripted, file_search="openai", openai_delete_retry=0.2,
        openai_web_search=False, openai_image_generation=False, **overrides,
    )  # fmt: skip
    return LiveServer(settings)


@pytest.fixture
def hosted(database_url: str, tmp_path: Path, scripted: ScriptedOpenAI) -> Iterator[LiveServer]:
    with running(hosted_server(database_url, tmp_path / "data", scripted)) as live:
        yield live


async def upload(http: httpx.AsyncClient, live: LiveServer, name: str, data: bytes,
                 mime_type: str) -> str:  # fmt: skip
    response = await http.post(live.base + "/files/upload",
                               files={"file": (name, data, mime_type)})  # fmt: skip
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def attaching(body: dict[str, Any], *attachment_ids: str) -> dict[str, Any]:
    body["params"]["input"]["attachments"] = list(attachment_ids)
    return body


async def start_with_report(
    http: httpx.AsyncClient, live: LiveServer, scripted: ScriptedOpenAI, *others: str
) -> tuple[str, list[ThreadStreamEvent]]:
    """A thread whose first message attaches report.pdf (and ``others``): the thread's id and
    the events of that first turn."""
    report = await upload(http, live, "report.pdf", report_pdf(), "application/pdf")
    scripted.script(responses_step([Text("I have the report.")]), title_step("Q3"))
    body = attaching(create_thread("Here is the Q3 report."), report, *others)
    events = await stream_events(http, live.url, body)
    assert [e for e in events if e.type == "error"] == []
    return events[0].thread.id, events


def indexing_states(events: list[Any]) -> list[tuple[str | None, str]]:
    """Every state of the indexing tasks the client was sent, in order."""
    tasks = []
    for event in events:
        if event.type == "thread.item.added":
            tasks += [t for t in workflow_tasks([event.item]) if isinstance(t, CustomTask)]
        update = getattr(event, "update", None)
        if update is not None and update.type in {"workflow.task.added", "workflow.task.updated"}:
            tasks += [update.task] if isinstance(update.task, CustomTask) else []
    return [(task.title, task.status_indicator) for task in tasks]


def file_search_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [tool for tool in body.get("tools") or [] if tool["type"] == "file_search"]


async def owed(pool: AsyncConnectionPool) -> list[tuple[str, int, str | None]]:
    """The deletions owed to OpenAI: (id, attempts, why the last attempt failed)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            """
            SELECT id, attempts, delete_error FROM openai_vector_stores WHERE thread_id IS NULL
            UNION ALL
            SELECT id, attempts, delete_error FROM openai_files WHERE attachment_id IS NULL
            """
        )
        return [(str(r[0]), int(r[1]), r[2]) for r in await cursor.fetchall()]


async def test_the_first_document_creates_the_store_and_a_search_cites_it(
    hosted: LiveServer, scripted: ScriptedOpenAI, openai_files: OpenAIFiles,
    http: httpx.AsyncClient,
) -> None:  # fmt: skip
    thread_id, events = await start_with_report(http, hosted, scripted)

    [store_id] = openai_files.stores
    [created] = openai_files.created_stores
    assert created["expires_after"] == {"anchor": "last_active_at", "days": 7}
    [file_id] = openai_files.files
    assert openai_files.files[file_id]["filename"] == "report.pdf"
    assert openai_files.files[file_id]["purpose"] == "assistants"
    assert openai_files.contents[file_id] == report_pdf()
    assert openai_files.files_in(store_id) == [file_id]
    assert openai_files.attached[store_id][file_id]["status"] == "completed"

    # The task shows while OpenAI indexes, before the model is asked anything.
    assert indexing_states(events) == [
        ("Indexing report.pdf on OpenAI…", "loading"), ("Indexed report.pdf on OpenAI", "complete"),
    ]  # fmt: skip
    [first] = scripted.streamed
    assert file_search_tools(first) == [{"type": "file_search", "vector_store_ids": [store_id]}]
    assert RESULTS_INCLUDE in first["include"]
    assert "file_search" in first["instructions"]

    passage = {"file_id": file_id, "filename": "report.pdf", "score": 0.92, "text": ANSWER,
               "attributes": {}}  # fmt: skip
    foreign = {**passage, "file_id": "file-not-this-thread", "filename": "other.pdf"}
    cite = {"type": "file_citation", "file_id": file_id, "filename": "report.pdf",
            "index": len(ANSWER)}  # fmt: skip
    scripted.script(responses_step([
        FileSearch(["q3 revenue growth"], results=[passage, foreign, passage]),
        Text(ANSWER, annotations=[cite]),
    ]))  # fmt: skip
    events = await stream_events(http, hosted.url, add_message(thread_id, "How did revenue do?"))

    assert [e for e in events if e.type == "error"] == []
    saved = await list_items(http, hosted.url, thread_id)
    [search] = [t for t in workflow_tasks(saved) if isinstance(t, SearchTask)]
    assert (search.title, search.status_indicator) == ("Searched documents", "complete")
    assert (search.title_query, search.queries) == ("q3 revenue growth", ["q3 revenue growth"])
    [source] = search.sources
    assert source.title == "report.pdf"
    download = await http.get(source.url)
    assert (download.status_code, download.content) == (200, report_pdf())
    [message] = [item for item in saved if isinstance(item, AssistantMessageItem)][-1:]
    assert message.content[0].text == ANSWER
    [annotation] = message.content[0].annotations
    assert annotation.source == FileSource(filename="report.pdf", title="report.pdf")
    assert annotation.index == len(ANSWER)
    # Nothing sent twice: the second turn found the document indexed.
    assert len(openai_files.files) == 1 and len(openai_files.created_stores) == 1
    assert file_search_tools(scripted.streamed[-1])[0]["vector_store_ids"] == [store_id]


async def test_a_thread_without_documents_is_offered_no_file_search(
    hosted: LiveServer, scripted: ScriptedOpenAI, openai_files: OpenAIFiles,
    http: httpx.AsyncClient,
) -> None:  # fmt: skip
    scripted.script(responses_step([Text("Hello.")]), title_step("Hi"))
    await stream_events(http, hosted.url, create_thread("Hi"))

    [request] = scripted.streamed
    assert file_search_tools(request) == []
    assert RESULTS_INCLUDE not in (request.get("include") or [])
    assert "file_search" not in request["instructions"]
    assert openai_files.created_stores == []


async def test_a_document_openai_cannot_index_is_named_to_the_user_and_the_model(
    hosted: LiveServer, scripted: ScriptedOpenAI, openai_files: OpenAIFiles,
    http: httpx.AsyncClient,
) -> None:  # fmt: skip
    why = "Files with extension [.csv] are not supported for file search."
    openai_files.refused["sales.csv"] = why
    sales = await upload(http, hosted, "sales.csv", b"month,revenue\njuly,12\n", "text/csv")

    thread_id, events = await start_with_report(http, hosted, scripted, sales)

    states = indexing_states(events)
    assert ("Could not index sales.csv on OpenAI", "none") in states
    saved = await list_items(http, hosted.url, thread_id)
    [failed] = [
        t for t in workflow_tasks(saved) if t.title == "Could not index sales.csv on OpenAI"
    ]
    assert failed.content == why
    [request] = scripted.streamed
    assert f"sales.csv ({why})" in request["instructions"]
    [store_id] = openai_files.stores
    assert file_search_tools(request)[0]["vector_store_ids"] == [store_id]  # the report is

    # OpenAI's verdict stands: the next turn does not send the file again.
    scripted.script(responses_step([Text("Noted.")]))
    await stream_events(http, hosted.url, add_message(thread_id, "And the sales?"))
    assert len(openai_files.files) == 2
    assert f"sales.csv ({why})" in scripted.streamed[-1]["instructions"]


async def test_a_file_openai_rejects_outright_is_not_sent_again_on_later_turns(
    hosted: LiveServer, scripted: ScriptedOpenAI, openai_files: OpenAIFiles,
    http: httpx.AsyncClient,
) -> None:  # fmt: skip
    why = "Files with extensions [.csv] are not supported for file search."
    openai_files.rejected["sales.csv"] = why
    sales = await upload(http, hosted, "sales.csv", b"month,revenue\njuly,12\n", "text/csv")

    thread_id, events = await start_with_report(http, hosted, scripted, sales)

    assert ("Could not index sales.csv on OpenAI", "none") in indexing_states(events)
    attaches = openai_files.attach_requests
    scripted.script(responses_step([Text("Noted.")]))
    later = await stream_events(http, hosted.url, add_message(thread_id, "And the sales?"))
    assert openai_files.attach_requests == attaches
    assert not [s for s in indexing_states(later) if "sales.csv" in s[0]]
    assert "sales.csv (" in scripted.streamed[-1]["instructions"]


async def test_unreachable_openai_leaves_documents_unsearchable_and_the_next_turn_retries(
    hosted: LiveServer, scripted: ScriptedOpenAI, openai_files: OpenAIFiles,
    http: httpx.AsyncClient,
) -> None:  # fmt: skip
    openai_files.failing = "unreachable"
    thread_id, events = await start_with_report(http, hosted, scripted)

    assert indexing_states(events)[-1] == ("Could not index report.pdf on OpenAI", "none")
    saved = await list_items(http, hosted.url, thread_id)
    [task] = [t for t in workflow_tasks(saved) if isinstance(t, CustomTask)]
    assert task.content == "No vector store could be made: OpenAI could not be reached."
    [request] = scripted.streamed
    assert file_search_tools(request) == []
    assert "cannot be searched" in request["instructions"]
    assert "report.pdf (no vector store could be made" in request["instructions"]

    openai_files.failing = None
    scripted.script(responses_step([Text("Now I can search it.")]))
    events = await stream_events(http, hosted.url, add_message(thread_id, "Try again"))

    assert indexing_states(events)[-1] == ("Indexed report.pdf on OpenAI", "complete")
    [store_id] = openai_files.stores
    assert file_search_tools(scripted.streamed[-1])[0]["vector_store_ids"] == [store_id]
    assert "cannot be searched" not in scripted.streamed[-1]["instructions"]


async def test_an_error_status_from_openai_is_named_in_the_task(
    hosted: LiveServer, scripted: ScriptedOpenAI, openai_files: OpenAIFiles,
    http: httpx.AsyncClient,
) -> None:  # fmt: skip
    openai_files.failing = "error"
    thread_id, _ = await start_with_report(http, hosted, scripted)

    saved = await list_items(http, hosted.url, thread_id)
    [task] = [t for t in workflow_tasks(saved) if isinstance(t, CustomTask)]
    assert task.content == (
        "No vector store could be made: OpenAI answered 500: The server had an error."
    )


async def test_a_document_still_indexing_when_the_wait_ends_is_searched_once_ready(
    database_url: str, tmp_path: Path, scripted: ScriptedOpenAI, openai_files: OpenAIFiles,
    http: httpx.AsyncClient,
) -> None:  # fmt: skip
    openai_files.polls_to_index = 10_000
    server = hosted_server(database_url, tmp_path / "data", scripted, openai_indexing_wait=0.5)
    with running(server) as live:
        thread_id, events = await start_with_report(http, live, scripted)

        assert indexing_states(events)[-1] == (
            "report.pdf is still being indexed on OpenAI", "none"
        )  # fmt: skip
        [request] = scripted.streamed
        assert len(file_search_tools(request)) == 1  # what is indexed so far can be searched
        assert (
            "Still being indexed, so a search may miss them: report.pdf."
            in (request["instructions"])
        )

        openai_files.polls_to_index = 0
        scripted.script(responses_step([Text("Ready now.")]))
        events = await stream_events(http, live.url, add_message(thread_id, "Ready?"))

    assert indexing_states(events)[-1] == ("Indexed report.pdf on OpenAI", "complete")
    assert len(openai_files.files) == 1  # looked at again, not sent again
    assert "Still being indexed" not in scripted.streamed[-1]["instructions"]


async def test_a_document_over_the_size_limit_is_never_sent(
    database_url: str, tmp_path: Path, scripted: ScriptedOpenAI, openai_files: OpenAIFiles,
    http: httpx.AsyncClient,
) -> None:  # fmt: skip
    with running(hosted_server(database_url, tmp_path / "data", scripted,
                               documents_max_mb=1)) as live:  # fmt: skip
        big = await upload(http, live, "big.txt", b"word " * 300_000, "text/plain")
        thread_id, events = await start_with_report(http, live, scripted, big)
        saved = await list_items(http, live.url, thread_id)

    assert ("Could not index big.txt on OpenAI", "none") in indexing_states(events)
    [task] = [t for t in workflow_tasks(saved) if t.title == "Could not index big.txt on OpenAI"]
    assert task.content == "It is larger than 1 MB."
    assert [f["filename"] for f in openai_files.files.values()] == ["report.pdf"]
    assert "big.txt (it is larger than 1 MB)" in scripted.streamed[0]["instructions"]


async def test_a_stop_while_a_document_is_indexed_leaves_no_task_spinning_nor_file_unrecorded(
    database_url: str, tmp_path: Path, scripted: ScriptedOpenAI, openai_files: OpenAIFiles,
    http: httpx.AsyncClient, pool: AsyncConnectionPool,
) -> None:  # fmt: skip
    openai_files.polls_to_index = 10_000
    with running(hosted_server(database_url, tmp_path / "data", scripted,
                               openai_indexing_wait=30)) as live:  # fmt: skip
        report = await upload(http, live, "report.pdf", report_pdf(), "application/pdf")
        body = attaching(create_thread("Here is the Q3 report."), report)

        # The task reaches the client while the turn still waits for OpenAI.
        events = await read_until(
            http, live.url, body,
            lambda events: ("Indexing report.pdf on OpenAI…", "loading") in indexing_states(events),
        )  # fmt: skip
        thread_id = events[0].thread.id

        async def saved_stopped() -> bool:
            tasks = workflow_tasks(await list_items(http, live.url, thread_id))
            return [(t.title, t.status_indicator) for t in tasks] == [
                ("Indexing report.pdf on OpenAI stopped", "none")
            ]

        await eventually(saved_stopped)
        await eventually(lambda: len(openai_files.files) == 1)

    assert scripted.streamed == []  # the model was never asked
    [file_id] = openai_files.files
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT id FROM openai_files WHERE attachment_id = %s", (report,)
        )
        assert await cursor.fetchall() == [(file_id,)]


async def test_an_expired_store_is_rebuilt_on_the_next_turn(
    hosted: LiveServer, scripted: ScriptedOpenAI, openai_files: OpenAIFiles,
    http: httpx.AsyncClient, pool: AsyncConnectionPool,
) -> None:  # fmt: skip
    thread_id, _ = await start_with_report(http, hosted, scripted)
    [old_store] = openai_files.stores
    [file_id] = openai_files.files
    openai_files.expire(old_store)

    scripted.script(responses_step([Text("Still here.")]))
    events = await stream_events(http, hosted.url, add_message(thread_id, "Anything new?"))

    [new_store] = [s for s in openai_files.stores if s != old_store]
    assert openai_files.files_in(new_store) == [file_id]  # the same file, attached again
    assert len(openai_files.files) == 1
    assert indexing_states(events)[-1] == ("Indexed report.pdf on OpenAI", "complete")
    assert file_search_tools(scripted.streamed[-1])[0]["vector_store_ids"] == [new_store]
    assert [row[0] for row in await owed(pool)] == [old_store]

    # The expired store goes at OpenAI with the rest.
    response = await http.post(hosted.url, json={"type": "threads.delete",
                                                 "params": {"thread_id": thread_id}})  # fmt: skip
    assert response.status_code == 200
    await eventually(lambda: not openai_files.stores and not openai_files.files)


async def test_deleting_the_thread_deletes_its_files_and_store_at_openai(
    hosted: LiveServer, scripted: ScriptedOpenAI, openai_files: OpenAIFiles,
    http: httpx.AsyncClient, pool: AsyncConnectionPool,
) -> None:  # fmt: skip
    notes = await upload(http, hosted, "notes.md", b"# Notes\nRevenue grew.\n", "text/markdown")
    thread_id, _ = await start_with_report(http, hosted, scripted, notes)
    [store_id] = openai_files.stores
    assert len(openai_files.files_in(store_id)) == 2

    response = await http.post(hosted.url, json={"type": "threads.delete",
                                                 "params": {"thread_id": thread_id}})  # fmt: skip
    assert response.status_code == 200

    await eventually(lambda: not openai_files.stores and not openai_files.files)
    assert await owed(pool) == []


async def test_deleting_an_attachment_deletes_its_file_at_openai(
    hosted: LiveServer, scripted: ScriptedOpenAI, openai_files: OpenAIFiles,
    http: httpx.AsyncClient,
) -> None:  # fmt: skip
    notes = await upload(http, hosted, "notes.md", b"# Notes\nRevenue grew.\n", "text/markdown")
    await start_with_report(http, hosted, scripted, notes)
    [store_id] = openai_files.stores
    by_name = {f["filename"]: file_id for file_id, f in openai_files.files.items()}

    response = await http.post(hosted.url, json={"type": "attachments.delete",
                                                 "params": {"attachment_id": notes}})  # fmt: skip
    assert response.status_code == 200

    await eventually(lambda: by_name["notes.md"] not in openai_files.files)
    assert openai_files.files_in(store_id) == [by_name["report.pdf"]]
    assert list(openai_files.stores) == [store_id]


async def test_deletions_while_openai_is_unreachable_are_retried_until_done(
    hosted: LiveServer, scripted: ScriptedOpenAI, openai_files: OpenAIFiles,
    http: httpx.AsyncClient, pool: AsyncConnectionPool,
) -> None:  # fmt: skip
    thread_id, _ = await start_with_report(http, hosted, scripted)
    [store_id] = openai_files.stores
    [file_id] = openai_files.files
    openai_files.failing = "unreachable"

    response = await http.post(hosted.url, json={"type": "threads.delete",
                                                 "params": {"thread_id": thread_id}})  # fmt: skip
    assert response.status_code == 200

    async def tried_twice() -> bool:
        rows = await owed(pool)
        return len(rows) == 2 and all(attempts >= 2 for _, attempts, _ in rows)

    await eventually(tried_twice)
    rows = await owed(pool)
    assert {row[0] for row in rows} == {store_id, file_id}
    assert {row[2] for row in rows} == {"OpenAI could not be reached"}
    assert store_id in openai_files.stores and file_id in openai_files.files

    openai_files.failing = None
    await eventually(lambda: not openai_files.stores and not openai_files.files)
    assert await owed(pool) == []


@pytest.mark.parametrize("provider", [{}, {"chat_completions_base_url": "http://127.0.0.1:9/v1"}])
def test_hosted_search_needs_the_openai_provider(provider: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="WORKBENCH_FILE_SEARCH=openai needs the OpenAI provider"):
        Settings(_env_file=None, file_search="openai", **provider)  # type: ignore[arg-type]
