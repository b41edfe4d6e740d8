"""Semantic ranking: chunk embeddings made in the background from a scripted OpenAI-compatible
embeddings endpoint (on a real socket, through the real ``openai`` client), stored with
pgvector on an embedded Postgres, fused with full-text ranking; and full-text alone where
the server has no ``vector`` extension (the Postgres on 127.0.0.1:5432).

The scripted embeddings are bags of concepts (``tests.embeddings_server``): synonyms ("car",
"automobile") share a dimension, so a paraphrase sharing no word with its passage is still
near it.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from chatkit.types import ThreadMetadata
from psycopg_pool import AsyncConnectionPool

from tests.live import (
    LiveServer,
    ScriptedOpenAI,
    add_message,
    create_thread,
    provider_settings,
    responses_step,
    running,
    stream_events,
    title_step,
)
from tests.postgres_server import embedded_server, throwaway_database
from workbench.agent.response_events import FunctionCall, Text
from workbench.config import Settings
from workbench.context import RequestContext
from workbench.doctor import doctor
from workbench.documents.chunks import Chunk
from workbench.documents.embeddings import (
    FULL_TEXT_ALONE,
    DocumentEmbedder,
    EmbeddingsClient,
    start_embedder,
    vector_support,
)
from workbench.documents.library import DocumentLibrary
from workbench.documents.ranking import RRF_K, VectorSearch, reciprocal_rank_fusion
from workbench.documents.search import Passage, Scope, search_passages
from workbench.store import PostgresStore, open_pool
from workbench.store.migrations import apply_migrations

GARAGE = "Automobile maintenance at our workshop takes two hours."
BAKERY = "Fresh bread is baked every morning before sunrise."
INVOICES = "Invoices are payable within thirty days of delivery."
FLEET = "The company automobile fleet is insured nationally."
PARAPHRASE = "car repair duration"  # not one word (or stem) in common with GARAGE
SECTIONS = [("Garage", GARAGE), ("Bakery", BAKERY), ("Invoices", INVOICES), ("Fleet", FLEET)]

# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def vector_server() -> Iterator[str]:
    """An embedded Postgres 18, which has pgvector (started once, ~1 s). Not under pytest's
    temporary directories: another pytest run of the same user may prune those meanwhile."""
    with embedded_server("workbench-pgvector-") as url:
        yield url


@pytest.fixture
async def vector_url(vector_server: str) -> AsyncIterator[str]:
    """A fresh database of its own for each test: embedders work on a whole database."""
    with throwaway_database(vector_server) as url:
        await apply_migrations(url)
        yield url


@pytest.fixture
async def vector_pool(vector_url: str) -> AsyncIterator[AsyncConnectionPool]:
    async with open_pool(vector_url, Settings(database_url=vector_url, _env_file=None)) as pool:
        yield pool


def embeddings_settings(scripted_openai: ScriptedOpenAI, **overrides: Any) -> Settings:
    options: dict[str, Any] = {
        "database_url": "postgresql://unused", "embeddings_model": "embed-test",
        "embeddings_base_url": scripted_openai.base_url, "_env_file": None, **overrides,
    }  # fmt: skip
    return Settings(**options)


@asynccontextmanager
async def embedding(
    pool: AsyncConnectionPool, settings: Settings
) -> AsyncIterator[DocumentEmbedder]:
    embedder = start_embedder(pool, settings)
    assert embedder is not None
    try:
        yield embedder
    finally:
        await embedder.close()


def vector_search(embedder: DocumentEmbedder) -> VectorSearch:
    return VectorSearch(embedder.client, embedder.ready, 3.0)


async def new_thread(pool: AsyncConnectionPool, user: RequestContext) -> str:
    thread_id = f"thr_{time.time_ns()}"
    thread = ThreadMetadata(id=thread_id, created_at=datetime.now())
    await PostgresStore(pool).save_thread(thread, user)
    return thread_id


async def add_document(
    pool: AsyncConnectionPool, user: RequestContext, thread_id: str, name: str,
    sections: list[tuple[str, str]],
) -> str:  # fmt: skip
    """A document read and indexed through the library, as the background reader does."""
    library = DocumentLibrary(pool)
    document_id = await library.add_path(user.user_id, thread_id, name, name, "text/markdown",
                                         "markdown")  # fmt: skip
    claimed = await library.claim()
    assert claimed is not None and claimed.id == document_id
    chunks = [Chunk(text, None, heading) for heading, text in sections]
    await library.add_chunks(claimed, "english", 0, chunks, 0)
    await library.finish(claimed, "ready")
    return document_id


async def embedded_count(pool: AsyncConnectionPool, model: str, dimensions: int | None) -> int:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            """
            SELECT count(*) FROM document_embeddings
            WHERE model = %s AND dimensions IS NOT DISTINCT FROM %s::int
              AND embedding IS NOT NULL
            """,
            (model, dimensions),
        )
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])


async def chunk_count(pool: AsyncConnectionPool) -> int:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM document_chunks")
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])


async def until_embedded(
    pool: AsyncConnectionPool, model: str = "embed-test", dimensions: int | None = None
) -> None:
    """Wait until every chunk has an embedding of ``model`` (``dimensions``)."""
    deadline = time.monotonic() + 15
    while await embedded_count(pool, model, dimensions) < await chunk_count(pool):
        assert time.monotonic() < deadline, "chunks were not embedded in time"
        await asyncio.sleep(0.05)


def bodies(found: list[Passage]) -> list[str]:
    return [passage.body for passage in found]


# -- ranking -------------------------------------------------------------------------------------


async def test_a_paraphrase_is_found_by_meaning_only_with_embeddings(
    vector_pool: AsyncConnectionPool, scripted_openai: ScriptedOpenAI, alice: RequestContext,
    bob: RequestContext,
) -> None:  # fmt: skip
    thread_id = await new_thread(vector_pool, alice)
    garage = await add_document(vector_pool, alice, thread_id, "notes.md", SECTIONS)
    other = await add_document(vector_pool, alice, thread_id, "other.md", [("Bread", BAKERY)])
    # The same passage in another user's thread, and in another thread of this user.
    for user in (bob, alice):
        elsewhere = await new_thread(vector_pool, user)
        await add_document(vector_pool, user, elsewhere, "notes.md", [("Garage", GARAGE)])
    scope = Scope(alice.user_id, thread_id)

    async with embedding(vector_pool, embeddings_settings(scripted_openai)) as embedder:
        await until_embedded(vector_pool)
        semantic = vector_search(embedder)
        assert await search_passages(vector_pool, scope, PARAPHRASE, 5) == []
        found = await search_passages(vector_pool, scope, PARAPHRASE, 5, semantic)
        words = await search_passages(vector_pool, scope, "payable invoices", 5, semantic)
        in_other = await search_passages(
            vector_pool, Scope(alice.user_id, thread_id, [other]), PARAPHRASE, 5, semantic
        )

    assert bodies(found)[0] == GARAGE
    assert bodies(found)[1] == FLEET  # one concept in common: nearer than the rest
    assert {p.document_id for p in found} == {garage, other}  # never another thread's
    assert found[0].heading == "Garage" and found[0].snippet == GARAGE  # its opening
    # A query whose words match still ranks its passage first, with a highlighted snippet.
    assert bodies(words)[0] == INVOICES and "**Invoices**" in words[0].snippet
    assert bodies(in_other) == [BAKERY]  # file= still holds


async def test_search_files_over_http_finds_a_paraphrase_only_with_embeddings(
    vector_url: str, vector_pool: AsyncConnectionPool, tmp_path: Path,
    scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient,
) -> None:  # fmt: skip
    """The same document and question through a scripted model turn calling search_files:
    with the embeddings model through the provider's own endpoint, then without any."""
    markdown = "\n\n".join(f"# {heading}\n\n{text}" for heading, text in SECTIONS)
    outputs, calls = {}, {}
    for mode in ("embeddings", "full-text"):
        options = {"embeddings_model": "embed-test"} if mode == "embeddings" else {}
        settings = provider_settings(vector_url, tmp_path / mode, scripted_openai, **options)
        with running(LiveServer(settings)) as live:
            outputs[mode] = await _ask_about_a_document(live, vector_pool, http, scripted_openai,
                                                        markdown)  # fmt: skip
        calls[mode] = list(scripted_openai.embeddings.calls)
        scripted_openai.embeddings.calls.clear()
    assert f"[1] notes.md — Garage\n{GARAGE}" in outputs["embeddings"]
    assert outputs["full-text"].startswith(f"No passage matches “{PARAPHRASE}”")
    # Asked of the provider's own server (no embeddings URL is set), for the model configured.
    assert {call["model"] for call in calls["embeddings"]} == {"embed-test"}
    assert calls["full-text"] == []


