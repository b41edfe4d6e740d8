"""Contract suite for the Postgres ``Store``: every method, against a real Postgres."""

from __future__ import annotations

import asyncio
import json
import re
import time
import typing
from datetime import datetime, timedelta

import pytest
from chatkit.store import NotFoundError, Store
from chatkit.types import (
    Attachment,
    FileAttachment,
    ImageAttachment,
    InferenceOptions,
    Page,
    ThreadItem,
    ThreadMetadata,
    UserMessageItem,
    UserMessageTextContent,
)
from psycopg_pool import AsyncConnectionPool

from tests.store_samples import every_item_type
from workbench.context import RequestContext
from workbench.store import (
    DeletedThread,
    InvalidCursorError,
    ItemAlreadyExistsError,
    PostgresStore,
)

NOW = datetime(2026, 11, 24, 12, 0, 0)


async def new_thread(
    store: PostgresStore, ctx: RequestContext, created_at: datetime | None = None, **fields: object
) -> ThreadMetadata:
    thread = ThreadMetadata(
        id=store.generate_thread_id(ctx), created_at=created_at or datetime.now(), **fields
    )
    await store.save_thread(thread, ctx)
    return thread


def message(
    store: PostgresStore, thread: ThreadMetadata, text: str, created_at: datetime | None = None
) -> UserMessageItem:
    return UserMessageItem(
        id=store.generate_item_id("message", thread, RequestContext("ids")),
        thread_id=thread.id,
        created_at=created_at or datetime.now(),
        content=[UserMessageTextContent(text=text)],
        inference_options=InferenceOptions(),
    )


async def add_messages(
    store: PostgresStore,
    ctx: RequestContext,
    thread: ThreadMetadata,
    count: int,
    created_at: datetime | None = None,
) -> list[UserMessageItem]:
    items = [message(store, thread, f"m{i}", created_at) for i in range(count)]
    for item in items:
        await store.add_thread_item(thread.id, item, ctx)
    return items


def wire(item: ThreadItem) -> object:
    """An item as the protocol carries it (JSONB keeps objects, not their key order)."""
    return json.loads(item.model_dump_json(exclude_none=True))


def texts(page: Page[ThreadItem]) -> list[str]:
    return [item.content[0].text for item in page.data]  # type: ignore[union-attr]


async def all_item_pages(
    store: PostgresStore, ctx: RequestContext, thread_id: str, limit: int, order: str
) -> list[list[str]]:
    pages, after = [], None
    while True:
        page = await store.load_thread_items(thread_id, after, limit, order, ctx)
        pages.append(texts(page))
        if not page.has_more:
            return pages
        after = page.after


def test_every_abstract_method_is_implemented() -> None:
    abstract = {
        name for name, member in vars(Store).items() if getattr(member, "__isabstractmethod__", 0)
    }
    assert abstract, "the SDK's Store changed shape"
    assert not PostgresStore.__abstractmethods__
    for name in abstract:
        assert getattr(PostgresStore, name) is not getattr(Store, name)


# -- ids -------------------------------------------------------------------------------------


def test_ids_are_longer_prefixed_and_time_ordered(store: PostgresStore, alice: RequestContext):
    thread = ThreadMetadata(id="thr_x", created_at=NOW)
    ids = []
    for _ in range(3):
        ids.append(store.generate_item_id("message", thread, alice))
        time.sleep(0.002)
    assert ids == sorted(ids)
    assert all(re.fullmatch(r"msg_[0-9a-f]{28}", i) for i in ids)
    assert re.fullmatch(r"thr_[0-9a-f]{28}", store.generate_thread_id(alice))
    assert store.generate_item_id("workflow", thread, alice).startswith("wf_")
    assert len(set(store.generate_thread_id(alice) for _ in range(1000))) == 1000


# -- threads ---------------------------------------------------------------------------------


async def test_thread_round_trip_and_upsert(store: PostgresStore, alice: RequestContext):
    thread = await new_thread(store, alice, NOW, title="First", metadata={"k": [1, "x"]})
    assert await store.load_thread(thread.id, alice) == thread

    thread.title = "Renamed"
    thread.metadata["more"] = True
    await store.save_thread(thread, alice)
    loaded = await store.load_thread(thread.id, alice)
    assert loaded.title == "Renamed" and loaded.metadata == {"k": [1, "x"], "more": True}
    assert len((await store.load_threads(10, None, "asc", alice)).data) == 1


