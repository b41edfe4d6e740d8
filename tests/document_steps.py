"""Steps of the document-search tests: uploading files, waiting for the background reader,
looking at the index in Postgres, and at what the model was given back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from chatkit.types import AssistantMessageItem, CustomTask, FileSource, ThreadItem
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from tests.live import (
    LiveServer,
    ScriptedOpenAI,
    provider_settings,
    workflow_tasks,
)
from workbench.agent.response_events import FunctionCall

READ_WITHIN = 30.0  # seconds a test waits for its documents to be read


# -- driving the server -------------------------------------------------------------------


async def upload(
    http: httpx.AsyncClient, live: LiveServer, name: str, data: bytes, mime_type: str,
    user: str | None = None,
) -> str:  # fmt: skip
    """Upload a file directly (``POST /files/upload``); the attachment's id."""
    headers = {"X-Forwarded-User": user} if user else {}
    response = await http.post(
        live.base + "/files/upload", files={"file": (name, data, mime_type)}, headers=headers
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def attaching(body: dict[str, Any], *attachment_ids: str) -> dict[str, Any]:
    body["params"]["input"]["attachments"] = list(attachment_ids)
    return body


def no_errors(events: list[Any]) -> None:
    assert [e for e in events if e.type == "error"] == []


async def settled(
    pool: AsyncConnectionPool, thread_id: str, within: float = READ_WITHIN
) -> dict[str, dict[str, Any]]:
    """The thread's documents by name, once none is queued or being read."""
    deadline = time.monotonic() + within
    while True:
        found = await thread_documents(pool, thread_id)
        if all(d["status"] not in {"queued", "reading"} for d in found.values()):
            return found
        assert time.monotonic() < deadline, f"still reading after {within:g} s: {found}"
        await asyncio.sleep(0.05)


async def thread_documents(pool: AsyncConnectionPool, thread_id: str) -> dict[str, dict[str, Any]]:
    rows = await query(
        pool,
        "SELECT id, name, owner, status, pages, pages_total, pages_done, chunks, "
        "language::text AS language, note, same_as, sha256 FROM documents "
        "WHERE thread_id = %s ORDER BY created_at, id",
        thread_id,
    )
    return {row["name"]: row for row in rows}


async def chunks_of(pool: AsyncConnectionPool, document_id: str) -> list[dict[str, Any]]:
    return await query(
        pool,
        "SELECT seq, owner, thread_id, page, heading, body, language::text AS language "
        "FROM document_chunks WHERE document_id = %s ORDER BY seq",
        document_id,
    )


async def query(pool: AsyncConnectionPool, sql: str, *params: Any) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(sql, params)
        return await cursor.fetchall()


def search_call(call_id: str, query: str, file: str | None = None) -> FunctionCall:
    arguments: dict[str, str] = {"query": query}
    if file is not None:
        arguments["file"] = file
    return FunctionCall("search_files", json.dumps(arguments), call_id=call_id)


def outputs(body: dict[str, Any]) -> dict[str, str]:
    """What the model was given back from each tool call in this request, by call id."""
    return {
        str(entry["call_id"]): str(entry["output"])
        for entry in body["input"]
        if entry.get("type") == "function_call_output"
    }


def messages(items: list[ThreadItem]) -> list[AssistantMessageItem]:
    return [item for item in items if isinstance(item, AssistantMessageItem)]


def file_sources(message: AssistantMessageItem) -> list[tuple[FileSource, int | None]]:
    return [
        (a.source, a.index)
        for part in message.content
        for a in part.annotations
        if isinstance(a.source, FileSource)
    ]


def reading_tasks(items: list[ThreadItem]) -> dict[str, CustomTask]:
    """The reading tasks of a thread, by their final title."""
    return {t.title or "": t for t in workflow_tasks(items) if isinstance(t, CustomTask)}


def scripted_server(
    database_url: str, data_dir: Path, scripted: ScriptedOpenAI, **overrides: Any
) -> LiveServer:
    return LiveServer(provider_settings(database_url, data_dir, scripted, **overrides))


async def healthy(http: httpx.AsyncClient, live: LiveServer) -> None:
    response = await http.get(live.base + "/healthz")
    assert response.status_code == 200, response.text


def reader_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.name.startswith("workbench.documents") and r.levelno >= logging.ERROR
    ]  # fmt: skip


async def until(check: Any, within: float = READ_WITHIN) -> Any:
    """Poll ``check`` (async, returning a value or None) until it returns a value."""
    deadline = time.monotonic() + within
    while (value := await check()) is None:
        assert time.monotonic() < deadline, f"condition not met within {within:g} s"
        await asyncio.sleep(0.05)
    return value
