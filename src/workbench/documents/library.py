"""The document set of each thread in Postgres: what is in it, how far it has been read.

Every query is scoped by owner and thread, except the reader's claim, which takes the oldest
document waiting anywhere. Claims are leases (``lease_until``), so any number of server
processes read documents side by side, each document once, and a document whose reader died
is picked up again once its lease ran out. Each claim has its own token (``lease_token``), and
every write of a reader names it: a reader that stalled past its lease while another took the
document over writes nothing more of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, errors
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from workbench.documents.chunks import Chunk
from workbench.store.ids import time_ordered_id
from workbench.text import storable

LEASE_SECONDS = 30
# A reader's write applies only while the claim it names still holds the document.
_OURS = "id = %s AND lease_token = %s AND status = 'reading'"


@dataclass
class DocumentState:
    """One document of a thread, as the tools and the user see it."""

    id: str
    name: str
    kind: str
    status: str  # queued, reading, ready, failed, duplicate
    pages: int | None  # pages to read (None: the format has none)
    pages_total: int | None  # pages in the file (more than ``pages`` when over the limit)
    pages_done: int
    chunks: int
    note: str | None
    same_as: str | None
    attachment_id: str | None
    path: str | None

    @property
    def searchable(self) -> bool:
        return self.chunks > 0

    @property
    def reading(self) -> bool:
        return self.status in {"queued", "reading"}


@dataclass
class Claimed:
    """A document a reader took: everything it needs to read it."""

    id: str
    owner: str
    thread_id: str
    name: str
    kind: str
    attachment_id: str | None
    path: str | None
    token: str  # this claim's: the reader's writes name it


_STATE_COLUMNS = (
    "id, name, kind, status, pages, pages_total, pages_done, chunks, note, same_as, "
    "attachment_id, path"
)


class DocumentLibrary:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    # -- adding ---------------------------------------------------------------------------

    async def add_attachment(
        self, owner: str, thread_id: str, attachment_id: str, name: str, mime_type: str, kind: str
    ) -> str | None:
        """Queue an attachment for reading; its document id, or None if it is in already."""
        row = await self._one(
            """
            INSERT INTO documents (id, owner, thread_id, attachment_id, name, mime_type, kind)
            SELECT %s, %s, %s, %s, %s, %s, %s
            WHERE EXISTS (SELECT 1 FROM attachments WHERE id = %s AND owner = %s)
            ON CONFLICT (thread_id, attachment_id) DO NOTHING
            RETURNING id
            """,
            (time_ordered_id("doc"), owner, thread_id, attachment_id, storable(name),
             storable(mime_type), kind, attachment_id, owner),
        )  # fmt: skip
        return None if row is None else str(row[0])

    async def add_path(
        self, owner: str, thread_id: str, path: str, name: str, mime_type: str, kind: str
    ) -> str:
        """Queue a workspace file for reading (again, if it was read before: it may have
        changed); its document id."""
        row = await self._one(
            """
            INSERT INTO documents (id, owner, thread_id, path, name, mime_type, kind)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (thread_id, path) DO UPDATE
                SET status = 'queued', sha256 = NULL, same_as = NULL, note = NULL,
                    mime_type = EXCLUDED.mime_type, kind = EXCLUDED.kind,
                    lease_until = NULL, updated_at = now()
                WHERE documents.owner = EXCLUDED.owner
                  AND documents.status NOT IN ('queued', 'reading')
            RETURNING id
            """,
            (time_ordered_id("doc"), owner, thread_id, storable(path), storable(name),
             storable(mime_type), kind),
        )  # fmt: skip
        if row is not None:
            # Copies of what the file held are copies no more: each is read as itself.
            await self._one("UPDATE documents SET same_as = NULL WHERE same_as = %s", (row[0],))
            return str(row[0])
        found = await self._one(
            "SELECT id FROM documents WHERE thread_id = %s AND path = %s AND owner = %s",
            (thread_id, storable(path), owner),
        )
        assert found is not None, "a document of another owner in this user's thread"
        return str(found[0])

    # -- what a thread has ----------------------------------------------------------------

    async def thread_documents(self, owner: str, thread_id: str) -> list[DocumentState]:
        return await self._states("thread_id = %s", thread_id, owner)

    async def states(self, owner: str, ids: Sequence[str]) -> list[DocumentState]:
        return await self._states("id = ANY(%s)", list(ids), owner)

    async def _states(self, which: str, value: Any, owner: str) -> list[DocumentState]:
        async with self.pool.connection() as conn:
            cursor = conn.cursor(row_factory=class_row(DocumentState))
            await cursor.execute(
                f"SELECT {_STATE_COLUMNS} FROM documents "
                f"WHERE {which} AND owner = %s ORDER BY created_at, id",
                (value, owner),
            )
            return await cursor.fetchall()

    # -- reading (``documents.indexer``) --------------------------------------------------

    async def claim(self) -> Claimed | None:
        """Take the oldest document waiting to be read (or whose reader's lease ran out)."""
        async with self.pool.connection() as conn:
            cursor = conn.cursor(row_factory=class_row(Claimed))
            await cursor.execute(
                """
                UPDATE documents d
                SET status = 'reading', lease_until = now() + make_interval(secs => %s),
                    lease_token = gen_random_uuid()::text,
                    pages_done = 0, chunks = 0, note = NULL, updated_at = now()
                FROM (
                    SELECT id FROM documents
                    WHERE status = 'queued'
                       OR (status = 'reading' AND lease_until < now())
                       OR (status = 'duplicate' AND same_as IS NULL)
                    ORDER BY created_at
                    LIMIT 1
                    FOR UPDATE SKIP LOCKED
                ) next
                WHERE d.id = next.id
                RETURNING d.id, d.owner, d.thread_id, d.name, d.kind, d.attachment_id, d.path,
                    d.lease_token AS token
                """,
                (LEASE_SECONDS,),
            )
            claimed = await cursor.fetchone()
            if claimed is not None:  # what an earlier, interrupted reading left
                await conn.execute(
                    "DELETE FROM document_chunks WHERE document_id = %s", (claimed.id,)
                )
            return claimed

    async def renew(self, claimed: Claimed) -> bool:
        """Extend the lease; False if the document is no longer ours (deleted, re-queued,
        taken over)."""
        row = await self._one(
            f"""
            UPDATE documents SET lease_until = now() + make_interval(secs => %s)
            WHERE {_OURS} RETURNING 1
            """,
            (LEASE_SECONDS, claimed.id, claimed.token),
        )
        return row is not None

    async def identify(self, claimed: Claimed, sha256: str) -> str | None:
        """Record the document's hash; the id of the thread's document with the same bytes
        (this one then becomes its duplicate and is not read), or None."""
        try:
            await self._one(
                f"UPDATE documents SET sha256 = %s WHERE {_OURS} RETURNING 1",
                (sha256, claimed.id, claimed.token),
            )
        except errors.UniqueViolation:
            row = await self._one(
                """
                UPDATE documents d SET status = 'duplicate', same_as = o.id, note = NULL,
                    lease_until = NULL, updated_at = now()
                FROM documents o
                WHERE d.id = %s AND d.lease_token = %s AND o.thread_id = d.thread_id
                  AND o.sha256 = %s
                RETURNING o.id
                """,
                (claimed.id, claimed.token, sha256),
            )
            return None if row is None else str(row[0])
        return None

    async def opened(self, claimed: Claimed, pages: int | None, pages_total: int | None) -> bool:
        """Record the document's pages; False if it is no longer ours (deleted, taken over)."""
        row = await self._one(
            f"UPDATE documents SET pages = %s, pages_total = %s WHERE {_OURS} RETURNING 1",
            (pages, pages_total, claimed.id, claimed.token),
        )
        return row is not None

    async def add_chunks(
        self, claimed: Claimed, language: str, first: int, chunks: Sequence[Chunk], pages_done: int
    ) -> bool:
        """Index ``chunks`` (numbered from ``first``) and record the progress, in one
        transaction: what the progress says is searchable is searchable. False, and nothing
        indexed, if the document is no longer being read (deleted with its thread or its
        attachment meanwhile)."""
        async with self.pool.connection() as conn, conn.transaction():
            # The row first: its lock makes a deletion wait for this transaction, or this
            # transaction find the row gone.
            cursor = await conn.execute(
                f"""
                UPDATE documents SET pages_done = %s, chunks = %s, language = %s,
                    lease_until = now() + make_interval(secs => %s), updated_at = now()
                WHERE {_OURS}
                RETURNING 1
                """,
                (
                    pages_done,
                    first + len(chunks),
                    language,
                    LEASE_SECONDS,
                    claimed.id,
                    claimed.token,
                ),
            )
            if await cursor.fetchone() is None:
                return False
            await _copy_chunks(conn, claimed, language, first, chunks)
            return True

    async def finish(self, claimed: Claimed, status: str, note: str | None = None) -> None:
        """End the reading. A failed document keeps no hash, and its copies are read as
        themselves: a failure (a timeout under load, say) is not what the same bytes get
        when they are attached again."""
        await self._one(
            f"""
            WITH done AS (
                UPDATE documents SET status = %s, note = %s, lease_until = NULL,
                    sha256 = CASE WHEN %s = 'failed' THEN NULL ELSE sha256 END,
                    updated_at = now()
                WHERE {_OURS} RETURNING id, status
            )
            UPDATE documents SET same_as = NULL
            FROM done WHERE documents.same_as = done.id AND done.status = 'failed'
            """,
            (status, None if note is None else storable(note), status, claimed.id, claimed.token),
        )

    async def _one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchone() if cursor.description else None


async def _copy_chunks(
    conn: AsyncConnection[Any], claimed: Claimed, language: str, first: int,
    chunks: Sequence[Chunk],
) -> None:  # fmt: skip
    async with conn.cursor().copy(
        "COPY document_chunks (document_id, seq, owner, thread_id, page, heading, body, language)"
        " FROM STDIN"
    ) as copy:
        for seq, chunk in enumerate(chunks, start=first):
            await copy.write_row(
                (claimed.id, seq, claimed.owner, claimed.thread_id, chunk.page, chunk.heading,
                 chunk.text, language)
            )  # fmt: skip