async def test_load_missing_thread(store: PostgresStore, alice: RequestContext):
    with pytest.raises(NotFoundError):
        await store.load_thread("thr_missing", alice)


async def test_load_threads_empty(store: PostgresStore, alice: RequestContext):
    page = await store.load_threads(10, None, "desc", alice)
    assert page == Page(data=[], has_more=False, after=None)


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_thread_pages_with_equal_timestamps(
    store: PostgresStore, alice: RequestContext, order: str
):
    created = [(await new_thread(store, alice, NOW, title=str(i))).title for i in range(7)]
    expected = created if order == "asc" else created[::-1]
    seen, after = [], None
    for _ in range(4):
        page = await store.load_threads(3, after, order, alice)
        seen.extend(t.title for t in page.data)
        after = page.after
        if not page.has_more:
            break
    assert seen == expected


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_threads_sorted_by_created_at(
    store: PostgresStore, alice: RequestContext, order: str
):
    # Saved out of order: listing follows created_at, not insertion.
    for minutes in (5, 1, 3):
        await new_thread(store, alice, NOW + timedelta(minutes=minutes), title=str(minutes))
    page = await store.load_threads(10, None, order, alice)
    titles = [t.title for t in page.data]
    assert titles == (["1", "3", "5"] if order == "asc" else ["5", "3", "1"])


async def test_threads_exactly_one_page(store: PostgresStore, alice: RequestContext):
    for _ in range(4):
        await new_thread(store, alice)
    page = await store.load_threads(4, None, "desc", alice)
    assert len(page.data) == 4 and page.has_more is False and page.after is not None
    page = await store.load_threads(3, None, "desc", alice)
    assert len(page.data) == 3 and page.has_more is True
    rest = await store.load_threads(3, page.after, "desc", alice)
    assert len(rest.data) == 1 and rest.has_more is False


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_thread_cursor_of_deleted_row(
    store: PostgresStore, alice: RequestContext, order: str
):
    threads = [await new_thread(store, alice, NOW, title=str(i)) for i in range(5)]
    first = await store.load_threads(2, None, order, alice)
    await store.delete_thread(first.data[-1].id, alice)
    rest = await store.load_threads(10, first.after, order, alice)
    expected = [t.title for t in (threads if order == "asc" else threads[::-1])][2:]
    assert [t.title for t in rest.data] == expected


async def test_thread_id_accepted_as_cursor(store: PostgresStore, alice: RequestContext):
    threads = [await new_thread(store, alice, NOW, title=str(i)) for i in range(3)]
    page = await store.load_threads(10, threads[0].id, "asc", alice)
    assert [t.title for t in page.data] == ["1", "2"]
    with pytest.raises(InvalidCursorError):
        await store.load_threads(10, "thr_gone", "asc", alice)


async def test_bad_order_and_limit(store: PostgresStore, alice: RequestContext):
    thread = await new_thread(store, alice)
    with pytest.raises(ValueError, match="order"):
        await store.load_threads(10, None, "sideways", alice)
    with pytest.raises(ValueError, match="order"):
        await store.load_thread_items(thread.id, None, 10, "up", alice)
    with pytest.raises(ValueError, match="limit"):
        await store.load_threads(0, None, "asc", alice)
    with pytest.raises(ValueError, match="limit"):
        await store.load_thread_items(thread.id, None, -1, "asc", alice)


# -- items -----------------------------------------------------------------------------------


async def test_every_item_type_round_trips(store: PostgresStore, alice: RequestContext):
    thread = await new_thread(store, alice)
    samples = every_item_type(thread.id, datetime.now())
    sdk_types = {
        m.model_fields["type"].default for m in typing.get_args(typing.get_args(ThreadItem)[0])
    }
    assert {s.type for s in samples} == sdk_types, "the SDK added or removed an item type"

    for sample in samples:
        await store.add_thread_item(thread.id, sample, alice)
    page = await store.load_thread_items(thread.id, None, 50, "asc", alice)
    assert [item.id for item in page.data] == [s.id for s in samples]
    for loaded, sample in zip(page.data, samples, strict=True):
        # Compared as the wire carries them: the SDK serializes with exclude_none, and a
        # dynamic widget comes back as the SDK's strict widget classes.
        assert type(loaded) is type(sample)
        assert wire(loaded) == wire(sample)
        assert wire(await store.load_item(thread.id, sample.id, alice)) == wire(sample)


