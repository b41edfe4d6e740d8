"""Persistence: the Postgres ``Store``, its migrations, and the database it runs on."""

from workbench.store.database import Database, EmbeddedPostgres, open_database, open_pool
from workbench.store.postgres import (
    DeletedThread,
    InvalidCursorError,
    ItemAlreadyExistsError,
    PostgresStore,
    ThreadDeletionHook,
)

__all__ = [
    "Database",
    "DeletedThread",
    "EmbeddedPostgres",
    "InvalidCursorError",
    "ItemAlreadyExistsError",
    "PostgresStore",
    "ThreadDeletionHook",
    "open_database",
    "open_pool",
]
