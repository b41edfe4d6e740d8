"""The background reader: takes queued documents from Postgres and indexes them, off every
request's path.

Each server process runs ``WORKBENCH_DOCUMENTS_WORKERS`` readers. A reader claims a document
(``DocumentLibrary.claim``, a lease), copies its bytes to a private temporary file while
hashing them (the same bytes already in the thread: a duplicate, not read again), reads it
through the extraction subprocess and indexes its chunks page by page, so a search finds the
first pages while the last are still being read. Whatever goes wrong with the file ends as a
``failed`` document with a note for the user and the model; nothing here fails a turn. A
document deleted while it is read (with its thread or its attachment) stops being read: its
reading process is killed and nothing more of it is indexed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from workbench.config import Settings
from workbench.documents.chunks import Chunk, detect_language, language_model
from workbench.documents.formats import DocumentError
from workbench.documents.library import LEASE_SECONDS, Claimed, DocumentLibrary
from workbench.documents.reader import Opened, ReadLimits, read_document
from workbench.files.blobs import BlobNotFoundError, BlobStore
from workbench.sandbox.workspace_fs import file_parts, open_file
from workbench.sandbox.workspaces import Workspaces

logger = logging.getLogger(__name__)

_IDLE_POLL = 2.0  # seconds between looks for work queued by other processes
_LANGUAGE_SAMPLE = 4000  # characters the language is detected from
_BATCH_SECONDS = 0.25  # chunks are indexed at least this often while a document is read
_BATCH_CHUNKS = 200
_COPY_BYTES = 1 << 20


class DocumentIndexer:
    def __init__(
        self,
        library: DocumentLibrary,
        blobs: BlobStore,
        workspaces: Workspaces,
        settings: Settings,
        limits: ReadLimits | None = None,
    ) -> None:
        self.library = library
        self._blobs = blobs
        self._workspaces = workspaces
        self._settings = settings
        self._limits = limits or ReadLimits.of(settings)
        self._scratch = settings.data_dir / "tmp"
        self._wake = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._warm: asyncio.Task[object] | None = None

    def start(self) -> None:
        self._scratch.mkdir(parents=True, exist_ok=True)
        self._warm = asyncio.create_task(asyncio.to_thread(language_model))
        self._workers = [
            asyncio.create_task(self._work(), name=f"document-reader-{n}")
            for n in range(self._settings.documents_workers)
        ]

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._wake.set()

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers = []
        if self._warm is not None:  # a thread: it cannot be cancelled, only awaited
            await self._warm

    async def _work(self) -> None:
        while True:
            try:
                claimed = await self.library.claim()
            except Exception:
                logger.exception("claiming a document to read failed; will try again")
                claimed = None
            if claimed is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), _IDLE_POLL)
                continue
            self._wake.set()  # there may be more: let another reader look too
            await self.index(claimed)

    async def index(self, claimed: Claimed) -> None:
        """Read and index one claimed document; never raises but for cancellation."""
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._keep_lease(claimed.id, lost))
        try:
            with tempfile.TemporaryDirectory(dir=self._scratch) as scratch:
                copy = Path(scratch) / "document"
                sha256 = await self._copy(claimed, copy)
                if await self.library.identify(claimed.id, sha256) is not None:
                    return  # the thread has these bytes already: a duplicate
                note = await self._read(claimed, copy, lost)
            await self.library.finish(claimed.id, "ready", note)
        except DocumentError as error:
            await self.library.finish(claimed.id, "failed", f"{claimed.name}: {error}.")
        except _Gone:
            logger.info("document %s (%s) was deleted while being read", claimed.id, claimed.name)
        except asyncio.CancelledError:
            raise  # the lease runs out, and another reader starts it again
        except Exception:
            logger.exception("indexing document %s (%s) failed", claimed.id, claimed.name)
            with contextlib.suppress(Exception):
                await self.library.finish(
                    claimed.id, "failed", f"{claimed.name} could not be indexed (a server error)."
                )
        finally:
            heartbeat.cancel()

    async def _keep_lease(self, document_id: str, lost: asyncio.Event) -> None:
        """Renew the lease while the document is read; set ``lost`` once it is not ours."""
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            try:
                if not await self.library.renew(document_id):
                    lost.set()
                    return
            except Exception:
                logger.warning("renewing the lease of document %s failed", document_id)

    async def _copy(self, claimed: Claimed, target: Path) -> str:
        """Copy the document's bytes to ``target``; their SHA-256."""
        limit = self._settings.documents_max_mb * 2**20
        digest = hashlib.sha256()
        size = 0
        with target.open("wb") as file:
            async for chunk in self._bytes(claimed):
                size += len(chunk)
                if size > limit:
                    raise DocumentError(
                        f"it is larger than {self._settings.documents_max_mb} MiB, the most "
                        "read for search (WORKBENCH_DOCUMENTS_MAX_MB)"
                    )
                digest.update(chunk)
                await asyncio.to_thread(file.write, chunk)
        return digest.hexdigest()

    async def _bytes(self, claimed: Claimed) -> AsyncIterator[bytes]:
        if claimed.attachment_id is not None:
            try:
                async for chunk in self._blobs.read(claimed.attachment_id):
                    yield chunk
            except BlobNotFoundError:
                raise DocumentError("its upload is missing") from None
            return
        assert claimed.path is not None
        workspace = self._workspaces.ensure(claimed.owner, claimed.thread_id)
        try:
            fd = open_file(workspace, file_parts(claimed.path))
        except OSError as error:
            raise DocumentError(str(error).rstrip(".")) from None
        with os.fdopen(fd, "rb") as file:
            while chunk := await asyncio.to_thread(file.read, _COPY_BYTES):
                yield chunk

    async def _read(self, claimed: Claimed, copy: Path, lost: asyncio.Event) -> str | None:
        """Index the document at ``copy``; a note on what could not be read, if any. Raises
        ``_Gone`` (the reading process killed) if the document is deleted meanwhile."""
        batch = _Batch(self.library, claimed)
        opened = Opened(None, None)
        async with contextlib.aclosing(read_document(copy, claimed.kind, self._limits)) as read:
            async for event in read:
                if lost.is_set():
                    raise _Gone
                if isinstance(event, Opened):
                    opened = event
                    _still(await self.library.opened(claimed.id, event.pages, event.total))
                else:
                    await batch.add(event.chunks, event.pages_read)
        if await batch.finish(opened.pages) == 0:
            scan = " (a scanned PDF without a text layer? it would need OCR)"
            raise DocumentError(
                "it has no text to search" + (scan if claimed.kind == "pdf" else "")
            )
        if opened.total is not None and opened.pages is not None and opened.total > opened.pages:
            return (
                f"Only the first {opened.pages} of {opened.total} pages of {claimed.name} were "
                "read for search (WORKBENCH_DOCUMENTS_MAX_PAGES)."
            )
        return None


