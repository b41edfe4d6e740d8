"""Each thread's documents mirrored into an OpenAI vector store, for the hosted file search.

Invariants:

* A thread's documents are its document attachments (``formats.kind_of``). Each turn brings
  the mirror up to date before the model is called (``HostedMirror.sync``): the thread's
  vector store is created with its first document, expiring after
  ``WORKBENCH_OPENAI_VECTOR_STORE_IDLE_DAYS`` unused; every document not in it yet is uploaded
  (``purpose="assistants"``) and attached, and the turn waits, ``WORKBENCH_OPENAI_INDEXING_WAIT``
  at most, until OpenAI has indexed it.
* The store is looked up at OpenAI on every turn that has documents (one request): a store
  that expired, or is gone, is set aside for deletion and rebuilt, its files attached anew
  (uploaded anew if OpenAI lost them). A store that cannot be looked up (OpenAI unreachable)
  is used as it is: the model's own request will tell.
* Every id OpenAI hands out is recorded at once (``hosted_records``), even when the turn is
  stopped meanwhile: uploads and store creations run shielded from a Stop.
* A document OpenAI could not index keeps the reason and is not sent again to that store;
  one that could not be sent (OpenAI unreachable, an error status) is tried again next turn.
  A document over ``WORKBENCH_DOCUMENTS_MAX_MB`` is never sent.
* Nothing here raises for OpenAI's failures: each document's ``state`` and ``reason`` say what
  happened, in words for the user and the model, and the log says it too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from openai import APIConnectionError, APIStatusError, APITimeoutError, AsyncOpenAI, NotFoundError

from workbench.config import Settings
from workbench.documents.hosted_records import HostedDocument, HostedRecords, ThreadGoneError
from workbench.files.blobs import BlobNotFoundError, BlobStore
from workbench.text import storable

logger = logging.getLogger(__name__)

T = TypeVar("T")

_FIRST_POLL = 0.2  # seconds before the first look at a file being indexed, growing to
_LAST_POLL = 2.0
# What can go wrong with one document or the store, said in words rather than raised.
_FAILURES = (APIConnectionError, APIStatusError, BlobNotFoundError, ThreadGoneError)

State = Literal["pending", "uploading", "indexing", "indexed", "failed"]


@dataclass
class Mirrored:
    """A document, and how this turn's sync left it."""

    document: HostedDocument
    state: State = "pending"
    reason: str | None = None  # why it failed, or why it is still indexing


@dataclass
class Synced:
    store_id: str | None  # the thread's store, if it has one
    documents: list[Mirrored] = field(default_factory=list)

    @property
    def searchable(self) -> bool:
        return self.store_id is not None and any(
            m.state in {"indexed", "indexing"} for m in self.documents
        )


Changed = Callable[[Mirrored], Awaitable[None]]