async def _ask_about_a_document(
    live: LiveServer, pool: AsyncConnectionPool, http: httpx.AsyncClient,
    scripted_openai: ScriptedOpenAI, markdown: str,
) -> str:  # fmt: skip
    """Upload ``markdown``, attach it in a first turn, and search it in a second once it is
    read (and embedded, where it is): what search_files told the model."""
    file = ("notes.md", markdown.encode(), "text/markdown")
    upload = await http.post(live.base + "/files/upload", files={"file": file})
    assert upload.status_code == 200, upload.text
    scripted_openai.script(responses_step([Text("I have it.")]), title_step("Notes"))
    body = create_thread("Here are my notes.")
    body["params"]["input"]["attachments"] = [upload.json()["id"]]
    events = await stream_events(http, live.url, body)
    thread_id = events[0].thread.id
    library = DocumentLibrary(pool)
    deadline = time.monotonic() + 15
    owner = live.settings.local_user
    while not all(d.status == "ready" for d in await library.thread_documents(owner, thread_id)):
        assert time.monotonic() < deadline, "the document was not read in time"
        await asyncio.sleep(0.05)
    if live.settings.embeddings_model:
        await until_embedded(pool)
    call = FunctionCall("search_files", json.dumps({"query": PARAPHRASE}), call_id="call_s")
    scripted_openai.script(responses_step([call]), responses_step([Text("Two hours [1].")]))
    events = await stream_events(http, live.url, add_message(thread_id, "How long?"))
    assert [e for e in events if e.type == "error"] == []
    [output] = [
        str(item["output"]) for item in scripted_openai.streamed[-1]["input"]
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    ]  # fmt: skip
    return output


