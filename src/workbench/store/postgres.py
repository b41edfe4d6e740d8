"""The ChatKit ``Store`` on Postgres.

Rules every method follows:

* Rows carry their owner and every statement filters on the request context's user id. A
  thread, item or attachment of another user is ``NotFoundError``: never read, never written.
* Items, threads and attachments are stored as JSONB exactly as the SDK dumps them and are
  loaded back through the SDK's own type adapters; the other columns exist to scope and sort.
* Pages are keyset pages over ``(created_at, seq)`` for threads and ``seq`` for items. The
  ``after`` cursor we hand out encodes that position, so it stays valid when the row it was
  taken from is deleted. A plain row id is accepted too, as long as the row still exists.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from chatkit.store import _ID_PREFIXES, NotFoundError, Store, StoreItemType
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import TypeAdapter

from workbench.context import RequestContext
from workbench.store.ids import time_ordered_id
from workbench.text import storable_json

logger = logging.getLogger(__name__)

_ITEM = TypeAdapter[ThreadItem](ThreadItem)
_ATTACHMENT = TypeAdapter[Attachment](Attachment)
_THREAD_FIELDS = set(ThreadMetadata.model_fields)

T = TypeVar("T")


class ItemAlreadyExistsError(ValueError):
    """``add_thread_item`` was given an id the thread already holds."""


class InvalidCursorError(ValueError):
    """An ``after`` value that is neither our cursor nor the id of a visible row."""


class InvalidOrderError(ValueError):
    """``order`` other than ``asc`` or ``desc``."""


@dataclass(frozen=True)
class DeletedThread:
    """What a thread deletion removed, for hooks that clean up outside the database."""

    thread_id: str
    user_id: str
    attachment_ids: list[str]


ThreadDeletionHook = Callable[[DeletedThread], Awaitable[None]]
AttachmentDeletionHook = Callable[[str], Awaitable[None]]


class PostgresStore(Store[RequestContext]):
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._thread_deletion_hooks: list[ThreadDeletionHook] = []
        self._attachment_deletion_hooks: list[AttachmentDeletionHook] = []

    @property
    def pool(self) -> AsyncConnectionPool:
        return self._pool

    # -- ids -------------------------------------------------------------------------------

    def generate_thread_id(self, context: RequestContext) -> str:
        return time_ordered_id(_ID_PREFIXES["thread"])

    def generate_item_id(
        self, item_type: StoreItemType, thread: ThreadMetadata, context: RequestContext
    ) -> str:
        return time_ordered_id(_ID_PREFIXES[item_type])

    # -- threads ---------------------------------------------------------------------------

    async def load_thread(self, thread_id: str, context: RequestContext) -> ThreadMetadata:
        row = await self._fetchone(
            "SELECT data::text FROM threads WHERE id = %s AND owner = %s",
            (thread_id, context.user_id),
        )
        if row is None:
            raise NotFoundError(f"Thread {thread_id} not found")
        return ThreadMetadata.model_validate_json(row[0])

    async def save_thread(self, thread: ThreadMetadata, context: RequestContext) -> None:
        # A `Thread` (metadata plus a page of items) may be passed: keep the metadata only.
        data = thread.model_dump(mode="json", include=_THREAD_FIELDS)
        row = await self._fetchone(
            """
            INSERT INTO threads (id, owner, created_at, data) VALUES (%s, %s, %s, %s)
            ON CONFLICT (id) DO UPDATE
                SET created_at = EXCLUDED.created_at, data = EXCLUDED.data, updated_at = now()
                WHERE threads.owner = EXCLUDED.owner
            RETURNING 1
            """,
            (thread.id, context.user_id, _aware(thread.created_at), Jsonb(storable_json(data))),
        )
        if row is None:
            raise NotFoundError(f"Thread {thread.id} not found")

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: RequestContext
    ) -> Page[ThreadMetadata]:
        direction = _direction(order)
        conditions = ["owner = %(owner)s"]
        params: dict[str, Any] = {"owner": context.user_id, "limit": _page_size(limit) + 1}
        if after is not None:
            params["created_at"], params["seq"] = await self._thread_position(after, context)
            conditions.append(f"(created_at, seq) {direction.compare} (%(created_at)s, %(seq)s)")
        rows = await self._fetchall(
            f"""
            SELECT data::text, created_at, seq FROM threads
            WHERE {" AND ".join(conditions)}
            ORDER BY created_at {direction.sql}, seq {direction.sql}
            LIMIT %(limit)s
            """,
            params,
        )
        threads = [ThreadMetadata.model_validate_json(data) for data, _, _ in rows]
        return _page(threads, rows, limit, lambda row: _encode_cursor(row[1], row[2]))

    async def delete_thread(self, thread_id: str, context: RequestContext) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "SELECT id FROM attachments WHERE thread_id = %s AND owner = %s",
                (thread_id, context.user_id),
            )
            attachment_ids = [row[0] for row in await cursor.fetchall()]
            cursor = await conn.execute(
                "DELETE FROM threads WHERE id = %s AND owner = %s", (thread_id, context.user_id)
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"Thread {thread_id} not found")
        deleted = DeletedThread(thread_id, context.user_id, attachment_ids)
        for hook in self._thread_deletion_hooks:
            try:
                await hook(deleted)
            except Exception:
                # The rows are gone already; whatever a hook leaves behind is collected by
                # that hook's own garbage collection, so one failure must not stop the rest.
                logger.exception("thread deletion hook %r failed for %s", hook, thread_id)

    def on_thread_deleted(self, hook: ThreadDeletionHook) -> None:
        """Register cleanup of what lives outside the database (blobs, workspaces, kernels).

        Hooks run after the deletion has committed, in registration order.
        """
        self._thread_deletion_hooks.append(hook)

    async def owner_of_thread(self, thread_id: str) -> str | None:
        """The thread's owner, for routes whose caller is not a user (signed download URLs).

        Deliberately unscoped: the caller must still prove it may act for that owner (the
        URL's MAC is checked against it) before serving anything.
        """
        row = await self._fetchone("SELECT owner FROM threads WHERE id = %s", (thread_id,))
        return None if row is None else str(row[0])

    # -- items -----------------------------------------------------------------------------

    async def load_thread_items(
        self,
        thread_id: str,
        after: str | None,
        limit: int,
        order: str,
        context: RequestContext,
    ) -> Page[ThreadItem]:
        direction = _direction(order)
        conditions = ["thread_id = %(thread_id)s", "owner = %(owner)s"]
        params: dict[str, Any] = {
            "thread_id": thread_id,
            "owner": context.user_id,
            "limit": _page_size(limit) + 1,
        }
        if after is not None:
            params["seq"] = await self._item_position(thread_id, after, context)
            conditions.append(f"seq {direction.compare} %(seq)s")
        rows = await self._fetchall(
            f"""
            SELECT data::text, seq FROM thread_items
            WHERE {" AND ".join(conditions)}
            ORDER BY seq {direction.sql}
            LIMIT %(limit)s
            """,
            params,
        )
        if not rows:
            await self.load_thread(thread_id, context)  # an unknown thread is not an empty one
        items = [_ITEM.validate_json(data) for data, _ in rows]
        return _page(items, rows, limit, lambda row: _encode_cursor(row[1]))

    async def add_thread_item(
        self, thread_id: str, item: ThreadItem, context: RequestContext
    ) -> None:
        row = await self._write_item(thread_id, item, context, on_conflict="DO NOTHING")
        if row is None:
            await self.load_thread(thread_id, context)
            raise ItemAlreadyExistsError(f"Thread {thread_id} already has an item {item.id}")

    async def save_item(self, thread_id: str, item: ThreadItem, context: RequestContext) -> None:
        row = await self._write_item(
            thread_id,
            item,
            context,
            on_conflict="""DO UPDATE SET type = EXCLUDED.type, created_at = EXCLUDED.created_at,
                                         data = EXCLUDED.data""",
        )
        if row is None:
            raise NotFoundError(f"Thread {thread_id} not found")

    async def load_item(self, thread_id: str, item_id: str, context: RequestContext) -> ThreadItem:
        row = await self._fetchone(
            "SELECT data::text FROM thread_items WHERE thread_id = %s AND id = %s AND owner = %s",
            (thread_id, item_id, context.user_id),
        )
        if row is None:
            raise NotFoundError(f"Item {item_id} not found in thread {thread_id}")
        return _ITEM.validate_json(row[0])

    async def delete_thread_item(
        self, thread_id: str, item_id: str, context: RequestContext
    ) -> None:
        """Idempotent within a visible thread: the SDK also removes items it never saved."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "DELETE FROM thread_items WHERE thread_id = %s AND id = %s AND owner = %s",
                (thread_id, item_id, context.user_id),
            )
            deleted = cursor.rowcount
        if deleted == 0:
            await self.load_thread(thread_id, context)

    # -- attachments -----------------------------------------------------------------------

    async def save_attachment(self, attachment: Attachment, context: RequestContext) -> None:
        row = await self._fetchone(
            """
            INSERT INTO attachments (id, owner, thread_id, data)
            SELECT %(id)s, %(owner)s, %(thread_id)s, %(data)s
            WHERE %(thread_id)s::text IS NULL
               OR EXISTS (SELECT 1 FROM threads WHERE id = %(thread_id)s AND owner = %(owner)s)
            ON CONFLICT (id) DO UPDATE
                SET thread_id = EXCLUDED.thread_id, data = EXCLUDED.data
                WHERE attachments.owner = EXCLUDED.owner
            RETURNING 1
            """,
            {
                "id": attachment.id,
                "owner": context.user_id,
                "thread_id": attachment.thread_id,
                "data": Jsonb(storable_json(attachment.model_dump(mode="json"))),
            },
        )
        if row is None:
            raise NotFoundError(f"Attachment {attachment.id} not found")

    async def owner_of_attachment(self, attachment_id: str) -> str | None:
        """Unscoped, like ``owner_of_thread``: for signed upload and download URLs only."""
        row = await self._fetchone("SELECT owner FROM attachments WHERE id = %s", (attachment_id,))
        return None if row is None else str(row[0])

    async def delete_stale_uploads(self, older_than: timedelta) -> list[str]:
        """Remove attachments never attached to a message; return their ids (for the blobs)."""
        rows = await self._fetchall(
            """
            DELETE FROM attachments
            WHERE thread_id IS NULL AND created_at < now() - %s
            RETURNING id
            """,
            (older_than,),
        )
        return [row[0] for row in rows]

    async def load_attachment(self, attachment_id: str, context: RequestContext) -> Attachment:
        row = await self._fetchone(
            "SELECT data::text FROM attachments WHERE id = %s AND owner = %s",
            (attachment_id, context.user_id),
        )
        if row is None:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        return _ATTACHMENT.validate_json(row[0])

    async def delete_attachment(self, attachment_id: str, context: RequestContext) -> None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "DELETE FROM attachments WHERE id = %s AND owner = %s",
                (attachment_id, context.user_id),
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"Attachment {attachment_id} not found")
        for hook in self._attachment_deletion_hooks:
            try:
                await hook(attachment_id)
            except Exception:  # as for threads: the row is gone, the hook's own GC collects
                logger.exception("attachment deletion hook %r failed for %s", hook, attachment_id)

    def on_attachment_deleted(self, hook: AttachmentDeletionHook) -> None:
        """Register cleanup outside the database, run after an attachment's row is deleted
        (its thread's deletion runs the thread hooks instead)."""
        self._attachment_deletion_hooks.append(hook)

    # -- feedback --------------------------------------------------------------------------

    async def save_feedback(
        self,
        thread_id: str,
        item_ids: list[str],
        kind: Literal["positive", "negative"],
        context: RequestContext,
    ) -> None:
        """Record (or change) the user's feedback on items of a visible thread."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                """
                INSERT INTO item_feedback (thread_id, item_id, owner, kind)
                SELECT thread_id, id, owner, %(kind)s FROM thread_items
                WHERE thread_id = %(thread_id)s AND owner = %(owner)s AND id = ANY(%(ids)s)
                ON CONFLICT (thread_id, item_id) DO UPDATE
                    SET kind = EXCLUDED.kind, created_at = now()
                """,
                {"thread_id": thread_id, "owner": context.user_id, "ids": item_ids, "kind": kind},
            )
            saved = cursor.rowcount
        if saved != len(set(item_ids)):
            await self.load_thread(thread_id, context)
            raise NotFoundError(f"Some of the items {item_ids} are not in thread {thread_id}")

    async def load_feedback(
        self, thread_id: str, context: RequestContext
    ) -> dict[str, Literal["positive", "negative"]]:
        await self.load_thread(thread_id, context)
        rows = await self._fetchall(
            "SELECT item_id, kind FROM item_feedback WHERE thread_id = %s AND owner = %s",
            (thread_id, context.user_id),
        )
        return {item_id: kind for item_id, kind in rows}

    # -- helpers ---------------------------------------------------------------------------

    async def _write_item(
        self, thread_id: str, item: ThreadItem, context: RequestContext, on_conflict: str
    ) -> tuple[Any, ...] | None:
        if item.thread_id != thread_id:
            raise ValueError(f"Item {item.id} belongs to thread {item.thread_id}, not {thread_id}")
        # Inserting through a SELECT on the owned thread makes the ownership check and the
        # write one statement: no window in which the thread could change hands.
        return await self._fetchone(
            f"""
            INSERT INTO thread_items (thread_id, id, owner, type, created_at, data)
            SELECT id, %(id)s, owner, %(type)s, %(created_at)s, %(data)s
            FROM threads WHERE id = %(thread_id)s AND owner = %(owner)s
            ON CONFLICT (thread_id, id) {on_conflict}
            RETURNING 1
            """,
            {
                "thread_id": thread_id,
                "owner": context.user_id,
                "id": item.id,
                "type": item.type,
                "created_at": _aware(item.created_at),
                "data": Jsonb(storable_json(item.model_dump(mode="json"))),
            },
        )

    async def _thread_position(self, after: str, context: RequestContext) -> tuple[datetime, int]:
        decoded = _decode_cursor(after)
        if decoded is not None and len(decoded) == 2:
            return _EPOCH + timedelta(microseconds=decoded[0]), decoded[1]
        row = await self._fetchone(
            "SELECT created_at, seq FROM threads WHERE id = %s AND owner = %s",
            (after, context.user_id),
        )
        if row is None:
            raise InvalidCursorError(f"after={after!r} is not a cursor from a previous page")
        return row[0], row[1]

    async def _item_position(self, thread_id: str, after: str, context: RequestContext) -> int:
        decoded = _decode_cursor(after)
        if decoded is not None and len(decoded) == 1:
            return decoded[0]
        row = await self._fetchone(
            "SELECT seq FROM thread_items WHERE thread_id = %s AND id = %s AND owner = %s",
            (thread_id, after, context.user_id),
        )
        if row is None:
            await self.load_thread(thread_id, context)
            raise InvalidCursorError(f"after={after!r} is not a cursor from a previous page")
        return int(row[0])

    async def _fetchone(self, query: str, params: Any) -> tuple[Any, ...] | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(query.encode(), params)
            return await cursor.fetchone()

    async def _fetchall(self, query: str, params: Any) -> list[tuple[Any, ...]]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(query.encode(), params)
            return await cursor.fetchall()


@dataclass(frozen=True)
class _Direction:
    sql: str
    compare: str


_DIRECTIONS = {"asc": _Direction("ASC", ">"), "desc": _Direction("DESC", "<")}
_MAX_PAGE_SIZE = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR = re.compile(r"^cur_(\d+)(?:_(\d+))?$")


def _direction(order: str) -> _Direction:
    try:
        return _DIRECTIONS[order]
    except KeyError:
        raise InvalidOrderError(f"order must be 'asc' or 'desc', not {order!r}") from None


def _page_size(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    return min(limit, _MAX_PAGE_SIZE)


def _page(
    data: list[T], rows: list[tuple[Any, ...]], limit: int, cursor: Callable[[tuple[Any, ...]], str]
) -> Page[T]:
    size = _page_size(limit)
    has_more = len(rows) > size
    data = data[:size]
    return Page(data=data, has_more=has_more, after=cursor(rows[len(data) - 1]) if data else None)


def _encode_cursor(*position: datetime | int) -> str:
    parts = [
        str((p - _EPOCH) // timedelta(microseconds=1)) if isinstance(p, datetime) else str(p)
        for p in position
    ]
    return "cur_" + "_".join(parts)


def _decode_cursor(value: str) -> tuple[int, ...] | None:
    match = _CURSOR.match(value)
    if match is None:
        return None
    return tuple(int(group) for group in match.groups() if group is not None)


def _aware(moment: datetime) -> datetime:
    """The SDK stamps items with naive local time; pin it to an instant before storing."""
    return moment if moment.tzinfo is not None else moment.astimezone()
