"""Text Postgres cannot store (U+0000, lone surrogates) is cleaned where JSON enters it."""

from __future__ import annotations

from datetime import UTC, datetime

from chatkit.types import AssistantMessageContent, AssistantMessageItem, ThreadMetadata
from psycopg_pool import AsyncConnectionPool

from workbench.agent.session import TranscriptSession
from workbench.context import RequestContext
from workbench.store import PostgresStore
from workbench.text import is_storable, storable, storable_json

BAD = "a\x00b\ud800c"
CLEAN = "a\ufffdb\ufffdc"


def test_storable_replaces_nul_and_lone_surrogates_only() -> None:
    assert storable(BAD) == CLEAN
    assert storable("emoji \U0001f600 and tab\t") == "emoji \U0001f600 and tab\t"
    assert not is_storable(BAD) and is_storable(CLEAN)
    assert storable_json({"k\x00": [BAD, 1, None, {"x": BAD}]}) == {
        "k\ufffd": [CLEAN, 1, None, {"x": CLEAN}]
    }


async def test_server_made_text_is_saved_cleaned_never_refused(
    store: PostgresStore, pool: AsyncConnectionPool, alice: RequestContext
) -> None:
    now = datetime.now(UTC)
    thread = ThreadMetadata(id=store.generate_thread_id(alice), created_at=now, title=BAD)
    await store.save_thread(thread, alice)
    item = AssistantMessageItem(
        id=store.generate_item_id("message", thread, alice), thread_id=thread.id,
        created_at=now, content=[AssistantMessageContent(text=BAD)],
    )  # fmt: skip
    await store.add_thread_item(thread.id, item, alice)
    session = TranscriptSession(pool, thread.id, alice.user_id, turn=item.id, max_items=10)
    await session.add_items([{"role": "assistant", "content": BAD}])

    assert (await store.load_thread(thread.id, alice)).title == CLEAN
    [saved] = (await store.load_thread_items(thread.id, None, 10, "asc", alice)).data
    assert isinstance(saved, AssistantMessageItem) and saved.content[0].text == CLEAN
    assert await session.get_items() == [{"role": "assistant", "content": CLEAN}]
