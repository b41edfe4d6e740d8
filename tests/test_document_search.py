"""Document search over HTTP: real files of every format are read into Postgres with their
pages and headings, ``search_files`` ranks the passage that answers first, never returns
another user's or another thread's documents, and ``[n]`` in the answer become file sources.

The helpers here (uploading, waiting for the reader, reading the index) serve
``test_document_reading`` too.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chatkit.types import AssistantMessageItem, CustomTask, FileSource, SearchTask, ThreadItem
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from tests import documents
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
    workflow_tasks,
)
from workbench.agent.response_events import FunctionCall, Text
from workbench.context import RequestContext

READ_WITHIN = 30.0  # seconds a test waits for its documents to be read


# -- driving the server -------------------------------------------------------------------


async def upload(
    http: httpx.AsyncClient, live: LiveServer, name: str, data: bytes, mime_type: str,
    user: str | None = None,
) -> str:  # fmt: skip
    """Upload a file directly (``POST /files/upload``); the attachment's id."""
    headers = {"X-Forwarded-User": user} if user else {}
    response = await http.post(
        live.base + "/files/upload", files={"file": (name, data, mime_type)}, headers=headers
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def attaching(body: dict[str, Any], *attachment_ids: str) -> dict[str, Any]:
    body["params"]["input"]["attachments"] = list(attachment_ids)
    return body


def no_errors(events: list[Any]) -> None:
    assert [e for e in events if e.type == "error"] == []


async def settled(
    pool: AsyncConnectionPool, thread_id: str, within: float = READ_WITHIN
) -> dict[str, dict[str, Any]]:
    """The thread's documents by name, once none is queued or being read."""
    deadline = time.monotonic() + within
    while True:
        found = await thread_documents(pool, thread_id)
        if all(d["status"] not in {"queued", "reading"} for d in found.values()):
            return found
        assert time.monotonic() < deadline, f"still reading after {within:g} s: {found}"
        await _pause()


async def thread_documents(pool: AsyncConnectionPool, thread_id: str) -> dict[str, dict[str, Any]]:
    rows = await query(
        pool,
        "SELECT id, name, owner, status, pages, pages_total, pages_done, chunks, "
        "language::text AS language, note, same_as, sha256 FROM documents "
        "WHERE thread_id = %s ORDER BY created_at, id",
        thread_id,
    )
    return {row["name"]: row for row in rows}


async def chunks_of(pool: AsyncConnectionPool, document_id: str) -> list[dict[str, Any]]:
    return await query(
        pool,
        "SELECT seq, owner, thread_id, page, heading, body, language::text AS language "
        "FROM document_chunks WHERE document_id = %s ORDER BY seq",
        document_id,
    )


async def query(pool: AsyncConnectionPool, sql: str, *params: Any) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(sql, params)
        return await cursor.fetchall()


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.05)


def search_call(call_id: str, query: str, file: str | None = None) -> FunctionCall:
    arguments: dict[str, str] = {"query": query}
    if file is not None:
        arguments["file"] = file
    return FunctionCall("search_files", json.dumps(arguments), call_id=call_id)


def outputs(body: dict[str, Any]) -> dict[str, str]:
    """What the model was given back from each tool call in this request, by call id."""
    return {
        str(entry["call_id"]): str(entry["output"])
        for entry in body["input"]
        if entry.get("type") == "function_call_output"
    }


def messages(items: list[ThreadItem]) -> list[AssistantMessageItem]:
    return [item for item in items if isinstance(item, AssistantMessageItem)]


def file_sources(message: AssistantMessageItem) -> list[tuple[FileSource, int | None]]:
    return [
        (a.source, a.index)
        for part in message.content
        for a in part.annotations
        if isinstance(a.source, FileSource)
    ]


def reading_tasks(items: list[ThreadItem]) -> dict[str, CustomTask]:
    """The reading tasks of a thread, by their final title."""
    return {t.title or "": t for t in workflow_tasks(items) if isinstance(t, CustomTask)}


@pytest.fixture
def users(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI
) -> Iterator[LiveServer]:
    """A scripted-model server that takes the user from a header, for tests of scoping."""
    settings = provider_settings(database_url, tmp_path / "data", scripted_openai, auth="header")
    with running(LiveServer(settings)) as live:
        yield live


@pytest.fixture
async def as_alice(alice: RequestContext) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, headers={"X-Forwarded-User": alice.user_id}) as c:
        yield c


@pytest.fixture
async def as_bob(bob: RequestContext) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, headers={"X-Forwarded-User": bob.user_id}) as c:
        yield c


# -- ingestion ------------------------------------------------------------------------------

