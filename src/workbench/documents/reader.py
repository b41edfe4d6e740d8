"""Reading a document through the extraction subprocess, from the server's side.

``read_document`` starts ``python -m workbench.documents.extract`` on a file, yields what it
reports as it reports it, and turns every way it can end — a clean refusal, a crash, the
memory limit, the CPU limit, the wall-clock limit — into a ``DocumentError`` with a sentence
for a person. The process is killed if the reader stops early (a Stop, a shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import Settings
from workbench.documents.chunks import Chunk
from workbench.documents.formats import DocumentError

_LINE_LIMIT = 64 * 2**20  # one section's chunks; a page of text is far below this


@dataclass
class Opened:
    pages: int | None  # pages to read
    total: int | None  # pages in the file


@dataclass
class Read:
    chunks: list[Chunk]
    pages_read: int


@dataclass(frozen=True)
class ReadLimits:
    max_pages: int
    max_unpacked_bytes: int
    memory_bytes: int
    cpu_seconds: int
    wall_seconds: float
    environment: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: Settings) -> ReadLimits:
        return cls(
            max_pages=settings.documents_max_pages,
            max_unpacked_bytes=settings.documents_max_unpacked_mb * 2**20,
            memory_bytes=settings.documents_memory_mb * 2**20,
            cpu_seconds=max(1, int(settings.documents_timeout)),
            wall_seconds=settings.documents_timeout,
        )


async def read_document(
    path: Path, kind: str, limits: ReadLimits
) -> AsyncGenerator[Opened | Read, None]:
    options = {
        "max_pages": limits.max_pages, "max_unpacked_bytes": limits.max_unpacked_bytes,
        "memory_bytes": limits.memory_bytes, "cpu_seconds": limits.cpu_seconds,
    }  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-B", "-m", "workbench.documents.extract",
        str(path), kind, json.dumps(options),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, limit=_LINE_LIMIT, start_new_session=True,
        env=_environment(limits),
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    deadline = time.monotonic() + limits.wall_seconds
    finished = False
    try:
        while True:
            message = await _next_message(process.stdout, deadline, limits)
            if message is None or "done" in message:
                break
            if "error" in message:
                raise DocumentError(str(message["error"]))
            if "pages" in message:
                yield Opened(message["pages"], message.get("total"))
            elif "chunks" in message:
                chunks = [Chunk(text, page, heading) for text, page, heading in message["chunks"]]
                yield Read(chunks, int(message.get("read") or 0))
        status = await process.wait()
        finished = True
        if status != 0 or message is None:
            raise _failure(status, await process.stderr.read(), limits)
    finally:
        if not finished:
            _kill(process)
            await process.wait()


async def _next_message(
    stdout: asyncio.StreamReader, deadline: float, limits: ReadLimits
) -> dict[str, Any] | None:
    try:
        line = await asyncio.wait_for(stdout.readline(), max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        raise DocumentError(
            f"reading it took longer than {_seconds(limits.wall_seconds)}"
        ) from None
    except ValueError:  # a line over the stream limit
        raise DocumentError("it produced more text in one place than can be indexed") from None
    if not line:
        return None
    message: dict[str, Any] = json.loads(line)
    return message


def _failure(status: int, stderr: bytes, limits: ReadLimits) -> DocumentError:
    if status in (-signal.SIGXCPU, -signal.SIGKILL):
        return DocumentError(f"reading it took more than {_seconds(limits.cpu_seconds)} of CPU")
    if b"MemoryError" in stderr or status == -signal.SIGSEGV:
        return DocumentError(f"reading it needs more than {limits.memory_bytes // 2**20} MiB")
    return DocumentError(f"its reader stopped unexpectedly (exit status {status})")


def _seconds(value: float) -> str:
    return f"{value:g} second" + ("" if value == 1 else "s")


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _environment(limits: ReadLimits) -> dict[str, str]:
    # Only what Python needs to find the package: none of the server's secrets.
    keep = {name: os.environ[name] for name in ("PATH", "PYTHONPATH", "LANG") if name in os.environ}
    return {**keep, "MALLOC_ARENA_MAX": "2", "PYTHONDONTWRITEBYTECODE": "1", **limits.environment}
