"""Shared fixtures: a real Postgres, a database created for this test session and dropped after.

The server is ``WORKBENCH_TEST_ADMIN_URL`` when set, else the local one on 127.0.0.1:5432; if
neither answers, an embedded Postgres is started for the session.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from workbench.config import Settings
from workbench.context import RequestContext
from workbench.store import EmbeddedPostgres, PostgresStore, open_pool
from workbench.store.migrations import apply_migrations

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    configured = os.environ.get("WORKBENCH_TEST_ADMIN_URL")
    if configured:
        yield configured
    elif _reachable(LOCAL_SERVER):
        yield LOCAL_SERVER
    else:
        with tempfile.TemporaryDirectory(prefix="workbench-test-pg-") as tmp:
            embedded = EmbeddedPostgres(Path(tmp) / "postgres")
            try:
                yield embedded.start()
            finally:
                embedded.stop()


def create_database(admin_url: str) -> str:
    name = f"workbench_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(admin_url, dbname=name)


def drop_database(admin_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
async def database_url(admin_url: str) -> AsyncIterator[str]:
    url = create_database(admin_url)
    try:
        await apply_migrations(url)
        yield url
    finally:
        drop_database(admin_url, url)


@pytest.fixture
def fresh_database(admin_url: str) -> Iterator[str]:
    """An empty database (no migrations) for tests of the migration runner itself."""
    url = create_database(admin_url)
    try:
        yield url
    finally:
        drop_database(admin_url, url)


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    async with open_pool(database_url, Settings(database_url=database_url)) as pool:
        yield pool


@pytest.fixture(scope="session")
def store(pool: AsyncConnectionPool) -> PostgresStore:
    return PostgresStore(pool)


def new_user() -> RequestContext:
    return RequestContext(user_id=f"user_{secrets.token_hex(4)}")


@pytest.fixture
def alice() -> RequestContext:
    return new_user()


@pytest.fixture
def bob() -> RequestContext:
    return new_user()