REPORT = documents.pdf([
    ("Introduction", "This report covers the orchard of the northern valley."),
    (None, "The apple harvest continued on the second page, with pears besides."),
    ("Finances", "The budget grows by four percent every year, says the treasurer."),
])  # fmt: skip


async def test_every_format_is_read_with_its_pages_and_headings(
    live: LiveServer, http: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    files = {
        "report.pdf": (REPORT, documents.PDF),
        "memo.docx": (documents.docx(
            [("Summary", "The memo summarises the quarter."), ("Staff", "Nine people joined.")],
            table=[["Team", "Head"], ["Design", "Ingrid"]],
        ), documents.DOCX),
        "deck.pptx": (documents.pptx(
            [("Roadmap", "Launch in spring."), ("Risks", "Suppliers may be late.")]
        ), documents.PPTX),
        "book.xlsx": (documents.xlsx({
            "Sales": [["Region", "Total"], ["North", 120], ["South", 80]],
            "Costs": [["Item", "Euros"], ["Rent", 900]],
        }), documents.XLSX),
        "cities.csv": (documents.csv_file(
            [["City", "Population"], *[[f"Town{n}", n] for n in range(45)]]
        ), documents.CSV),
        "guide.md": (documents.markdown(
            [("Install", "Run the installer twice."), ("Usage", "Open the lid first.")]
        ), documents.MARKDOWN),
        "page.html": (documents.html(
            "Handbook", [("Safety", "Wear gloves in the workshop.")]
        ), documents.HTML),
        # The upload refuses text with NUL in its first 8 KiB, not in the rest.
        "nul.txt": (("Filler words. " * 700 + "\n\nBefore\x00after the null.").encode(),
                    documents.TEXT),
    }  # fmt: skip
    ids = [await upload(http, live, name, data, mime) for name, (data, mime) in files.items()]

    # A search waits for the documents being read: the turn ends with them all read.
    turn = attaching(create_thread("search: apple harvest"), *ids)
    events = await stream_events(http, live.url, turn)

    no_errors(events)
    thread_id = events[0].thread.id
    found = await settled(pool, thread_id)
    assert {n: (d["status"], d["note"]) for n, d in found.items()} == dict.fromkeys(
        files, ("ready", None)
    )
    located = {}
    for name, document in found.items():
        rows = await chunks_of(pool, document["id"])
        assert [r["seq"] for r in rows] == list(range(document["chunks"]))
        assert {(r["owner"], r["thread_id"]) for r in rows} == {("local", thread_id)}
        assert all("\x00" not in r["body"] for r in rows)
        located[name] = [(r["page"], r["heading"], r["body"]) for r in rows]

    assert (found["report.pdf"]["pages"], found["report.pdf"]["pages_done"]) == (3, 3)
    assert [(page, heading) for page, heading, _ in located["report.pdf"]] == [
        (1, "Introduction"), (2, "Introduction"), (3, "Finances"),
    ]  # fmt: skip
    assert "apple harvest" in located["report.pdf"][1][2]
    assert [(h, b) for _, h, b in located["memo.docx"]] == [
        ("Summary", "The memo summarises the quarter."),
        ("Staff", "Nine people joined.\nTeam | Head\nDesign | Ingrid"),
    ]
    assert located["deck.pptx"] == [
        (1, "Roadmap", "Launch in spring."), (2, "Risks", "Suppliers may be late."),
    ]  # fmt: skip
    assert located["book.xlsx"] == [
        (1, "Sales", "Region | Total\nNorth | 120\nSouth | 80"),
        (2, "Costs", "Item | Euros\nRent | 900"),
    ]
    # Long tables come in sections of rows, each headed by the table's header row.
    assert [b.split("\n")[0] for _, _, b in located["cities.csv"]] == ["City | Population"] * 2
    assert [(h, b) for _, h, b in located["guide.md"]] == [
        ("Install", "Run the installer twice."), ("Usage", "Open the lid first."),
    ]  # fmt: skip
    assert [(h, b) for _, h, b in located["page.html"]] == [
        ("Safety", "Wear gloves in the workshop.")
    ]
    assert located["nul.txt"][-1][2].endswith("Before\ufffdafter the null.")

    items = await list_items(http, live.url, thread_id)
    tasks = reading_tasks(items)
    assert set(tasks) == {f"Read {name}" for name in files}
    assert tasks["Read report.pdf"].content == "3 pages, 3 passages indexed."
    assert tasks["Read memo.docx"].content == "2 passages indexed."
    assert {task.status_indicator for task in tasks.values()} == {"complete"}
    [answer] = messages(items)
    assert "From report.pdf, page 2 — Introduction: The apple harvest" in answer.content[0].text


async def test_text_outside_paragraphs_and_plain_headings_is_read_too(
    live: LiveServer, http: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    web_page = (
        "<html><head><title>Saved page</title></head><body>"
        "<div class='intro'>Text in a <b>div</b>, as most pages have it.</div>"
        "<h2>Prices</h2><div>Before a paragraph.<p>Inside it.</p>After it.</div>"
        "<table><tr><th>Item</th><th>Price</th></tr><tr><td>Tea</td><td>3</td></tr></table>"
        "<!-- a comment --></body></html>"
    )
    files = {
        "saved.html": (web_page.encode(), documents.HTML),
        "setext.md": (b"Title\n=====\n\nUnder the title.\n\nPart\n----\n\nUnder the part.\n",
                      documents.MARKDOWN),
        "blob.csv": (documents.csv_file([["id", "payload"], [1, "x" * 200_000], [2, "small"]]),
                     documents.CSV),
        "table.pptx": (documents.pptx_with_table(
            "Uptime", [["Metric", "Value"], ["Uptime", "99.9"]], "A grouped note."
        ), documents.PPTX),
    }  # fmt: skip
    ids = [await upload(http, live, name, data, mime) for name, (data, mime) in files.items()]
    events = await stream_events(http, live.url, attaching(create_thread("Files"), *ids))
    no_errors(events)
    found = await settled(pool, events[0].thread.id)
    assert {n: (d["status"], d["note"]) for n, d in found.items()} == dict.fromkeys(
        files, ("ready", None)
    )
    located = {
        name: [(r["heading"], r["body"]) for r in await chunks_of(pool, document["id"])]
        for name, document in found.items()
    }

    assert located["saved.html"] == [
        ("Saved page", "Text in a div, as most pages have it."),
        ("Prices", "Before a paragraph.\nInside it.\nAfter it.\nItem | Price\nTea | 3"),
    ]
    assert located["setext.md"] == [("Title", "Under the title."), ("Part", "Under the part.")]
    # A cell longer than the csv module's default field limit (128 KiB) is read, in chunks.
    assert "".join(body for _, body in located["blob.csv"]).count("x") == 200_000
    assert located["table.pptx"] == [("Uptime", "Metric | Value\nUptime | 99.9\nA grouped note.")]


async def test_documents_in_english_and_german_are_searched_by_their_stems(
    live: LiveServer, http: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    english = documents.markdown([("Garden", (
        "The old oak tree in the garden grows a little taller every single summer, "
        "and the children measure it with a long wooden stick."
    ))])  # fmt: skip
    german = documents.markdown([("Verträge", (
        "Die Verträge mit den Lieferanten wurden im März unterschrieben, und die neuen "
        "Häuser am Fluss werden im Herbst an die Familien übergeben."
    ))])  # fmt: skip
    ids = [
        await upload(http, live, "garden.md", english, documents.MARKDOWN),
        await upload(http, live, "vertrag.md", german, documents.MARKDOWN),
    ]
    events = await stream_events(http, live.url, attaching(create_thread("Files"), *ids))
    thread_id = events[0].thread.id
    found = await settled(pool, thread_id)
    assert {n: d["language"] for n, d in found.items()} == {
        "garden.md": "english", "vertrag.md": "german",
    }  # fmt: skip

    for query, where in [("growing", "garden.md"), ("Vertrag Haus", "vertrag.md")]:
        events = await stream_events(http, live.url, add_message(thread_id, f"search: {query}"))
        no_errors(events)
        [answer] = messages([e.item for e in events if e.type == "thread.item.done"])
        assert answer.content[0].text.startswith(
            f"[Demo model — no model provider is configured] From {where}"
        )


# -- ranking, snippets, the file filter ----------------------------------------------------

ORCHARD = documents.pdf([
    ("Growing", "Apples are grown across the valley, and many farmers plant apple trees."),
    ("Harvest", "The apple harvest starts in late September, when the fruit is ripe."),
    ("Festivals", "Harvest festivals happen in many villages, with music and dancing."),
])  # fmt: skip
NOTES = documents.markdown([("Shopping", "Buy an apple and some bread on the way home.")])


async def test_the_passage_that_answers_comes_first_with_its_snippet(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient,
    pool: AsyncConnectionPool,
) -> None:  # fmt: skip
    ids = [
        await upload(http, provider, "orchard.pdf", ORCHARD, documents.PDF),
        await upload(http, provider, "notes.md", NOTES, documents.MARKDOWN),
    ]
    scripted_openai.script(
        responses_step([search_call("c_all", "when does the apple harvest start")]),
        responses_step([
            search_call("c_one", "apple", file="notes.md"),
            search_call("c_none", "apple", file="missing.pdf"),
        ]),
        responses_step([Text("It starts in late September [1].")]),
        title_step("Harvest"),
    )  # fmt: skip

    events = await stream_events(http, provider.url, attaching(create_thread("When?"), *ids))

    no_errors(events)
    given = outputs(scripted_openai.streamed[2])
    every = given["c_all"]
    assert every.index("[1] orchard.pdf, page 2 — Harvest\n") < every.index("[2] ")
    assert "The apple harvest starts in late September" in every.split("[2] ")[0]
    # Passages with only some of the words follow those with all of them.
    entries = [line for line in every.splitlines() if line.startswith("[")]
    assert {line.split(" — ")[0].split("] ", 1)[1] for line in entries} == {
        "orchard.pdf, page 1", "orchard.pdf, page 2", "orchard.pdf, page 3", "notes.md",
    }  # fmt: skip
    # file= searches that document only, and the numbers run on from the first search.
    one = given["c_one"]
    assert (
        f"[{len(entries) + 1}] notes.md — Shopping\nBuy an apple and some bread on the way home."
        in one
    )
    assert "orchard.pdf" not in one
    assert given["c_none"] == (
        "No document is named 'missing.pdf'. The documents are: notes.md, orchard.pdf."
    )
    items = await list_items(http, provider.url, events[0].thread.id)
    [answer] = messages(items)
    [(source, index)] = file_sources(answer)
    assert (source.filename, source.title) == ("orchard.pdf", "orchard.pdf, page 2")
    assert source.description is not None
    assert "**apple** **harvest** **starts**" in source.description
    assert index == len("It starts in late September")
    tasks = [t for t in workflow_tasks(items) if isinstance(t, SearchTask)]
    assert [(t.title, t.queries) for t in tasks] == [
        ("Searched documents for “when does the apple harvest start”",
         ["when does the apple harvest start"]),
        ("Searched documents for “apple”", ["apple"]),
        ("No document named “missing.pdf”", []),
    ]  # fmt: skip
    assert [s.title for s in tasks[0].sources] == ["orchard.pdf", "notes.md"]
    assert all(s.url.startswith(provider.base + "/files/") for s in tasks[0].sources)
    assert {t.status_indicator for t in tasks} == {"complete"}


# -- scoping: another user's, another thread's documents ---------------------------------


async def test_another_users_and_another_threads_documents_are_never_returned(
    users: LiveServer, scripted_openai: ScriptedOpenAI, as_alice: httpx.AsyncClient,
    as_bob: httpx.AsyncClient, alice: RequestContext, bob: RequestContext,
    pool: AsyncConnectionPool,
) -> None:  # fmt: skip
    async def thread_with(client: httpx.AsyncClient, user: str, name: str, text: str) -> str:
        data = documents.markdown([("Zebras", text)])
        attachment = await upload(client, users, name, data, documents.MARKDOWN, user)
        scripted_openai.script(responses_step([Text("Noted.")]), title_step("Zebras"))
        events = await stream_events(
            client, users.url, attaching(create_thread("Keep"), attachment)
        )
        no_errors(events)
        return str(events[0].thread.id)

    mine = await thread_with(as_alice, alice.user_id, "mine.md", "A zebra crossed the road.")
    other = await thread_with(
        as_alice, alice.user_id, "other.md", "Zebra zebra zebra: the zebra herd, zebra facts."
    )
    bobs = await thread_with(as_bob, bob.user_id, "bobs.md", "The zebra of Bob: zebra stripes.")
    for thread_id in (mine, other, bobs):
        assert {d["status"] for d in (await settled(pool, thread_id)).values()} == {"ready"}

    scripted_openai.script(
        responses_step([search_call("c1", "zebra")]),
        responses_step([search_call("c2", "zebra", file="other.md"),
                        search_call("c3", "zebra", file="bobs.md")]),
        responses_step([Text("One zebra [1].")]),
    )  # fmt: skip
    events = await stream_events(as_alice, users.url, add_message(mine, "Zebras?"))

    no_errors(events)
    given = outputs(scripted_openai.streamed[-1])
    assert given["c1"].endswith("\n\n[1] mine.md — Zebras\nA zebra crossed the road.")
    assert given["c1"].count("\n[") == 1
    assert given["c2"] == "No document is named 'other.md'. The documents are: mine.md."
    assert given["c3"] == "No document is named 'bobs.md'. The documents are: mine.md."
    # Bob's own search sees his document only.
    scripted_openai.script(
        responses_step([search_call("b1", "zebra")]), responses_step([Text("Ok")])
    )
    no_errors(await stream_events(as_bob, users.url, add_message(bobs, "Zebras?")))
    [only] = outputs(scripted_openai.streamed[-1]).values()
    assert "bobs.md" in only
    assert "mine.md" not in only and "other.md" not in only


# -- citations ----------------------------------------------------------------------------

LIGHTHOUSES = documents.markdown([
    ("North", "The north lighthouse was built of granite in 1850."),
    ("South", "The south lighthouse burns oil and guides the fishing boats."),
    ("West", "The west lighthouse keeper writes a logbook every night."),
])  # fmt: skip


async def test_a_cited_passage_becomes_a_file_source_and_the_transcript_keeps_the_text(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    attachment = await upload(http, provider, "lights.md", LIGHTHOUSES, documents.MARKDOWN)
    answer = "Oil lights one of them [2]; see also [9]."
    scripted_openai.script(
        responses_step([search_call("c1", "lighthouse")]),
        responses_step([Text(answer)]),
        title_step("Lights"),
    )
    events = await stream_events(http, provider.url, attaching(create_thread("?"), attachment))
    no_errors(events)
    thread_id = events[0].thread.id

    given = outputs(scripted_openai.streamed[1])["c1"]
    assert [line for line in given.splitlines() if line.startswith("[")] == [
        "[1] lights.md — North", "[2] lights.md — South", "[3] lights.md — West",
    ]  # fmt: skip
    [message] = messages(await list_items(http, provider.url, thread_id))
    assert message.content[0].text == "Oil lights one of them; see also [9]."
    [(source, index)] = file_sources(message)
    assert (source.filename, source.title) == ("lights.md", "lights.md")
    assert source.description == "south **lighthouse** burns oil and guides the fishing boats"
    assert index == len("Oil lights one of them")
    [done] = [e.item for e in events if e.type == "thread.item.done" and e.item.id == message.id]
    assert done == message

    scripted_openai.script(responses_step([Text("Nothing new.")]))
    no_errors(await stream_events(http, provider.url, add_message(thread_id, "And?")))
    replayed = [
        part["text"]
        for entry in scripted_openai.streamed[-1]["input"]
        if entry.get("role") == "assistant"
        for part in (entry["content"] if isinstance(entry["content"], list) else [])
    ] + [
        entry["content"]
        for entry in scripted_openai.streamed[-1]["input"]
        if entry.get("role") == "assistant" and isinstance(entry["content"], str)
    ]
    assert answer in replayed


async def test_the_demo_model_answers_with_the_top_passage_and_cites_it(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    attachment = await upload(http, live, "lights.md", LIGHTHOUSES, documents.MARKDOWN)
    turn = attaching(create_thread("search: lighthouse keeper logbook"), attachment)

    events = await stream_events(http, live.url, turn)

    no_errors(events)
    items = await list_items(http, live.url, events[0].thread.id)
    [task] = [t for t in workflow_tasks(items) if isinstance(t, SearchTask)]
    assert task.queries == ["lighthouse keeper logbook"]  # not the attachment's note after it
    [message] = messages(items)
    text = message.content[0].text
    assert text.endswith(
        "From lights.md — West: The west lighthouse keeper writes a logbook every night."
    )
    [(source, index)] = file_sources(message)
    assert (source.filename, index) == ("lights.md", len(text))
    assert source.description is not None and "**keeper**" in source.description


async def test_queries_with_odd_characters_get_answers_not_errors(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    attachment = await upload(http, provider, "lights.md", LIGHTHOUSES, documents.MARKDOWN)
    queries = {
        "nul": "west\x00 lighthouse",
        "empty": "   ",
        "symbols": "!!! & | <-> :* ()",
        "long": "lighthouse " * 2000,
    }
    scripted_openai.script(
        responses_step(
            [
                *(search_call(name, text) for name, text in queries.items()),
                search_call("nul_file", "west", file="lights\x00.md"),
            ]
        ),
        responses_step([Text("Done.")]),
        title_step("Odd"),
    )
    events = await stream_events(http, provider.url, attaching(create_thread("?"), attachment))

    no_errors(events)
    given = outputs(scripted_openai.streamed[1])
    assert "lights.md — West" in given["nul"]
    assert (
        given["empty"]
        == "The search query was empty: call search_files with the words to look for."
    )
    assert given["symbols"].startswith("No passage matches “!!! & | <-> :* ()”.")
    assert given["long"].count("\n[") == 3
    assert given["nul_file"].startswith("No document is named 'lights\ufffd.md'.")
    assert (
        messages(await list_items(http, provider.url, events[0].thread.id))[-1].content[0].text
        == "Done."
    )