async def test_items_empty_thread(store: PostgresStore, alice: RequestContext):
    thread = await new_thread(store, alice)
    for order in ("asc", "desc"):
        page = await store.load_thread_items(thread.id, None, 10, order, alice)
        assert page == Page(data=[], has_more=False, after=None)


async def test_items_of_missing_thread(store: PostgresStore, alice: RequestContext):
    with pytest.raises(NotFoundError):
        await store.load_thread_items("thr_missing", None, 10, "asc", alice)


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_item_pages_exact_has_more(store: PostgresStore, alice: RequestContext, order: str):
    thread = await new_thread(store, alice)
    await add_messages(store, alice, thread, 3)
    page = await store.load_thread_items(thread.id, None, 3, order, alice)
    assert len(page.data) == 3 and page.has_more is False
    page = await store.load_thread_items(thread.id, None, 2, order, alice)
    assert len(page.data) == 2 and page.has_more is True
    last = await store.load_thread_items(thread.id, page.after, 2, order, alice)
    assert len(last.data) == 1 and last.has_more is False


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_item_pages_with_equal_timestamps(
    store: PostgresStore, alice: RequestContext, order: str
):
    thread = await new_thread(store, alice)
    await add_messages(store, alice, thread, 10, created_at=NOW)
    expected = [f"m{i}" for i in range(10)]
    pages = await all_item_pages(store, alice, thread.id, 3, order)
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    flat = [text for page in pages for text in page]
    assert flat == (expected if order == "asc" else expected[::-1])


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_item_cursor_of_deleted_row(store: PostgresStore, alice: RequestContext, order: str):
    thread = await new_thread(store, alice)
    items = await add_messages(store, alice, thread, 6)
    first = await store.load_thread_items(thread.id, None, 2, order, alice)
    await store.delete_thread_item(thread.id, first.data[-1].id, alice)
    rest = await store.load_thread_items(thread.id, first.after, 10, order, alice)
    names = [i.content[0].text for i in (items if order == "asc" else items[::-1])]
    assert texts(rest) == names[2:]


async def test_item_id_accepted_as_cursor(store: PostgresStore, alice: RequestContext):
    thread = await new_thread(store, alice)
    items = await add_messages(store, alice, thread, 3)
    page = await store.load_thread_items(thread.id, items[2].id, 10, "desc", alice)
    assert texts(page) == ["m1", "m0"]
    with pytest.raises(InvalidCursorError):
        await store.load_thread_items(thread.id, "msg_gone", 10, "desc", alice)


async def test_concurrent_inserts_keep_a_total_order(store: PostgresStore, alice: RequestContext):
    thread = await new_thread(store, alice)
    items = [message(store, thread, f"c{i}", NOW) for i in range(60)]
    await asyncio.gather(*(store.add_thread_item(thread.id, item, alice) for item in items))
    asc = [t for page in await all_item_pages(store, alice, thread.id, 7, "asc") for t in page]
    desc = [t for page in await all_item_pages(store, alice, thread.id, 7, "desc") for t in page]
    assert sorted(asc) == sorted(f"c{i}" for i in range(60))
    assert len(set(asc)) == 60
    assert desc == asc[::-1]


async def test_page_during_concurrent_appends(store: PostgresStore, alice: RequestContext):
    """Paging forward while others append never repeats or skips what existed at the start."""
    thread = await new_thread(store, alice)
    await add_messages(store, alice, thread, 20)
    seen: list[str] = []
    after = None
    for n in range(100):
        appended = message(store, thread, f"new{n}")
        appender = asyncio.create_task(store.add_thread_item(thread.id, appended, alice))
        page = await store.load_thread_items(thread.id, after, 4, "asc", alice)
        await appender
        seen.extend(texts(page))
        if not page.has_more:
            break
        after = page.after
    assert seen[:20] == [f"m{i}" for i in range(20)]
    assert len(seen) == len(set(seen))


async def test_add_thread_item_never_duplicates(store: PostgresStore, alice: RequestContext):
    thread = await new_thread(store, alice)
    (item,) = await add_messages(store, alice, thread, 1)
    changed = item.model_copy(update={"content": [UserMessageTextContent(text="other")]})
    with pytest.raises(ItemAlreadyExistsError):
        await store.add_thread_item(thread.id, changed, alice)
    page = await store.load_thread_items(thread.id, None, 10, "asc", alice)
    assert texts(page) == ["m0"]


async def test_add_item_to_missing_thread(store: PostgresStore, alice: RequestContext):
    thread = ThreadMetadata(id="thr_missing", created_at=NOW)
    with pytest.raises(NotFoundError):
        await store.add_thread_item(thread.id, message(store, thread, "x"), alice)


