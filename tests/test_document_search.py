"""``search_files`` over HTTP: the passage that answers comes first with its snippet, ``file=``
narrows the search, another user's and another thread's documents are never returned, ``[n]``
in the answer become file sources (the transcript keeps the text as written), and the demo
model searches and cites on ``search: <query>``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from chatkit.types import SearchTask
from psycopg_pool import AsyncConnectionPool

from tests import documents
from tests.document_steps import (
    attaching,
    file_sources,
    messages,
    no_errors,
    outputs,
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
    provider_settings,
    responses_step,
    running,
    stream_events,
    title_step,
    workflow_tasks,
)
from workbench.agent.response_events import Text
from workbench.context import RequestContext


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
    assert "apple harvest starts" in source.description
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
    assert source.description == "south lighthouse burns oil and guides the fishing boats"
    assert index == len("Oil lights one of them")
    [done] = [e.item for e in events if e.type == "thread.item.done" and e.item.id == message.id]
    assert done == message

    scripted_openai.script(responses_step([Text("Nothing new.")]))
    no_errors(await stream_events(http, provider.url, add_message(thread_id, "And?")))
    assistant = [e for e in scripted_openai.streamed[-1]["input"] if e.get("role") == "assistant"]
    assert json.dumps(answer) in json.dumps(assistant)  # "[2]" and "[9]" as the model wrote them


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
    assert source.description is not None and "keeper writes" in source.description


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
