"""Plain SQL migrations: ``migrations/NNNN_name.sql``, applied in order, recorded in a table.

Each file runs in its own transaction. A Postgres advisory lock serialises runners, so two
processes starting at once apply every migration exactly once. A released migration must
never change: its checksum is recorded and a mismatch stops the run.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

logger = logging.getLogger(__name__)

# An arbitrary constant naming "the Workbench migration lock" among advisory locks.
_ADVISORY_LOCK_KEY = 0x776F726B62656E63  # "workbenc"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_dir() -> Path:
    """The packaged copy in a wheel, else the repository's ``migrations/``."""
    packaged = Path(__file__).resolve().parent.parent / "migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "migrations"


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(match[1], match[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number in {directory}")
    if not found:
        raise MigrationError(f"no migrations found in {directory}")
    return found


async def apply_migrations(conninfo: str, directory: Path | None = None) -> list[str]:
    """Apply pending migrations; return the versions applied by this call."""
    migrations = load_migrations(directory)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,))
        try:
            return await _apply_locked(conn, migrations)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_KEY,))


async def pending_migrations(conninfo: str, directory: Path | None = None) -> list[str]:
    """Versions not yet applied (for readiness checks)."""
    migrations = load_migrations(directory)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        applied = await _applied_checksums(conn)
    return [m.version for m in migrations if m.version not in applied]


async def _apply_locked(conn: psycopg.AsyncConnection, migrations: list[Migration]) -> list[str]:
    await conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version     text PRIMARY KEY,
            name        text NOT NULL,
            checksum    text NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    applied = await _applied_checksums(conn)
    newly_applied: list[str] = []
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is not None:
            if recorded != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version}_{migration.name} was edited after it was "
                    "applied; add a new migration instead"
                )
            continue
        async with conn.transaction():
            await conn.execute(migration.sql.encode())
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
        logger.info("applied migration %s_%s", migration.version, migration.name)
        newly_applied.append(migration.version)
    return newly_applied


async def _applied_checksums(conn: psycopg.AsyncConnection) -> dict[str, str]:
    exists = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = await exists.fetchone()
    if not row or not row[0]:
        return {}
    cursor = await conn.execute("SELECT version, checksum FROM schema_migrations")
    return {version: checksum for version, checksum in await cursor.fetchall()}
