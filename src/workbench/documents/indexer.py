"""The background reader: takes queued documents from Postgres and indexes them, off every
request's path.

Each server process runs ``WORKBENCH_DOCUMENTS_WORKERS`` readers. A reader claims a document
(``DocumentLibrary.claim``, a lease), copies its bytes to a private temporary file while
hashing them (the same bytes already in the thread: a duplicate, not read again), reads it
through the extraction subprocess and indexes its chunks while the next pages are read, so a
search finds the first pages while the last are still being read, and little is left to index
once the last page is read. Whatever goes wrong with the file ends as a ``failed`` document
with a note for the user and the model; nothing here fails a turn. A document deleted while it
is read (with its thread or its attachment) stops being read: its reading process is killed
and nothing more of it is indexed.
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
from workbench.documents.reader import Extractors, Opened, ReadLimits
from workbench.files.blobs import BlobNotFoundError, BlobStore
from workbench.sandbox.workspace_fs import file_parts, open_file
from workbench.sandbox.workspaces import Workspaces

logger = logging.getLogger(__name__)

_IDLE_POLL = 2.0  # seconds between looks for work queued by other processes
_LANGUAGE_SAMPLE = 4000  # characters the language is detected from
# A transaction starts once this many chunks are waiting, or this long after the last one
# began: fewer, larger transactions cost less than many small ones (each commits), and the
# last, which the document waits for, stays small.
_BATCH_CHUNKS = 50
_BATCH_SECONDS = 0.25
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
        self._extractors = Extractors(limits or ReadLimits.of(settings))
        self._scratch = settings.data_dir / "tmp"
        self._wake = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._warm: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._scratch.mkdir(parents=True, exist_ok=True)
        self._warm = asyncio.create_task(self._prepare())
        self._workers = [
            asyncio.create_task(self._work(), name=f"document-reader-{n}")
            for n in range(self._settings.documents_workers)
        ]

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._wake.set()

    async def close(self) -> None:
        # A flag as well as the cancellation: psycopg_pool can swallow a cancellation that
        # arrives as it hands over a connection, and the reader would then read on forever.
        self._closing = True
        self._wake.set()
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers = []
        if self._warm is not None:  # a thread: it cannot be cancelled, only awaited
            await self._warm
        await self._extractors.close()

    async def _prepare(self) -> None:
        await self._restock()
        await asyncio.to_thread(language_model)

    async def _work(self) -> None:
        while not self._closing:
            # Cleared before the look, not after: a wake() during the look is not lost.
            self._wake.clear()
            try:
                claimed = await self.library.claim()
            except Exception:
                logger.exception("claiming a document to read failed; will try again")
                claimed = None
            if claimed is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), _IDLE_POLL)
                continue
            if self._closing:
                return  # claimed as we were closing: its lease runs out, another reads it
            self._wake.set()  # there may be more: let another reader look too
            try:
                await self.index(claimed)
            except Exception:  # recording the outcome failed (Postgres away): keep reading
                logger.exception("recording document %s failed; its lease runs out", claimed.id)

    async def index(self, claimed: Claimed) -> None:
        """Read and index one claimed document; never raises but for cancellation."""
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._keep_lease(claimed, lost))
        try:
            with tempfile.TemporaryDirectory(dir=self._scratch) as scratch:
                copy = Path(scratch) / "document"
                sha256 = await self._copy(claimed, copy)
                if await self.library.identify(claimed, sha256) is not None:
                    return  # the thread has these bytes already: a duplicate
                note = await self._read(claimed, copy, lost)
            await self.library.finish(claimed, "ready", note)
        except DocumentError as error:
            await self.library.finish(claimed, "failed", f"{claimed.name}: {error}.")
        except _Gone:
            logger.info("document %s (%s) was deleted while being read", claimed.id, claimed.name)
        except asyncio.CancelledError:
            raise  # the lease runs out, and another reader starts it again
        except Exception:
            logger.exception("indexing document %s (%s) failed", claimed.id, claimed.name)
            with contextlib.suppress(Exception):
                await self.library.finish(
                    claimed, "failed", f"{claimed.name} could not be indexed (a server error)."
                )
        finally:
            heartbeat.cancel()
        await self._restock()

    async def _restock(self) -> None:
        """A spare extraction process for the next document, now that this one is done."""
        try:
            await self._extractors.restock()
        except OSError:
            logger.exception("starting a spare document reader failed; will start one per use")

    async def _keep_lease(self, claimed: Claimed, lost: asyncio.Event) -> None:
        """Renew the lease while the document is read; set ``lost`` once it is not ours."""
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            try:
                if not await self.library.renew(claimed):
                    lost.set()
                    return
            except Exception:
                logger.warning("renewing the lease of document %s failed", claimed.id)

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
        writer = _Writer(self.library, claimed)
        opened = Opened(None, None)
        try:
            async with contextlib.aclosing(self._extractors.read(copy, claimed.kind)) as read:
                async for event in read:
                    if lost.is_set():
                        raise _Gone
                    if isinstance(event, Opened):
                        opened = event
                        _still(await self.library.opened(claimed, event.pages, event.total))
                    else:
                        await writer.add(event.chunks, event.pages_read)
            indexed = await writer.finish(opened.pages)
        finally:
            await writer.settle()
        if indexed == 0:
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


class _Writer:
    """Indexes one document's chunks while the next are read: one transaction at a time, each
    taking every chunk read since the one before began. The batches then grow and shrink with
    the reading's pace, and once the last page is read little is left to index."""

    def __init__(self, library: DocumentLibrary, claimed: Claimed) -> None:
        self._library = library
        self._claimed = claimed
        self._pending: list[Chunk] = []
        self._pages_done = 0
        self._language: str | None = None  # detected from the first chunks
        self._indexed = 0  # chunks handed to a transaction
        self._pages_indexed = 0
        self._writing: asyncio.Task[bool] | None = None
        self._began = time.monotonic()  # when the last transaction began

    async def add(self, chunks: list[Chunk], pages_done: int) -> None:
        self._pending += chunks
        self._pages_done = pages_done
        if self._language is None:
            if sum(len(chunk.text) for chunk in self._pending) < _LANGUAGE_SAMPLE:
                return
            self._language = await _language_of(self._pending)
        if self._writing is not None:
            if not self._writing.done():
                return
            _still(self._writing.result())  # its error, if it failed
        waited = time.monotonic() - self._began
        if len(self._pending) < _BATCH_CHUNKS and waited < _BATCH_SECONDS:
            return
        chunks, first = self._batch(self._pages_done)
        self._writing = asyncio.create_task(
            self._library.add_chunks(self._claimed, self._language, first, chunks, self._pages_done)
        )

    async def finish(self, pages: int | None) -> int:
        """Index what is left; the number of chunks indexed."""
        if self._writing is not None:
            _still(await self._writing)
        final = pages or self._pages_done
        if self._pending or self._indexed == 0 or final > self._pages_indexed:
            language = self._language or await _language_of(self._pending)
            chunks, first = self._batch(final)
            _still(await self._library.add_chunks(self._claimed, language, first, chunks, final))
        return self._indexed

    async def settle(self) -> None:
        """Wait for a transaction still running (the reading failed or was stopped)."""
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await self._writing

    def _batch(self, pages_done: int) -> tuple[list[Chunk], int]:
        """The chunks pending, and the number of the first, for a transaction to index."""
        chunks, first = self._pending, self._indexed
        self._pending, self._indexed, self._pages_indexed = [], first + len(chunks), pages_done
        self._began = time.monotonic()
        return chunks, first


class _Gone(Exception):
    """The document is no longer being read by us: deleted, with its thread or attachment."""


def _still(reading: bool) -> None:
    if not reading:
        raise _Gone


async def _language_of(chunks: list[Chunk]) -> str:
    sample = " ".join(chunk.text for chunk in chunks)[:_LANGUAGE_SAMPLE]
    return await asyncio.to_thread(detect_language, sample)
