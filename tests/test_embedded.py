"""The zero-setup default: an embedded Postgres under the data dir when DATABASE_URL is unset."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import psutil
from chatkit.types import ThreadMetadata

from workbench.config import Settings
from workbench.context import RequestContext
from workbench.store import PostgresStore, open_database


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if process.info["name"] == "postgres" and str(data_dir) in cmdline:
            found.append(process)
    return found


async def test_embedded_starts_keeps_data_and_stops(tmp_path: Path) -> None:
    settings = Settings(database_url=None, data_dir=tmp_path / "data")
    user = RequestContext("embedded-user")

    async with open_database(settings) as database:
        assert database.embedded
        assert (settings.embedded_postgres_dir / "PG_VERSION").exists()
        assert postgres_processes(settings.embedded_postgres_dir)
        await PostgresStore(database.pool).save_thread(
            ThreadMetadata(id="thr_persisted", title="kept", created_at=datetime.now()), user
        )
    assert not postgres_processes(settings.embedded_postgres_dir), "server left running"

    async with open_database(settings) as database:
        thread = await PostgresStore(database.pool).load_thread("thr_persisted", user)
        assert thread.title == "kept"
    assert not postgres_processes(settings.embedded_postgres_dir)


async def test_database_url_never_starts_a_server(tmp_path: Path, database_url: str) -> None:
    settings = Settings(database_url=database_url, data_dir=tmp_path / "data")
    async with open_database(settings) as database:
        assert not database.embedded and database.url == database_url
    assert not settings.embedded_postgres_dir.exists()


def test_settings_read_database_url_from_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.example/workbench")
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "rel" / ".." / "d"))
    settings = Settings()
    assert settings.database_url == "postgresql://db.example/workbench"
    assert settings.data_dir == tmp_path / "d"
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORKBENCH_DATA_DIR")
    assert Settings().database_url is None
    assert Settings().data_dir == tmp_path / "data"