class HostedMirror:
    def __init__(
        self,
        records: HostedRecords,
        client: AsyncOpenAI,
        blobs: BlobStore,
        settings: Settings,
    ) -> None:
        self.records = records
        self._client = client
        self._blobs = blobs
        self._settings = settings
        self._shielded: set[asyncio.Future[Any]] = set()  # kept alive past a Stop

    async def sync(
        self, owner: str, thread_id: str, documents: list[HostedDocument], changed: Changed
    ) -> Synced:
        """Bring the thread's store up to date with ``documents``; ``changed`` hears of every
        document this turn works on, whenever its state changes."""
        mirrored = [Mirrored(document) for document in documents]
        limit = self._settings.documents_max_mb * 1024 * 1024
        sendable = []
        for item in mirrored:
            if item.document.size > limit:
                item.state = "failed"
                item.reason = f"it is larger than {self._settings.documents_max_mb} MB"
            else:
                sendable.append(item)
        if not sendable:
            return Synced(None, mirrored)
        try:
            store = await self._store(owner, thread_id)
        except _FAILURES as error:
            reason = describe(error)
            logger.warning("no vector store for thread %s: %s", thread_id, reason)
            for item in sendable:
                await _fail(item, f"no vector store could be made: {reason}", changed)
            return Synced(None, mirrored)
        for item in sendable:
            if item.document.indexed_in(store):
                item.state = "indexed"
            elif item.document.refused_in(store):
                item.state, item.reason = "failed", item.document.note or "OpenAI refused it"
        work = [item for item in sendable if item.state == "pending"]
        deadline = time.monotonic() + self._settings.openai_indexing_wait
        await asyncio.gather(*(self._index(owner, store, item, deadline, changed) for item in work))
        return Synced(store, mirrored)

    # -- the store ----------------------------------------------------------------------------

    async def _store(self, owner: str, thread_id: str) -> str:
        store = await self.records.store_of(owner, thread_id)
        if store is not None:
            try:
                found = await self._client.vector_stores.retrieve(store)
            except NotFoundError:
                found = None
            except (APIConnectionError, APIStatusError) as error:
                logger.warning("could not look up vector store %s: %s", store, describe(error))
                return store
            if found is not None and found.status != "expired":
                return store
            logger.info("vector store %s of thread %s expired: rebuilding it", store, thread_id)
            await self.records.set_aside_store(store, owner)
        return await self._shield(self._create_store(owner, thread_id))

    async def _create_store(self, owner: str, thread_id: str) -> str:
        created = await self._client.vector_stores.create(
            name=f"Workbench {thread_id}",
            expires_after={
                "anchor": "last_active_at",
                "days": self._settings.openai_vector_store_idle_days,
            },
            metadata={"workbench_thread": thread_id},
        )
        return await self.records.record_store(created.id, owner, thread_id)

    # -- one document ------------------------------------------------------------------------

    async def _index(
        self, owner: str, store: str, item: Mirrored, deadline: float, changed: Changed
    ) -> None:
        document = item.document
        try:
            item.state = "uploading" if document.file_id is None else "indexing"
            await changed(item)
            if document.file_id is None:
                document.file_id = await self._shield(self._upload(owner, document))
            try:
                await self._attach(owner, store, document)
            except NotFoundError:  # OpenAI lost the file: send it again
                await self.records.forget_file(document.file_id, owner)
                document.file_id = await self._shield(self._upload(owner, document))
                await self._attach(owner, store, document)
            item.state = "indexing"
            await changed(item)
            await self._wait_indexed(owner, store, document, deadline)
        except _FAILURES as error:
            logger.warning("could not index %s at OpenAI: %s", document.attachment_id,
                           describe(error))  # fmt: skip
            if _refusal(error) and document.file_id is not None:
                # OpenAI's verdict on the file itself (a CSV, say): kept, so no later turn
                # sends it again only to be told the same.
                document.vector_store_id, document.status = store, "failed"
                document.note = describe(error)
                await self.records.file_indexing(
                    document.file_id, owner, store, "failed", document.note
                )
            await _fail(item, describe(error), changed)
            return
        _settle(item)
        await changed(item)

    async def _upload(self, owner: str, document: HostedDocument) -> str:
        data = b"".join([chunk async for chunk in self._blobs.read(document.attachment_id)])
        uploaded = await self._client.files.create(
            file=(document.name, data, document.mime_type), purpose="assistants"
        )
        return await self.records.record_file(uploaded.id, owner, document.attachment_id)

    async def _attach(self, owner: str, store: str, document: HostedDocument) -> None:
        assert document.file_id is not None
        attached = await self._client.vector_stores.files.create(store, file_id=document.file_id)
        await self._record(owner, store, document, attached.status, attached.last_error)

    async def _wait_indexed(
        self, owner: str, store: str, document: HostedDocument, deadline: float
    ) -> None:
        """Until OpenAI is done with the file, or the turn's wait is over."""
        assert document.file_id is not None
        pause = _FIRST_POLL
        while document.status == "in_progress" and time.monotonic() < deadline:
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 1.5, _LAST_POLL)
            found = await self._client.vector_stores.files.retrieve(
                document.file_id, vector_store_id=store
            )
            await self._record(owner, store, document, found.status, found.last_error)

    async def _record(
        self, owner: str, store: str, document: HostedDocument, status: str, error: Any
    ) -> None:
        note = storable(str(error.message)) if error is not None else None
        if (document.vector_store_id, document.status, document.note) == (store, status, note):
            return
        document.vector_store_id, document.status, document.note = store, status, note
        assert document.file_id is not None
        await self.records.file_indexing(document.file_id, owner, store, status, note)

    async def _shield(self, work: Coroutine[Any, Any, T]) -> T:
        """``work``, carried to its end even if the turn is stopped meanwhile."""
        task = asyncio.ensure_future(work)
        self._shielded.add(task)
        task.add_done_callback(self._shielded.discard)
        return await asyncio.shield(task)

    async def aclose(self) -> None:
        """Let shielded work finish recording what OpenAI created."""
        if self._shielded:
            await asyncio.wait(set(self._shielded), timeout=30)


def _settle(item: Mirrored) -> None:
    status, note = item.document.status, item.document.note
    if status == "completed":
        item.state, item.reason = "indexed", None
    elif status == "in_progress":
        item.state, item.reason = "indexing", "OpenAI is still indexing it"
    else:
        item.state, item.reason = "failed", note or f"OpenAI's indexing ended {status}"


def _refusal(error: BaseException) -> bool:
    """Whether OpenAI refused the request for what it carries, not for its own state."""
    return isinstance(error, APIStatusError) and error.status_code in {400, 413, 415, 422}


async def _fail(item: Mirrored, reason: str, changed: Changed) -> None:
    item.state, item.reason = "failed", reason
    await changed(item)


def describe(error: BaseException) -> str:
    """What went wrong with OpenAI, for the user, the model and the log."""
    if isinstance(error, APITimeoutError):
        return "OpenAI did not answer in time"
    if isinstance(error, APIConnectionError):
        return "OpenAI could not be reached"
    if isinstance(error, APIStatusError):
        body = error.body if isinstance(error.body, dict) else {}
        detail = body.get("message") or error.response.reason_phrase
        return storable(f"OpenAI answered {error.status_code}: {detail}")
    if isinstance(error, BlobNotFoundError):
        return "its upload is missing"
    return storable(str(error))
