"""Reading a document through the extraction subprocess, from the server's side.

``Extractors.read`` hands a file to a ``python -m workbench.documents.extract`` process, yields
what it reports as it reports it, and turns every way it can end — a clean refusal, a crash,
the memory limit, the CPU limit, the wall-clock limit — into a ``DocumentError`` with a
sentence for a person. The process is killed if the reader stops early (a Stop, a shutdown).

``Extractors`` keeps one such process started ahead (a spare): starting Python and the PDF
engine takes longer than reading a hundred pages, and a reader given a spare does not wait
for it. A spare is used for one document, like any other; the next is started once that
document is done, so its start never competes with the reading. The wall-clock limit runs
from when the process is given its document; its CPU limit counts its start too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from asyncio.subprocess import Process
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import Settings
from workbench.documents.chunks import Chunk
from workbench.documents.formats import DocumentError
from workbench.text import storable

_LINE_LIMIT = 64 * 2**20  # one section's chunks; a page of text is far below this
# glibc's malloc for a process that lives for one document: two arenas, and memory it frees
# kept for the next page (up to 32 MiB) rather than handed back to the kernel after each and
# faulted in again, which cost PDFium a third more CPU time on a text PDF.
_MALLOC = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_TRIM_THRESHOLD_": str(32 * 2**20),
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
}


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


class Extractors:
    """Extraction processes, each reading one document; ``restock`` keeps one started ahead."""

    def __init__(self, limits: ReadLimits) -> None:
        self.limits = limits
        self._spare: Process | None = None
        self._closed = False
        # Starts whose starter was cancelled: finished, and closed, by ``close`` at the latest.
        self._abandoned: set[asyncio.Future[Process]] = set()
        # One restock at a time: two readers done at once would each start a spare, and the
        # first would be forgotten, running, when the second took its place.
        self._restocking = asyncio.Lock()

    async def restock(self) -> None:
        """Start a spare process, unless one is waiting (or these are closed)."""
        async with self._restocking:
            if self._spare is not None and self._spare.returncode is None:
                return
            spare = await self._start()
            if self._closed:  # closed while it started: nobody would close it later
                _kill(spare)
                await spare.wait()
                return
            self._spare = spare

    async def close(self) -> None:
        self._closed = True
        for starting in list(self._abandoned):
            with contextlib.suppress(Exception):
                await starting
            _kill_started(starting)
        spare, self._spare = self._spare, None
        if spare is not None:
            _kill(spare)
            await spare.wait()

    async def read(self, path: Path, kind: str) -> AsyncGenerator[Opened | Read, None]:
        process = await self._take()
        try:
            async for event in _events(process, path, kind, self.limits):
                yield event
        finally:
            if process.returncode is None:  # stopped early, or the process misbehaved
                _kill(process)
                await process.wait()

    async def _take(self) -> Process:
        spare, self._spare = self._spare, None
        if spare is not None and spare.returncode is None:
            return spare
        return await self._start()

    async def _start(self) -> Process:
        """A new extraction process. A start cannot be taken back half-way: cancelled while
        it starts, the process is killed once it has started (by ``close`` at the latest, as
        the event loop may stop before the start is done)."""
        starting = asyncio.ensure_future(_spawn(self.limits))
        try:
            return await asyncio.shield(starting)
        except asyncio.CancelledError:
            self._abandoned.add(starting)
            starting.add_done_callback(self._abandon)
            raise

    def _abandon(self, starting: asyncio.Future[Process]) -> None:
        self._abandoned.discard(starting)
        _kill_started(starting)


def _kill_started(starting: asyncio.Future[Process]) -> None:
    if starting.done() and not starting.cancelled() and starting.exception() is None:
        _kill(starting.result())  # asyncio's child watcher reaps it


async def _spawn(limits: ReadLimits) -> Process:
    options = {
        "max_pages": limits.max_pages, "max_unpacked_bytes": limits.max_unpacked_bytes,
        "memory_bytes": limits.memory_bytes, "cpu_seconds": limits.cpu_seconds,
    }  # fmt: skip
    return await asyncio.create_subprocess_exec(
        sys.executable, "-B", "-m", "workbench.documents.extract", json.dumps(options),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, limit=_LINE_LIMIT, start_new_session=True,
        env=_environment(limits),
    )  # fmt: skip


async def _events(
    process: Process, path: Path, kind: str, limits: ReadLimits
) -> AsyncGenerator[Opened | Read, None]:
    assert process.stdin is not None and process.stdout is not None
    assert process.stderr is not None
    deadline = time.monotonic() + limits.wall_seconds
    with contextlib.suppress(ConnectionError):  # it died: its exit status says how
        process.stdin.write(json.dumps({"path": str(path), "kind": kind}).encode() + b"\n")
        process.stdin.close()
        await process.stdin.wait_closed()
    while True:
        message = await _next_message(process.stdout, deadline, limits)
        if message is None or "done" in message:
            break
        if "error" in message:
            raise DocumentError(str(message["error"]))
        if "pages" in message:
            yield Opened(message["pages"], message.get("total"))
        elif "chunks" in message:
            chunks = [_chunk(row) for row in message["chunks"]]
            yield Read(chunks, int(message.get("read") or 0))
    status = await process.wait()
    if status != 0 or message is None:
        raise _failure(status, await process.stderr.read(), limits)


async def _next_message(
    stdout: asyncio.StreamReader, deadline: float, limits: ReadLimits
) -> dict[str, Any] | None:
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            line = await stdout.readline()
    except TimeoutError:
        raise DocumentError(
            f"reading it took longer than {_seconds(limits.wall_seconds)}"
        ) from None
    except ValueError:  # a line over the stream limit
        raise DocumentError("it produced more text in one place than can be indexed") from None
    if not line:
        return None
    try:
        message: dict[str, Any] = json.loads(line)
    except ValueError:  # not our protocol: something in the process wrote to its stdout
        raise DocumentError("its reader answered garbage (a hostile file?)") from None
    return message


def _failure(status: int, stderr: bytes, limits: ReadLimits) -> DocumentError:
    if status in (-signal.SIGXCPU, -signal.SIGKILL):
        return DocumentError(f"reading it took more than {_seconds(limits.cpu_seconds)} of CPU")
    if b"MemoryError" in stderr or status == -signal.SIGSEGV:
        return DocumentError(f"reading it needs more than {limits.memory_bytes // 2**20} MiB")
    return DocumentError(f"its reader stopped unexpectedly (exit status {status})")


def _chunk(row: Any) -> Chunk:
    """A chunk as the process reported it, checked: the process read a hostile file, and what
    it says goes into Postgres."""
    try:
        text, page, heading = row
    except (TypeError, ValueError):
        raise DocumentError("its reader answered garbage (a hostile file?)") from None
    if not isinstance(text, str) or not isinstance(page, int | None):
        raise DocumentError("its reader answered garbage (a hostile file?)")
    return Chunk(storable(text), page, storable(heading) if isinstance(heading, str) else None)


def _seconds(value: float) -> str:
    return f"{value:g} second" + ("" if value == 1 else "s")


def _kill(process: Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _environment(limits: ReadLimits) -> dict[str, str]:
    # Only what Python needs to find the package: none of the server's secrets.
    keep = {name: os.environ[name] for name in ("PATH", "PYTHONPATH", "LANG") if name in os.environ}
    return {**keep, **_MALLOC, "PYTHONDONTWRITEBYTECODE": "1", **limits.environment}
