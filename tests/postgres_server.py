"""A Postgres to test and benchmark against, and throwaway databases on it.

The server is ``WORKBENCH_TEST_ADMIN_URL`` when set, else the local one on 127.0.0.1:5432;
if neither answers, an embedded Postgres is started under a temporary directory.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from workbench.store import EmbeddedPostgres

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@contextmanager
def admin_server() -> Iterator[str]:
    configured = os.environ.get("WORKBENCH_TEST_ADMIN_URL")
    if configured:
        yield configured
    elif _reachable(LOCAL_SERVER):
        yield LOCAL_SERVER
    else:
        with embedded_server("workbench-test-pg-") as url:
            yield url


@contextmanager
def embedded_server(prefix: str) -> Iterator[str]:
    """An embedded Postgres 18 (it has pgvector) under a temporary directory named
    ``prefix…``, stopped and removed at the end."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        embedded = EmbeddedPostgres(Path(tmp) / "postgres")
        try:
            yield embedded.start()
        finally:
            embedded.stop()


def create_database(admin_url: str, prefix: str = "workbench_test") -> str:
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(admin_url, dbname=name)


def drop_database(admin_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name)))
        )


@contextmanager
def throwaway_database(admin_url: str, prefix: str = "workbench_test") -> Iterator[str]:
    url = create_database(admin_url, prefix)
    try:
        yield url
    finally:
        drop_database(admin_url, url)
