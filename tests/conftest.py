"""Shared fixtures: a real Postgres, a database created for this test session and dropped after."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from tests.live import LiveServer, ScriptedOpenAI, provider_settings, running, started
from tests.postgres_server import admin_server, throwaway_database
from workbench.config import Settings
from workbench.context import RequestContext
from workbench.store import PostgresStore, open_pool
from workbench.store.migrations import apply_migrations


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    with admin_server() as url:
        yield url


@pytest.fixture(scope="session")
async def database_url(admin_url: str) -> AsyncIterator[str]:
    with throwaway_database(admin_url) as url:
        await apply_migrations(url)
        yield url


@pytest.fixture
def fresh_database(admin_url: str) -> Iterator[str]:
    """An empty database (no migrations) for tests of the migration runner itself."""
    with throwaway_database(admin_url) as url:
        yield url


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


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings for a live server on the session's test database (demo model, auth none)."""
    # No spare kernels: most tests never run code, and each spare is a process to start.
    return Settings(
        database_url=database_url, data_dir=tmp_path / "data", kernel_pool_size=0, _env_file=None
    )


@pytest.fixture
def live(settings: Settings) -> Iterator[LiveServer]:
    yield from started(LiveServer(settings))


@pytest.fixture
def scripted_openai() -> Iterator[ScriptedOpenAI]:
    yield from started(ScriptedOpenAI())


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as client:
        yield client


@pytest.fixture
def provider(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI
) -> Iterator[LiveServer]:
    """A live server whose Responses provider is the scripted OpenAI API."""
    settings = provider_settings(database_url, tmp_path / "data", scripted_openai)
    with running(LiveServer(settings)) as live:
        yield live
