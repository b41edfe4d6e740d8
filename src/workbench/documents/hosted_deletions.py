"""The deletions owed to OpenAI, carried out in the background until each is done.

A vector store whose thread is gone, and a file whose attachment is gone, are rows left
unlinked (migration 0005): the deletion that unlinked them and the record of what is owed are
one transaction, so a crash in between loses nothing. This worker deletes each at OpenAI,
then its row.

Invariants:

* Multi-process safe: a worker claims due rows (``FOR UPDATE SKIP LOCKED``) by pushing their
  ``retry_at`` a lease ahead, so no two processes send the same deletion at once, and a
  process that died mid-claim is replaced when the lease runs out.
* A failure (OpenAI unreachable, an error status) leaves the row, with ``attempts`` counted,
  ``delete_error`` saying why (logged too), and the next try ``WORKBENCH_OPENAI_DELETE_RETRY``
  seconds later, doubling each time up to an hour. Gone already (404) is done.
* Deleting a file removes it from every vector store too (OpenAI's files API says so).
* The worker runs wherever the OpenAI provider is configured, whatever
  ``WORKBENCH_FILE_SEARCH`` says now: deletions owed from an earlier setting are still paid.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from openai import APIConnectionError, APIStatusError, AsyncOpenAI, NotFoundError
from psycopg_pool import AsyncConnectionPool

from workbench.documents.hosted import describe

logger = logging.getLogger(__name__)

_LEASE_SECONDS = 60.0  # more than a deletion request may take (see _REQUEST_TIMEOUT)
_REQUEST_TIMEOUT = 20.0
_MAX_DELAY = 3600.0
_IDLE_POLL = 60.0  # seconds between looks when nothing is due: other processes owe too
_BATCH = 20


@dataclass(frozen=True)
class _Kind:
    table: str
    link: str  # the column a deletion unlinks
    what: str


_STORES = _Kind("openai_vector_stores", "thread_id", "vector store")
_FILES = _Kind("openai_files", "attachment_id", "file")


class OpenAIDeletions:
    def __init__(self, pool: AsyncConnectionPool, client: AsyncOpenAI, first_retry: float) -> None:
        self._pool = pool
        # The worker retries on its own schedule: one attempt per request.
        self._client = client.with_options(timeout=_REQUEST_TIMEOUT, max_retries=0)
        self._first_retry = first_retry
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._deleters: dict[_Kind, Callable[[str], Awaitable[Any]]] = {
            _STORES: self._client.vector_stores.delete,
            _FILES: self._client.files.delete,
        }

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def owed(self, deleted: object) -> None:
        """A thread or an attachment was just deleted: pay what it owes now, not at the next
        look (the hook ``PostgresStore`` calls)."""
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.sweep()
                pause = await self._next_due()
            except Exception:
                logger.exception("paying the deletions owed to OpenAI failed; trying again")
                pause = _IDLE_POLL
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=pause)

    async def sweep(self) -> None:
        """Delete at OpenAI everything owed and due now."""
        for kind in (_STORES, _FILES):
            while claimed := await self._claim(kind):
                await asyncio.gather(*(self._delete(kind, *row) for row in claimed))

    async def _claim(self, kind: _Kind) -> list[tuple[str, int]]:
        query = f"""
            UPDATE {kind.table} SET retry_at = now() + make_interval(secs => %s)
            WHERE id IN (
                SELECT id FROM {kind.table}
                WHERE {kind.link} IS NULL AND retry_at <= now()
                ORDER BY retry_at LIMIT %s FOR UPDATE SKIP LOCKED
            )
            RETURNING id, attempts
        """
        async with self._pool.connection() as conn:
            cursor = await conn.execute(query.encode(), (_LEASE_SECONDS, _BATCH))
            return [(str(row[0]), int(row[1])) for row in await cursor.fetchall()]

    async def _delete(self, kind: _Kind, openai_id: str, attempts: int) -> None:
        try:
            await self._deleters[kind](openai_id)
        except NotFoundError:
            pass  # gone already
        except (APIConnectionError, APIStatusError) as error:
            await self._failed(kind, openai_id, attempts, describe(error))
            return
        async with self._pool.connection() as conn:
            await conn.execute(f"DELETE FROM {kind.table} WHERE id = %s".encode(), (openai_id,))
        logger.info("deleted OpenAI %s %s", kind.what, openai_id)

    async def _failed(self, kind: _Kind, openai_id: str, attempts: int, reason: str) -> None:
        delay = min(self._first_retry * 2**attempts, _MAX_DELAY)
        logger.warning("could not delete OpenAI %s %s (%s); trying again in %.0f s",
                       kind.what, openai_id, reason, delay)  # fmt: skip
        query = f"""
            UPDATE {kind.table}
            SET attempts = attempts + 1, retry_at = now() + make_interval(secs => %s),
                delete_error = %s
            WHERE id = %s
        """
        async with self._pool.connection() as conn:
            await conn.execute(query.encode(), (delay, reason, openai_id))

    async def _next_due(self) -> float:
        """Seconds until the next deletion owed is due (at most the idle poll)."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                """
                SELECT extract(epoch FROM min(retry_at) - now()) FROM (
                    SELECT retry_at FROM openai_vector_stores WHERE thread_id IS NULL
                    UNION ALL SELECT retry_at FROM openai_files WHERE attachment_id IS NULL
                ) owed
                """
            )
            row = await cursor.fetchone()
        due = row[0] if row is not None else None
        # Not quite zero: a row due now may be another process's, mid-claim.
        return _IDLE_POLL if due is None else min(_IDLE_POLL, max(0.05, float(due)))