async def test_item_thread_id_must_match(store: PostgresStore, alice: RequestContext):
    thread = await new_thread(store, alice)
    other = await new_thread(store, alice)
    with pytest.raises(ValueError, match="belongs to thread"):
        await store.add_thread_item(thread.id, message(store, other, "x"), alice)


async def test_save_item_upserts_in_place(store: PostgresStore, alice: RequestContext):
    thread = await new_thread(store, alice)
    items = await add_messages(store, alice, thread, 3)
    replaced = items[0].model_copy(update={"content": [UserMessageTextContent(text="edited")]})
    await store.save_item(thread.id, replaced, alice)
    fresh = message(store, thread, "appended")
    await store.save_item(thread.id, fresh, alice)
    page = await store.load_thread_items(thread.id, None, 10, "asc", alice)
    assert texts(page) == ["edited", "m1", "m2", "appended"]
    assert (await store.load_item(thread.id, items[0].id, alice)).content[0].text == "edited"  # type: ignore[union-attr]


async def test_load_missing_item(store: PostgresStore, alice: RequestContext):
    thread = await new_thread(store, alice)
    with pytest.raises(NotFoundError):
        await store.load_item(thread.id, "msg_missing", alice)


async def test_delete_thread_item(store: PostgresStore, alice: RequestContext):
    thread = await new_thread(store, alice)
    items = await add_messages(store, alice, thread, 3)
    await store.delete_thread_item(thread.id, items[1].id, alice)
    await store.delete_thread_item(thread.id, items[1].id, alice)  # idempotent in own thread
    page = await store.load_thread_items(thread.id, None, 10, "asc", alice)
    assert texts(page) == ["m0", "m2"]
    with pytest.raises(NotFoundError):
        await store.delete_thread_item("thr_missing", items[0].id, alice)


# -- attachments -----------------------------------------------------------------------------


def file_attachment(thread_id: str | None = None, name: str = "a.csv") -> FileAttachment:
    return FileAttachment(
        id=f"atc_{time.time_ns():x}",
        name=name,
        mime_type="text/csv",
        thread_id=thread_id,
        metadata={"blob": "key/1"},
    )


async def test_attachment_round_trip_and_upsert(store: PostgresStore, alice: RequestContext):
    image = ImageAttachment(
        id="atc_img_" + alice.user_id,
        name="p.png",
        mime_type="image/png",
        preview_url="https://x.example/p.png",  # type: ignore[arg-type]
        upload_descriptor={"url": "https://x.example/up", "method": "PUT"},  # type: ignore[arg-type]
        metadata={"sha": "abc"},
    )
    await store.save_attachment(image, alice)
    assert await store.load_attachment(image.id, alice) == image

    thread = await new_thread(store, alice)
    attached = image.model_copy(update={"thread_id": thread.id, "upload_descriptor": None})
    await store.save_attachment(attached, alice)
    loaded: Attachment = await store.load_attachment(image.id, alice)
    assert loaded == attached and loaded.metadata == {"sha": "abc"}


async def test_delete_attachment(store: PostgresStore, alice: RequestContext):
    attachment = file_attachment()
    await store.save_attachment(attachment, alice)
    await store.delete_attachment(attachment.id, alice)
    with pytest.raises(NotFoundError):
        await store.load_attachment(attachment.id, alice)
    with pytest.raises(NotFoundError):
        await store.delete_attachment(attachment.id, alice)


async def test_attachment_to_missing_thread(store: PostgresStore, alice: RequestContext):
    with pytest.raises(NotFoundError):
        await store.save_attachment(file_attachment("thr_missing"), alice)


# -- feedback --------------------------------------------------------------------------------


async def test_feedback(store: PostgresStore, alice: RequestContext):
    thread = await new_thread(store, alice)
    items = await add_messages(store, alice, thread, 3)
    await store.save_feedback(thread.id, [items[0].id, items[1].id], "positive", alice)
    await store.save_feedback(thread.id, [items[1].id], "negative", alice)
    assert await store.load_feedback(thread.id, alice) == {
        items[0].id: "positive",
        items[1].id: "negative",
    }
    with pytest.raises(NotFoundError):
        await store.save_feedback(thread.id, ["msg_missing"], "positive", alice)
    await store.delete_thread_item(thread.id, items[0].id, alice)
    assert await store.load_feedback(thread.id, alice) == {items[1].id: "negative"}