def test_reciprocal_rank_fusion_adds_up_reciprocal_ranks() -> None:
    a, b, c, d = ("d", 1), ("d", 2), ("d", 3), ("d", 4)
    fused = reciprocal_rank_fusion([[a, b, c], [c, d, a]], 10)
    score = {a: 1 / (RRF_K + 1) + 1 / (RRF_K + 3), b: 1 / (RRF_K + 2),
             c: 1 / (RRF_K + 3) + 1 / (RRF_K + 1), d: 1 / (RRF_K + 2)}  # fmt: skip
    assert fused == sorted(score, key=lambda key: -score[key])
    assert fused[:2] == [a, c] and fused[2:] == [b, d]  # ties: the first ranking's order
    assert reciprocal_rank_fusion([[a, b, c], [c, d, a]], 1) == [a]


# -- without pgvector ----------------------------------------------------------------------------


async def test_without_the_vector_extension_search_is_full_text_alone(
    pool: AsyncConnectionPool, scripted_openai: ScriptedOpenAI, alice: RequestContext,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The Postgres 15 on 127.0.0.1:5432 has no pgvector: migration 0004 created nothing."""
    async with pool.connection() as conn:
        assert await vector_support(conn) == "missing"
    thread_id = await new_thread(pool, alice)
    await add_document(pool, alice, thread_id, "notes.md", SECTIONS)
    scope = Scope(alice.user_id, thread_id)
    caplog.set_level(logging.INFO, logger="workbench.documents")

    async with embedding(pool, embeddings_settings(scripted_openai)) as embedder:
        assert not await embedder.ready()
        semantic = vector_search(embedder)
        paraphrase = await search_passages(pool, scope, PARAPHRASE, 5, semantic)
        words = await search_passages(pool, scope, "payable invoices", 5, semantic)
    assert paraphrase == [] and bodies(words) == [INVOICES]
    assert scripted_openai.embeddings.calls == []  # nothing embedded, not even the queries
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        FULL_TEXT_ALONE
    ]
    caplog.clear()
    assert (
        start_embedder(pool, Settings(database_url="postgresql://unused", _env_file=None)) is None
    )
    assert [r.getMessage() for r in caplog.records] == [
        "document search ranks by full-text alone (WORKBENCH_EMBEDDINGS_MODEL is unset)"
    ]


async def doctor_says(database_url: str, data_dir: Path, **settings: Any) -> str:
    out = io.StringIO()
    await doctor(Settings(database_url=database_url, data_dir=data_dir, _env_file=None,
                          **settings), out)  # fmt: skip
    return out.getvalue()


async def test_doctor_says_which_ranking_search_uses(
    database_url: str, vector_url: str, vector_pool: AsyncConnectionPool,
    scripted_openai: ScriptedOpenAI, tmp_path: Path, alice: RequestContext,
) -> None:  # fmt: skip
    # Passages no embedder has seen yet (none runs here): the doctor counts them.
    await add_document(vector_pool, alice, await new_thread(vector_pool, alice), "notes.md",
                       SECTIONS)  # fmt: skip
    model = {"embeddings_model": "embed-test", "embeddings_base_url": scripted_openai.base_url}
    plain = await doctor_says(database_url, tmp_path, **model)
    hybrid = await doctor_says(vector_url, tmp_path, **model)
    unset = await doctor_says(vector_url, tmp_path)
    scripted_openai.embeddings.failures = [500]
    failing = await doctor_says(vector_url, tmp_path, **model)
    scripted_openai.embeddings.failures = [200]  # an error body, with 200 OK
    garbled = await doctor_says(vector_url, tmp_path, **model)

    answers = f"[ok] embeddings: embed-test at {scripted_openai.base_url}/ answers (64 dimensions)"
    assert answers in plain and f"[WARNING] {FULL_TEXT_ALONE}" in plain
    assert "fix: install pgvector" in plain
    assert answers in hybrid
    assert (
        f"[ok] document search: full-text and semantic ranking (pgvector); {len(SECTIONS)} of "
        f"{len(SECTIONS)} passages still to embed" in hybrid
    )
    assert "[ok] document search: full-text (set WORKBENCH_EMBEDDINGS_MODEL" in unset
    assert "embeddings" not in unset.replace("WORKBENCH_EMBEDDINGS_MODEL", "")
    assert "[PROBLEM] embeddings: embed-test at" in failing
    assert "answered HTTP 500: scripted failure 500" in failing
    assert "answered something other than embeddings" in garbled
    assert len(scripted_openai.embeddings.calls) == 4  # one try each: a doctor does not retry


# -- the background embedder ---------------------------------------------------------------------


async def test_a_model_change_re_embeds_in_the_background(
    vector_pool: AsyncConnectionPool, scripted_openai: ScriptedOpenAI, alice: RequestContext
) -> None:
    thread_id = await new_thread(vector_pool, alice)
    await add_document(vector_pool, alice, thread_id, "notes.md", SECTIONS)
    scope = Scope(alice.user_id, thread_id)
    async with embedding(vector_pool, embeddings_settings(scripted_openai)):
        await until_embedded(vector_pool)

    # Another model, with fewer dimensions: every embedding is stale; none is used meanwhile.
    changed = embeddings_settings(scripted_openai, embeddings_model="embed-next",
                                  embeddings_dimensions=16)  # fmt: skip
    client = EmbeddingsClient(changed)

    async def ready() -> bool:
        return True

    stale = await search_passages(vector_pool, scope, PARAPHRASE, 5,
                                  VectorSearch(client, ready, 3.0))  # fmt: skip
    await client.aclose()
    assert stale == []
    async with embedding(vector_pool, changed) as embedder:
        await until_embedded(vector_pool, "embed-next", 16)
        found = await search_passages(vector_pool, scope, PARAPHRASE, 5, vector_search(embedder))
    assert bodies(found)[0] == GARAGE
    async with vector_pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT DISTINCT model, dimensions, vector_dims(embedding) FROM document_embeddings"
        )
        assert await cursor.fetchall() == [("embed-next", 16, 16)]
    texts = [text for c in scripted_openai.embeddings.calls if c["model"] == "embed-next"
             for text in c["input"] if text != PARAPHRASE]  # fmt: skip
    assert sorted(texts) == sorted(f"{heading}\n{text}" for heading, text in SECTIONS)
    assert {c.get("dimensions") for c in scripted_openai.embeddings.calls
            if c["model"] == "embed-next"} == {16}  # fmt: skip


async def test_chunks_are_embedded_in_batches_each_once_by_any_number_of_embedders(
    vector_pool: AsyncConnectionPool, scripted_openai: ScriptedOpenAI, alice: RequestContext
) -> None:
    thread_id = await new_thread(vector_pool, alice)
    sections = [(f"Part {n}", f"Paragraph number {n} of the report.") for n in range(10)]
    await add_document(vector_pool, alice, thread_id, "report.md", sections)
    async with embedding(vector_pool, embeddings_settings(scripted_openai, embeddings_batch=4)):
        await until_embedded(vector_pool)
    assert [len(call["input"]) for call in scripted_openai.embeddings.calls] == [4, 4, 2]

    # Two embedders at once (as two server processes would run) on 60 more chunks.
    scripted_openai.embeddings.calls.clear()
    for number in range(3):
        more = [(f"Part {n}", f"Chapter {number}, paragraph {n}.") for n in range(20)]
        await add_document(vector_pool, alice, thread_id, f"more-{number}.md", more)
    settings = embeddings_settings(scripted_openai, embeddings_batch=3)
    async with embedding(vector_pool, settings), embedding(vector_pool, settings):
        await until_embedded(vector_pool)
    texts = scripted_openai.embeddings.texts
    assert len(texts) == 60 and set(Counter(texts).values()) == {1}
    assert max(len(call["input"]) for call in scripted_openai.embeddings.calls) == 3


async def test_failed_embedding_requests_are_retried(
    vector_pool: AsyncConnectionPool, scripted_openai: ScriptedOpenAI, alice: RequestContext
) -> None:
    thread_id = await new_thread(vector_pool, alice)
    await add_document(vector_pool, alice, thread_id, "notes.md", SECTIONS)
    scripted_openai.embeddings.failures = [500, 429, 503]
    async with embedding(vector_pool, embeddings_settings(scripted_openai)):
        await until_embedded(vector_pool)
    # The client's own retries: three failures, then the batch.
    assert [len(call["input"]) for call in scripted_openai.embeddings.calls] == [4, 4, 4, 4]


async def test_a_chunk_the_endpoint_refuses_waits_without_holding_up_the_others(
    vector_pool: AsyncConnectionPool, scripted_openai: ScriptedOpenAI, alice: RequestContext
) -> None:
    thread_id = await new_thread(vector_pool, alice)
    await add_document(vector_pool, alice, thread_id, "notes.md", [*SECTIONS, ("Bad", "POISON")])
    scripted_openai.embeddings.refused = {"POISON"}
    settings = embeddings_settings(scripted_openai, embeddings_batch=1)
    waiting = """
        SELECT c.body, e.attempts, e.lease_until > now() FROM document_embeddings e
        JOIN document_chunks c USING (document_id, seq) WHERE e.embedding IS NULL
    """
    async with embedding(vector_pool, settings), vector_pool.connection() as conn:
        deadline = time.monotonic() + 15
        while True:
            rows = await (await conn.execute(waiting)).fetchall()
            if len(rows) == 1 and rows[0][1] >= 1:  # the others embedded, it tried once
                break
            assert time.monotonic() < deadline, rows
            await asyncio.sleep(0.05)
    [(body, attempts, waits)] = rows
    assert body == "POISON" and attempts >= 1 and waits
    refused = [
        call for call in scripted_openai.embeddings.calls if call["input"] == ["Bad\nPOISON"]
    ]
    assert 1 <= len(refused) <= 2  # a 400 is not retried by the client; 1 s, then 2 s later


async def test_search_ranks_by_full_text_while_embeddings_fail_then_by_meaning_again(
    vector_pool: AsyncConnectionPool, scripted_openai: ScriptedOpenAI, alice: RequestContext,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    thread_id = await new_thread(vector_pool, alice)
    await add_document(vector_pool, alice, thread_id, "notes.md", SECTIONS)
    scope = Scope(alice.user_id, thread_id)
    caplog.set_level(logging.INFO, logger="workbench.documents")
    scripted_openai.embeddings.failures = [503] * 1000
    settings = embeddings_settings(scripted_openai, embeddings_max_retries=1)
    async with embedding(vector_pool, settings) as embedder:
        semantic = vector_search(embedder)
        assert await embedder.ready()
        for _ in range(3):
            words = await search_passages(vector_pool, scope, "payable invoices", 5, semantic)
            assert bodies(words) == [INVOICES]
        assert await embedded_count(vector_pool, "embed-test", None) == 0
        assert len(scripted_openai.embeddings.calls) >= 5  # 2 (one retry) per batch, and 3 queries

        scripted_openai.embeddings.failures = []  # the endpoint is back: embedded at the next try
        await until_embedded(vector_pool)
        found = await search_passages(vector_pool, scope, PARAPHRASE, 5, semantic)
    assert bodies(found)[0] == GARAGE
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    [query_note] = [w for w in warnings if "until queries can be embedded again" in w]
    assert "embed-test at" in query_note and "answered HTTP 503" in query_note
    batch_notes = [w for w in warnings if w.startswith("embedding document chunks failed")]
    assert batch_notes and "trying again in 1 s" in batch_notes[0]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(m.startswith("document search: queries are embedded again") for m in infos)


async def test_a_slow_query_embedding_is_not_waited_for(
    vector_pool: AsyncConnectionPool, scripted_openai: ScriptedOpenAI, alice: RequestContext,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    thread_id = await new_thread(vector_pool, alice)
    await add_document(vector_pool, alice, thread_id, "notes.md", SECTIONS)
    async with embedding(vector_pool, embeddings_settings(scripted_openai)) as embedder:
        await until_embedded(vector_pool)
        scripted_openai.embeddings.delay = 1.5
        semantic = VectorSearch(embedder.client, embedder.ready, 0.3)
        started = time.monotonic()
        words = await search_passages(vector_pool, Scope(alice.user_id, thread_id),
                                      "payable invoices", 5, semantic)  # fmt: skip
        took = time.monotonic() - started
        scripted_openai.embeddings.delay = 0.0
    assert bodies(words) == [INVOICES] and took < 1.0
    assert any("gave no answer within 0.3 s" in r.getMessage() for r in caplog.records)


async def test_a_vector_extension_installed_later_is_taken_up(
    vector_pool: AsyncConnectionPool, scripted_openai: ScriptedOpenAI, alice: RequestContext
) -> None:
    """As if migration 0004 ran before pgvector was installed: chunks indexed meanwhile are
    embedded once the server (starting with an embeddings model) creates the table."""
    async with vector_pool.connection() as conn:
        await conn.execute("DROP TRIGGER document_chunks_to_embed ON document_chunks")
        await conn.execute("DROP TABLE document_embeddings")
        await conn.execute("DROP EXTENSION vector")
        assert await vector_support(conn) == "available"
    thread_id = await new_thread(vector_pool, alice)
    await add_document(vector_pool, alice, thread_id, "notes.md", SECTIONS)
    async with embedding(vector_pool, embeddings_settings(scripted_openai)) as embedder:
        assert await embedder.ready()
        await until_embedded(vector_pool)
        found = await search_passages(vector_pool, Scope(alice.user_id, thread_id), PARAPHRASE,
                                      5, vector_search(embedder))  # fmt: skip
    assert bodies(found)[0] == GARAGE
    async with vector_pool.connection() as conn:
        assert await vector_support(conn) == "ready"
