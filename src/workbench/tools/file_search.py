"""``file_search``: OpenAI's hosted file search over the thread's documents, mirrored into an
OpenAI vector store (``documents.hosted``).

Offered with the OpenAI provider and ``WORKBENCH_FILE_SEARCH=openai``, in place of
``search_files`` and ``add_to_search``.

How the tool names the thread's store: the toolset is built once per server, but the Agents
SDK's ``FileSearchTool`` carries its ``vector_store_ids``, and the SDK serialises exactly
those into each request (``_convert_tool``). Mutating one shared tool would hand one thread's
store to another answering at the same time, so ``tool()`` is a template and ``turn_tool``
gives each turn a copy naming that thread's store, after ``turn_started`` synced it; a thread
with nothing searchable is offered no file search at all (and no instructions about it). The
copy sets ``include_search_results``, so the SDK asks for ``file_search_call.results`` exactly
when the tool is offered: a request without the tool never names its results.

Invariants:

* As a turn starts, every document it must upload or wait for shows as a task ("Indexing
  report.pdf on OpenAI…") that completes, fails with the reason, or says it is still being
  indexed. The model is told, in that turn's instructions, which documents cannot be searched
  and why, and which are still being indexed.
* Each ``file_search_call`` is one ``SearchTask``: its queries, then the files hit as sources
  linking to the attachments (signed links).
* A ``file_citation`` naming a file of the thread becomes an annotation whose ``FileSource``
  is the attachment's name; one naming any other file is left to the default conversion.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from agents import FileSearchTool, Tool
from chatkit.agents import ResponseStreamConverter
from chatkit.types import (
    Annotation,
    CustomTask,
    FileSource,
    SearchTask,
    ThreadItem,
    URLSource,
    UserMessageItem,
)

from workbench.documents.hosted import HostedMirror, Mirrored, Synced
from workbench.documents.hosted_records import HostedDocument, HostedRecords
from workbench.files.attachments import attachment_url
from workbench.files.signing import UrlSigner
from workbench.plugins import ConverterWrapper, ToolPlugin, TurnContext, field_of
from workbench.text import storable
from workbench.tools.services import ToolServices

Indicator = Literal["none", "loading", "complete"]

TOOL_ID = "file_search"
RESULTS_INCLUDE = "file_search_call.results"
STOPPED = "Document search stopped"
_INSTRUCTIONS = (
    "The documents the user attached are searchable with file_search: search them for what "
    "the user asks about them rather than guessing, and cite what you use."
)
_PROGRESS = {
    "response.file_search_call.in_progress": "Searching documents",
    "response.file_search_call.searching": "Searching documents",
    "response.file_search_call.completed": "Reading the passages",
}
_UNFINISHED = {"failed": "The document search failed", "incomplete": "The document search "
               "did not finish"}  # fmt: skip


def plugins(services: ToolServices) -> list[ToolPlugin]:
    if services.settings.file_search != "openai" or services.provider != "openai":
        return []
    if services.openai is None:
        return []
    mirror = HostedMirror(
        HostedRecords(services.pool), services.openai, services.blobs, services.settings
    )
    return [FileSearchPlugin(mirror, services.signer)]


@dataclass
class _Turn:
    """This turn's view of the mirror: the thread's store, its files, the tasks shown."""

    store_id: str | None = None
    files: dict[str, HostedDocument] = field(default_factory=dict)  # by OpenAI file id
    indexing: dict[str, CustomTask] = field(default_factory=dict)  # by attachment id
    searches: dict[str, SearchTask] = field(default_factory=dict)  # by provider item id


class FileSearchPlugin(ToolPlugin):
    id = TOOL_ID
    item_type = "file_search_call"
    instructions = _INSTRUCTIONS

    def __init__(self, mirror: HostedMirror, signer: UrlSigner) -> None:
        self._mirror = mirror
        self._signer = signer

    def tool(self) -> FileSearchTool:
        return FileSearchTool(vector_store_ids=[], include_search_results=True)

    def turn_tool(self, turn: TurnContext, tool: Tool) -> Tool | None:
        store = _turn(turn).store_id
        if store is None or not isinstance(tool, FileSearchTool):
            return None
        return dataclasses.replace(tool, vector_store_ids=[store])

    async def aclose(self) -> None:
        await self._mirror.aclose()

    # -- the thread's documents, brought up to date as the turn starts --------------------

    async def turn_started(self, turn: TurnContext, message: ThreadItem | None) -> None:
        owner, thread_id = turn.request_context.user_id, turn.thread.id
        documents = await self._mirror.records.documents(owner, thread_id)
        if not documents:
            return
        state = _turn(turn)

        async def changed(item: Mirrored) -> None:
            await self._show(turn, state, item)

        synced = await self._mirror.sync(owner, thread_id, documents, changed)
        brought = (
            {a.id for a in message.attachments} if isinstance(message, UserMessageItem) else set()
        )
        for item in synced.documents:
            # Refused before any work (too large): shown on the turn that brings it.
            if item.state == "failed" and item.document.attachment_id in brought:
                await self._show(turn, state, item)
        state.files = {d.file_id: d for d in documents if d.file_id is not None}
        state.store_id = synced.store_id if synced.searchable else None
        turn.notes.extend(_notes(synced))

    async def _show(self, turn: TurnContext, state: _Turn, item: Mirrored) -> None:
        title, content, indicator = _shown_as(item)
        task = state.indexing.get(item.document.attachment_id)
        if task is None:
            task = CustomTask(title=title, content=content, icon="document",
                              status_indicator=indicator)  # fmt: skip
            state.indexing[item.document.attachment_id] = task
            stopped = f"Indexing {item.document.name} on OpenAI stopped"
            await turn.show_task(task, stopped_title=stopped)
        else:
            await turn.update_task(task, title=title, content=content, status_indicator=indicator)

    # -- a search, as the model streams it ----------------------------------------------------

    async def call_started(self, turn: TurnContext, item: Any) -> None:
        task = SearchTask(title="Searching documents", status_indicator="loading")
        await turn.show_task(task, stopped_title=STOPPED)
        _turn(turn).searches[str(item.id)] = task

    async def call_event(self, turn: TurnContext, event: Any) -> None:
        task = _turn(turn).searches.get(str(event.item_id))
        title = _PROGRESS.get(str(event.type))
        if task is not None and title is not None:
            await turn.update_task(task, title=title)

    async def call_written(self, turn: TurnContext, item: Any) -> None:
        state = _turn(turn)
        task = state.searches.pop(str(item.id), None)
        if task is None:
            return
        queries = [storable(q) for q in field_of(item, "queries") or [] if isinstance(q, str)]
        task.queries = queries
        task.title_query = queries[0] if queries else None
        task.sources = self._sources(turn, state, field_of(item, "results") or [])
        status = str(field_of(item, "status") or "completed")
        task.title = _UNFINISHED.get(status, "Searched documents")
        task.status_indicator = "none" if status in _UNFINISHED else "complete"
        await turn.refresh_task(task)

    def _sources(self, turn: TurnContext, state: _Turn, results: list[Any]) -> list[URLSource]:
        """The thread's files among ``results``, once each, linking to their attachments."""
        context = turn.request_context
        sources: dict[str, URLSource] = {}
        for result in results:
            document = state.files.get(str(field_of(result, "file_id")))
            if document is None or document.attachment_id in sources:
                continue
            url = attachment_url(self._signer, document.attachment_id, context.user_id,
                                 context.base_url, inline=False)  # fmt: skip
            sources[document.attachment_id] = URLSource(url=url, title=document.name)
        return list(sources.values())

    def stream_converter(
        self, turn: TurnContext, inner: ResponseStreamConverter
    ) -> ResponseStreamConverter:
        return _FileCitations(inner, _turn(turn))


