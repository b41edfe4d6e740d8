"""Ingestion over HTTP: real files of every format, attached to a message or added from the
workspace with ``add_to_search``, are read into Postgres chunks that keep their page and
heading, owner and thread, cleaned of U+0000, in the language they are written in."""

from __future__ import annotations

import json

import httpx
from psycopg_pool import AsyncConnectionPool

from tests import documents
from tests.document_steps import (
    attaching,
    chunks_of,
    messages,
    no_errors,
    outputs,
    reading_tasks,
    search_call,
    settled,
    upload,
)
from tests.live import (
    LiveServer,
    ScriptedOpenAI,
    add_message,
    create_thread,
    list_items,
    responses_step,
    stream_events,
    title_step,
)
from workbench.agent.response_events import FunctionCall, Text

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
    assert tasks["Read guide.md"].content == "2 passages indexed."
    assert tasks["Read page.html"].content == "1 passage indexed."
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


# -- workspace files ------------------------------------------------------------------------


async def test_add_to_search_reads_a_workspace_file_and_refuses_what_it_cannot(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient,
    pool: AsyncConnectionPool,
) -> None:  # fmt: skip
    scripted_openai.script(responses_step([Text("Hello.")]), title_step("Plan"))
    events = await stream_events(http, provider.url, create_thread("Start"))
    thread_id = events[0].thread.id
    workspace = provider.workbench.workspaces.ensure(provider.settings.local_user, thread_id)
    (workspace / "notes").mkdir()
    # No upload check stands between the kernel and the workspace: NUL can be anywhere.
    plan = "# Plan\n\nThe bridge\x00 opens on Monday at noon.\n"
    (workspace / "notes" / "plan.md").write_text(plan)
    (workspace / "link.md").symlink_to("notes/plan.md")
    (workspace / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    refused = {
        "link.md": "'link.md' is a symbolic link (to 'notes/plan.md'); the file tools never "
        "follow links. Use the path it points to if that is inside the workspace.",
        "missing.md": "No such file: 'missing.md'.",
        "picture.png": "'picture.png' is not a document search_files can read: PDF, DOCX, PPTX, "
        "XLSX, CSV, HTML, Markdown and text files can be added.",
        "../escape.md": "'../escape.md': '..' is not allowed; paths stay inside this "
        "conversation's workspace.",
    }
    scripted_openai.script(
        responses_step([
            FunctionCall("add_to_search", json.dumps({"path": path}), call_id=f"a{n}")
            for n, path in enumerate(["notes/plan.md", *refused])
        ]),
        responses_step([search_call("s1", "bridge opens")]),
        responses_step([Text("Monday [1].")]),
    )  # fmt: skip
    no_errors(await stream_events(http, provider.url, add_message(thread_id, "Add them")))
    # What the model adds is shown being read, as an attachment is.
    read = reading_tasks(await list_items(http, provider.url, thread_id))["Read plan.md"]
    assert read.status_indicator == "complete"

    added = outputs(scripted_openai.streamed[-2])
    assert added["a0"] == (
        "Added notes/plan.md to the documents: it is being read; search it with search_files."
    )
    assert [added[f"a{n}"] for n in range(1, len(refused) + 1)] == list(refused.values())
    assert (
        "[1] plan.md — Plan\nThe bridge\ufffd opens on Monday at noon."
        in (outputs(scripted_openai.streamed[-1])["s1"])
    )
    found = await settled(pool, thread_id)
    assert {n: d["status"] for n, d in found.items()} == {"plan.md": "ready"}
    [chunk] = await chunks_of(pool, found["plan.md"]["id"])
    assert "\x00" not in chunk["body"]