class _Batch:
    """The chunks read and not yet indexed: indexed at least every ``_BATCH_SECONDS`` (or
    ``_BATCH_CHUNKS``) once the document's language is known from its first text."""

    def __init__(self, library: DocumentLibrary, claimed: Claimed) -> None:
        self._library = library
        self._claimed = claimed
        self._pending: list[Chunk] = []
        self._language: str | None = None
        self._flushed = time.monotonic()
        self.indexed = 0
        self._pages_done = 0

    async def add(self, chunks: list[Chunk], pages_done: int) -> None:
        self._pending += chunks
        self._pages_done = pages_done
        if self._language is None:
            if sum(len(chunk.text) for chunk in self._pending) < _LANGUAGE_SAMPLE:
                return
            self._language = await _language_of(self._pending)
        due = time.monotonic() - self._flushed >= _BATCH_SECONDS
        if due or len(self._pending) >= _BATCH_CHUNKS:
            await self._flush(self._language, self._pages_done)

    async def finish(self, pages: int | None) -> int:
        """Index the rest (recording every page as done); how many chunks were indexed."""
        if self._pending or self.indexed == 0:
            language = self._language or await _language_of(self._pending)
            await self._flush(language, pages or self._pages_done)
        return self.indexed

    async def _flush(self, language: str, pages_done: int) -> None:
        _still(
            await self._library.add_chunks(
                self._claimed, language, self.indexed, self._pending, pages_done
            )
        )
        self.indexed += len(self._pending)
        self._pending, self._flushed = [], time.monotonic()


class _Gone(Exception):
    """The document is no longer being read by us: deleted, with its thread or attachment."""


def _still(reading: bool) -> None:
    if not reading:
        raise _Gone


async def _language_of(chunks: list[Chunk]) -> str:
    sample = " ".join(chunk.text for chunk in chunks)[:_LANGUAGE_SAMPLE]
    return await asyncio.to_thread(detect_language, sample)
