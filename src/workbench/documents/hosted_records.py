"""What Postgres knows of the OpenAI mirror (migration 0005): stores, files, deletions owed.

Every query is scoped by owner. The rule that makes orphans impossible lives here: an id
OpenAI handed out is always written to a row, linked to its thread or attachment when that
still exists and no concurrent turn linked one first, and otherwise unlinked, which is how a
deletion owed to OpenAI is recorded (``hosted_deletions`` carries it out).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool

from workbench.documents.formats import kind_of
from workbench.text import storable


@dataclass
class HostedDocument:
    """One document attachment of a thread, and where its copy at OpenAI stands."""

    attachment_id: str
    name: str
    mime_type: str
    size: int
    file_id: str | None  # the OpenAI file, once uploaded
    vector_store_id: str | None  # the store it was last attached to
    status: str | None  # OpenAI's indexing there: in_progress, completed, failed, cancelled
    note: str | None  # why OpenAI could not index it

    def indexed_in(self, store: str) -> bool:
        return self.vector_store_id == store and self.status == "completed"

    def refused_in(self, store: str) -> bool:
        """OpenAI tried and could not index it there: sending it again would fail again."""
        return self.vector_store_id == store and self.status in {"failed", "cancelled"}


class ThreadGoneError(LookupError):
    """The thread or the attachment was deleted while its copy at OpenAI was being made."""


class HostedRecords:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def documents(self, owner: str, thread_id: str) -> list[HostedDocument]:
        """The thread's document attachments, oldest first, with their OpenAI files if any."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                """
                SELECT a.id, a.data->>'name', a.data->>'mime_type',
                       coalesce((a.data->'metadata'->>'size')::bigint, 0),
                       f.id, f.vector_store_id, f.status, f.note
                FROM attachments a LEFT JOIN openai_files f ON f.attachment_id = a.id
                WHERE a.thread_id = %s AND a.owner = %s
                ORDER BY a.created_at, a.id
                """,
                (thread_id, owner),
            )
            rows = await cursor.fetchall()
        documents = [HostedDocument(*row) for row in rows]
        return [d for d in documents if kind_of(d.name or "", d.mime_type or "") is not None]

    async def store_of(self, owner: str, thread_id: str) -> str | None:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT id FROM openai_vector_stores WHERE thread_id = %s AND owner = %s",
                (thread_id, owner),
            )
            row = await cursor.fetchone()
        return None if row is None else str(row[0])

    async def record_store(self, store_id: str, owner: str, thread_id: str) -> str:
        """Record a store just created for the thread; the thread's store (ours, or the one a
        concurrent turn recorded first, ours then being owed for deletion)."""
        async with self.pool.connection() as conn:
            if await _link(conn, "openai_vector_stores", "thread_id", store_id, owner, thread_id):
                return store_id
            cursor = await conn.execute(
                "SELECT id FROM openai_vector_stores WHERE thread_id = %s AND owner = %s",
                (thread_id, owner),
            )
            row = await cursor.fetchone()
        if row is None:
            raise ThreadGoneError("the conversation was deleted")
        return str(row[0])

    async def set_aside_store(self, store_id: str, owner: str) -> None:
        """The store expired or is gone at OpenAI: owed for deletion, no longer the thread's."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE openai_vector_stores SET thread_id = NULL WHERE id = %s AND owner = %s",
                (store_id, owner),
            )

    async def record_file(self, file_id: str, owner: str, attachment_id: str) -> str:
        """Record a file just uploaded for the attachment; the attachment's file (as above)."""
        async with self.pool.connection() as conn:
            if await _link(conn, "openai_files", "attachment_id", file_id, owner, attachment_id):
                return file_id
            cursor = await conn.execute(
                "SELECT id FROM openai_files WHERE attachment_id = %s AND owner = %s",
                (attachment_id, owner),
            )
            row = await cursor.fetchone()
        if row is None:
            raise ThreadGoneError("the attachment was deleted")
        return str(row[0])

    async def forget_file(self, file_id: str, owner: str) -> None:
        """OpenAI lost the file: owed for deletion (done at once), another is uploaded."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE openai_files SET attachment_id = NULL WHERE id = %s AND owner = %s",
                (file_id, owner),
            )

    async def file_indexing(
        self, file_id: str, owner: str, store_id: str, status: str, note: str | None
    ) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                """
                UPDATE openai_files SET vector_store_id = %s, status = %s, note = %s
                WHERE id = %s AND owner = %s
                """,
                (store_id, status, storable(note) if note else None, file_id, owner),
            )


async def _link(
    conn: AsyncConnection, table: str, column: str, openai_id: str, owner: str, linked_to: str
) -> bool:
    """Write ``openai_id`` linked to ``linked_to`` if that still exists and has none yet,
    else unlinked (owed for deletion); whether it was linked."""
    # The table and column names are this module's constants, never input.
    linked = f"""
        INSERT INTO {table} (id, owner, {column}) VALUES (%s, %s, %s)
        ON CONFLICT ({column}) DO NOTHING RETURNING 1
    """
    try:
        cursor = await conn.execute(linked.encode(), (openai_id, owner, linked_to))
        if await cursor.fetchone() is not None:
            return True
    except errors.ForeignKeyViolation:
        pass  # deleted meanwhile
    unlinked = f"INSERT INTO {table} (id, owner) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING"
    await conn.execute(unlinked.encode(), (openai_id, owner))
    return False
