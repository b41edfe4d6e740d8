"""The migration runner against real, freshly created databases."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import psycopg
import pytest

from workbench.store.migrations import (
    MigrationError,
    apply_migrations,
    load_migrations,
    migrations_dir,
    pending_migrations,
)


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {row[0] for row in rows}


def recorded(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    return [row[0] for row in rows]


async def test_fresh_database_then_rerun_is_a_no_op(fresh_database: str) -> None:
    every_version = [m.version for m in load_migrations()]
    assert await pending_migrations(fresh_database) == every_version

    assert await apply_migrations(fresh_database) == every_version
    assert {"threads", "thread_items", "attachments", "item_feedback"} <= tables(fresh_database)
    assert recorded(fresh_database) == every_version

    assert await apply_migrations(fresh_database) == []
    assert recorded(fresh_database) == every_version
    assert await pending_migrations(fresh_database) == []


async def test_concurrent_runners_apply_each_migration_once(fresh_database: str) -> None:
    results = await asyncio.gather(*(apply_migrations(fresh_database) for _ in range(4)))
    every_version = [m.version for m in load_migrations()]
    assert sorted(results, key=len) == [[], [], [], every_version]
    assert recorded(fresh_database) == every_version


async def test_concurrent_processes(fresh_database: str) -> None:
    """Two real processes running `workbench migrate` at once."""
    env = {"DATABASE_URL": fresh_database, "PATH": "/usr/bin:/bin"}
    runs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "workbench",
            "migrate",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(2)
    ]
    outputs = await asyncio.gather(*(run.communicate() for run in runs))
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert recorded(fresh_database) == [m.version for m in load_migrations()]


async def test_later_migration_applies_on_top(fresh_database: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), directory)
    await apply_migrations(fresh_database, directory)
    (directory / "9000_add_column.sql").write_text("ALTER TABLE threads ADD COLUMN extra int;")
    assert await apply_migrations(fresh_database, directory) == ["9000"]
    assert recorded(fresh_database)[-1] == "9000"


async def test_failed_migration_rolls_back(fresh_database: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), directory)
    (directory / "9000_broken.sql").write_text(
        "CREATE TABLE half_done (id int); SELECT * FROM no_such_table;"
    )
    with pytest.raises(psycopg.errors.UndefinedTable):
        await apply_migrations(fresh_database, directory)
    assert "half_done" not in tables(fresh_database)
    assert "9000" not in recorded(fresh_database)


async def test_edited_migration_is_refused(fresh_database: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), directory)
    await apply_migrations(fresh_database, directory)
    first = sorted(directory.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="edited after it was applied"):
        await apply_migrations(fresh_database, directory)


def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "add_things.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        load_migrations(tmp_path)