# -- cascade delete --------------------------------------------------------------------------


async def count_rows(pool: AsyncConnectionPool, table: str, thread_id: str) -> int:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            f"SELECT count(*) FROM {table} WHERE thread_id = %s",
            (thread_id,),
        )
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])


async def test_delete_thread_cascades_and_runs_hooks(
    store: PostgresStore, pool: AsyncConnectionPool, alice: RequestContext
):
    thread = await new_thread(store, alice)
    keep = await new_thread(store, alice)
    items = await add_messages(store, alice, thread, 3)
    await add_messages(store, alice, keep, 2)
    attached = [file_attachment(thread.id, f"{i}.csv") for i in range(2)]
    unattached = file_attachment()
    for attachment in [*attached, unattached]:
        await store.save_attachment(attachment, alice)
    await store.save_feedback(thread.id, [items[0].id], "positive", alice)

    seen: list[DeletedThread] = []

    async def failing_hook(deleted: DeletedThread) -> None:
        raise RuntimeError("blob store down")

    async def recording_hook(deleted: DeletedThread) -> None:
        seen.append(deleted)

    hooked = PostgresStore(pool)
    hooked.on_thread_deleted(failing_hook)
    hooked.on_thread_deleted(recording_hook)
    await hooked.delete_thread(thread.id, alice)

    assert len(seen) == 1
    assert (seen[0].thread_id, seen[0].user_id) == (thread.id, alice.user_id)
    assert sorted(seen[0].attachment_ids) == sorted(a.id for a in attached)
    for table in ("thread_items", "attachments", "item_feedback"):
        assert await count_rows(pool, table, thread.id) == 0, table
    with pytest.raises(NotFoundError):
        await store.load_thread(thread.id, alice)
    with pytest.raises(NotFoundError):
        await store.load_item(thread.id, items[0].id, alice)
    assert await store.load_attachment(unattached.id, alice) == unattached
    assert len((await store.load_thread_items(keep.id, None, 10, "asc", alice)).data) == 2
    with pytest.raises(NotFoundError):
        await store.delete_thread(thread.id, alice)


# -- isolation between users -----------------------------------------------------------------


async def test_users_never_see_each_others_data(
    store: PostgresStore, alice: RequestContext, bob: RequestContext
):
    thread = await new_thread(store, alice, title="alice's")
    items = await add_messages(store, alice, thread, 2)
    attachment = file_attachment(thread.id)
    await store.save_attachment(attachment, alice)
    await store.save_feedback(thread.id, [items[0].id], "positive", alice)
    alice_page = await store.load_thread_items(thread.id, None, 1, "asc", alice)

    denied = [
        store.load_thread(thread.id, bob),
        store.save_thread(thread.model_copy(update={"title": "bob's now"}), bob),
        store.delete_thread(thread.id, bob),
        store.load_thread_items(thread.id, None, 10, "asc", bob),
        store.load_thread_items(thread.id, alice_page.after, 10, "asc", bob),
        store.load_thread_items(thread.id, items[0].id, 10, "asc", bob),
        store.add_thread_item(thread.id, message(store, thread, "from bob"), bob),
        store.save_item(thread.id, items[0].model_copy(update={"content": []}), bob),
        store.load_item(thread.id, items[0].id, bob),
        store.delete_thread_item(thread.id, items[0].id, bob),
        store.save_attachment(attachment.model_copy(update={"name": "bob.csv"}), bob),
        store.save_attachment(file_attachment(thread.id), bob),  # bob's file, alice's thread
        store.load_attachment(attachment.id, bob),
        store.delete_attachment(attachment.id, bob),
        store.save_feedback(thread.id, [items[1].id], "negative", bob),
        store.load_feedback(thread.id, bob),
    ]
    for attempt in denied:
        with pytest.raises(NotFoundError):
            await attempt

    assert (await store.load_threads(10, None, "desc", bob)).data == []
    with pytest.raises(InvalidCursorError):
        await store.load_threads(10, thread.id, "desc", bob)

    # Alice's data is untouched by every attempt.
    assert (await store.load_thread(thread.id, alice)).title == "alice's"
    page = await store.load_thread_items(thread.id, None, 10, "asc", alice)
    assert texts(page) == ["m0", "m1"]
    assert (await store.load_attachment(attachment.id, alice)).name == attachment.name
    assert await store.load_feedback(thread.id, alice) == {items[0].id: "positive"}