class _FileCitations(ConverterWrapper):
    """``file_citation`` annotations that name the thread's files, as its attachments."""

    def __init__(self, inner: ResponseStreamConverter, state: _Turn) -> None:
        super().__init__(inner)
        self._state = state

    async def file_citation_to_annotation(self, file_citation: Any) -> Any:
        document = self._state.files.get(str(file_citation.file_id))
        if document is None:
            return await self.inner.file_citation_to_annotation(file_citation)
        source = FileSource(filename=document.name, title=document.name)
        return Annotation(source=source, index=file_citation.index)


def _turn(turn: TurnContext) -> _Turn:
    return turn.state(TOOL_ID, _Turn)


def _shown_as(item: Mirrored) -> tuple[str, str | None, Indicator]:
    """An indexing task's title, content and indicator for ``item``."""
    name = item.document.name
    if item.state == "indexed":
        return f"Indexed {name} on OpenAI", None, "complete"
    if item.state == "failed":
        return f"Could not index {name} on OpenAI", _sentence(item.reason), "none"
    if item.state == "indexing" and item.reason is not None:  # the turn's wait is over
        return (f"{name} is still being indexed on OpenAI",
                "It can be searched once OpenAI is done.", "none")  # fmt: skip
    return f"Indexing {name} on OpenAI…", None, "loading"


def _notes(synced: Synced) -> list[str]:
    """What the model must know of the documents it cannot (yet) search."""
    failed = [f"{m.document.name} ({m.reason})" for m in synced.documents if m.state == "failed"]
    indexing = [m.document.name for m in synced.documents if m.state == "indexing"]
    notes = []
    if failed:
        notes.append("These documents of the conversation cannot be searched, so do not claim "
                     "to have read them: " + "; ".join(failed) + ".")  # fmt: skip
    if indexing and synced.searchable:
        notes.append("Still being indexed, so a search may miss them: " + ", ".join(indexing)
                     + ".")  # fmt: skip
    return notes


def _sentence(reason: str | None) -> str | None:
    if not reason:
        return None
    text = reason[0].upper() + reason[1:]
    return text if text.endswith(".") else text + "."
