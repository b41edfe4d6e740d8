"""The record of what exists at OpenAI, on a real Postgres: every id OpenAI hands out is kept,
linked or owed for deletion, also when turns race or the thread goes meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter
from collections.abc import Iterator
from datetime import datetime

import pytest
from chatkit.types import FileAttachment, ThreadMetadata
from openai import AsyncOpenAI
from psycopg_pool import AsyncConnectionPool

from tests.live import ScriptedOpenAI, started
from tests.openai_files import OpenAIFiles
from workbench.context import RequestContext
from workbench.documents.hosted_deletions import OpenAIDeletions
from workbench.documents.hosted_records import HostedRecords, ThreadGoneError
from workbench.store import PostgresStore


@contextlib.contextmanager
def running_scripted(files: OpenAIFiles) -> Iterator[ScriptedOpenAI]:
    yield from started(ScriptedOpenAI(routes=files.routes()))


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(6)}"


async def a_thread(store: PostgresStore, user: RequestContext) -> str:
    thread = ThreadMetadata(id=new_id("thr_"), created_at=datetime.now())
    await store.save_thread(thread, user)
    return thread.id


async def links(pool: AsyncConnectionPool, table: str, openai_id: str) -> list[str | None]:
    column = {"openai_vector_stores": "thread_id", "openai_files": "attachment_id"}[table]
    async with pool.connection() as conn:
        cursor = await conn.execute(
            f"SELECT {column} FROM {table} WHERE id = %s".encode(), (openai_id,)
        )
        return [row[0] for row in await cursor.fetchall()]


async def test_two_turns_racing_keep_one_store_and_owe_the_other(
    pool: AsyncConnectionPool, store: PostgresStore, alice: RequestContext
) -> None:
    records = HostedRecords(pool)
    thread_id = await a_thread(store, alice)
    first, second = new_id("vs_"), new_id("vs_")

    assert await records.record_store(first, alice.user_id, thread_id) == first
    assert await records.record_store(second, alice.user_id, thread_id) == first

    assert await records.store_of(alice.user_id, thread_id) == first
    assert await links(pool, "openai_vector_stores", second) == [None]  # owed


async def test_a_store_made_for_a_thread_deleted_meanwhile_is_owed(
    pool: AsyncConnectionPool, store: PostgresStore, alice: RequestContext
) -> None:
    records = HostedRecords(pool)
    thread_id = await a_thread(store, alice)
    await store.delete_thread(thread_id, alice)
    made = new_id("vs_")

    with pytest.raises(ThreadGoneError):
        await records.record_store(made, alice.user_id, thread_id)
    assert await links(pool, "openai_vector_stores", made) == [None]


async def test_a_file_for_an_attachment_deleted_meanwhile_is_owed(
    pool: AsyncConnectionPool, store: PostgresStore, alice: RequestContext
) -> None:
    records = HostedRecords(pool)
    thread_id = await a_thread(store, alice)
    attachment = FileAttachment(id=new_id("atc_"), name="report.pdf",
                                mime_type="application/pdf", thread_id=thread_id)  # fmt: skip
    await store.save_attachment(attachment, alice)
    kept = new_id("file-")
    assert await records.record_file(kept, alice.user_id, attachment.id) == kept

    await store.delete_attachment(attachment.id, alice)
    late = new_id("file-")
    with pytest.raises(ThreadGoneError):
        await records.record_file(late, alice.user_id, attachment.id)

    # Both are owed: the one the deletion unlinked, and the one that came too late.
    assert await links(pool, "openai_files", kept) == [None]
    assert await links(pool, "openai_files", late) == [None]


async def test_another_users_thread_is_none_of_ours(
    pool: AsyncConnectionPool, store: PostgresStore, alice: RequestContext, bob: RequestContext
) -> None:
    records = HostedRecords(pool)
    thread_id = await a_thread(store, alice)
    made = new_id("vs_")
    await records.record_store(made, alice.user_id, thread_id)
    attachment = FileAttachment(id=new_id("atc_"), name="notes.md", mime_type="text/markdown",
                                thread_id=thread_id)  # fmt: skip
    await store.save_attachment(attachment, alice)

    assert await records.store_of(alice.user_id, thread_id) == made
    assert [d.name for d in await records.documents(alice.user_id, thread_id)] == ["notes.md"]
    assert await records.store_of(bob.user_id, thread_id) is None
    assert await records.documents(bob.user_id, thread_id) == []


async def test_two_deletion_workers_send_each_deletion_once(
    pool: AsyncConnectionPool, alice: RequestContext
) -> None:
    files = OpenAIFiles()
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(running_scripted(files))
        client = AsyncOpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)
        records = HostedRecords(pool)
        owed = []
        for _ in range(30):
            uploaded = await client.files.create(file=("a.txt", b"a"), purpose="assistants")
            with pytest.raises(ThreadGoneError):  # no such attachment: owed at once
                await records.record_file(uploaded.id, alice.user_id, new_id("atc_"))
            owed.append(uploaded.id)
        workers = [OpenAIDeletions(pool, client, first_retry=0.1) for _ in range(2)]

        await asyncio.gather(*(worker.sweep() for worker in workers))
        await client.close()

    # (The database is the session's: deletions other tests left owed are paid too.)
    deletes = Counter(path for method, path in files.requests if method == "DELETE")
    assert {deletes[f"/v1/files/{file_id}"] for file_id in owed} == {1}
    assert files.files == {}
    for file_id in owed:
        assert await links(pool, "openai_files", file_id) == []
