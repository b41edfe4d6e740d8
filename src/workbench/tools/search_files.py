"""``search_files(query, file?)`` and ``add_to_search(path)``: search over a thread's documents.

Invariants:

* Offered with ``WORKBENCH_FILE_SEARCH=postgres`` (the default), on every provider. The
  thread's document set is every document attachment its messages name (queued as the turn
  that brings them starts) and every workspace file the model adds; they are read in the
  background (``documents.indexer``), never on a turn's path.
* While a turn's new documents are read, each shows as a task ("Reading report.pdf — page 12
  of 80") that ends read, failed (with the reason), or still reading in the background.
* A search over a document still being read waits up to ``WORKBENCH_DOCUMENTS_SEARCH_WAIT``
  for it, then searches what is indexed so far and tells the model how far that is. Every
  document that failed, or was cut at the page limit, is named with why.
* Passages are numbered with ``TurnContext.cite`` as ``FileSource``s (file name, page), so the
  answer's ``[n]`` become the message's sources; the search task lists the files hit with
  their signed download links.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agents import FunctionTool, function_tool
from agents.tool_context import ToolContext
from chatkit.types import (
    CustomTask,
    FileSource,
    SearchTask,
    ThreadItem,
    URLSource,
    UserMessageItem,
)

from workbench.documents.formats import kind_of
from workbench.documents.indexer import DocumentIndexer
from workbench.documents.library import DocumentLibrary, DocumentState
from workbench.documents.ranking import VectorSearch, start_vector_search
from workbench.documents.search import Passage, Scope, search_passages
from workbench.files.attachments import attachment_url
from workbench.files.downloads import workspace_file_url
from workbench.plugins import ToolPlugin, TurnContext
from workbench.sandbox.workspace_fs import file_parts, joined, open_file, shown
from workbench.text import storable
from workbench.tools.document_texts import listing, pages_so_far, reading_task
from workbench.tools.services import ToolServices

logger = logging.getLogger(__name__)

TOOL_NAME = "search_files"
ADD_TOOL_NAME = "add_to_search"
DEMO_PREFIX = "search: "
_POLL = 0.25  # seconds between looks at a document being read
_QUERY_CHARS = 400
_DESCRIPTION = """Search the documents of this conversation (files the user attached, and
files added with add_to_search) and return the best passages: numbered, each with its file and
page. Pass file= to search one document only."""
_ADD_DESCRIPTION = """Add a file from the workspace (PDF, DOCX, PPTX, XLSX, CSV, HTML,
Markdown or text) to the documents search_files searches."""
_INSTRUCTIONS = (
    "Documents the user attaches are searchable with search_files: search them for what the "
    "user asks about them rather than guessing. When your answer uses search_files passages, "
    "cite each claim with its passage's number in square brackets right after it, e.g. [1] "
    "or [2][3]; cite no number search_files did not give."
)


def plugins(services: ToolServices) -> list[ToolPlugin]:
    if services.settings.file_search != "postgres":
        return []
    library = DocumentLibrary(services.pool)
    indexer = DocumentIndexer(library, services.blobs, services.workspaces, services.settings)
    indexer.start()
    semantic = start_vector_search(services.pool, services.settings)
    search = SearchFilesTool(indexer, services, semantic)
    return [search, AddToSearchTool(search, services)]


@dataclass
class _Reading:
    """This turn's new documents and their tasks, kept up to date while they are read."""

    tasks: dict[str, CustomTask] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    watcher: asyncio.Task[None] | None = None


class SearchFilesTool(ToolPlugin):
    id = TOOL_NAME
    instructions = _INSTRUCTIONS

    def __init__(self, indexer: DocumentIndexer, services: ToolServices,
                 semantic: VectorSearch | None) -> None:  # fmt: skip
        self._indexer = indexer
        self.library = indexer.library
        self._settings = services.settings
        self._signer = services.signer
        self._semantic = semantic

    def tool(self) -> FunctionTool:
        @function_tool(name_override=TOOL_NAME, description_override=_DESCRIPTION)
        async def search_files(
            context: ToolContext[TurnContext], query: str, file: str | None = None
        ) -> str:
            """
            Args:
                query: Words to look for, as you would type them into a search engine.
                file: The name of one document to search, or omit it to search them all.
            """
            return await self.search(context.context, context.tool_call_id, query, file)

        return search_files

    def demo_trigger(self, text: str) -> str | None:
        # The query is the rest of the first line: what follows is the attachments' notes.
        line = text.split("\n", 1)[0]
        query = line[len(DEMO_PREFIX) :].strip() if line.startswith(DEMO_PREFIX) else ""
        return json.dumps({"query": query}) if query else None

    def demo_answer(self, output: str) -> str | None:
        top = output.split("\n\n[1] ", 1)
        if len(top) < 2:
            return None
        where, _, passage = top[1].partition("\n")
        return f"From {where}: {passage.split(chr(10) + chr(10))[0].strip()} [1]"

    async def aclose(self) -> None:
        await self._indexer.close()
        if self._semantic is not None:
            await self._semantic.aclose()

    # -- the documents a message brings ---------------------------------------------------

    async def turn_started(self, turn: TurnContext, message: ThreadItem | None) -> None:
        if not isinstance(message, UserMessageItem) or not message.attachments:
            return
        owner = turn.request_context.user_id
        added: list[str] = []
        for attachment in message.attachments:
            kind = kind_of(attachment.name, attachment.mime_type)
            if kind is None:
                continue
            document_id = await self.library.add_attachment(
                owner, turn.thread.id, attachment.id, attachment.name, attachment.mime_type, kind
            )
            if document_id is not None:
                added.append(document_id)
        await self.track(turn, added)

    async def track(self, turn: TurnContext, added: list[str]) -> None:
        """Have the documents just queued read, each shown as a task kept up to date."""
        if not added:
            return
        self._indexer.wake()
        reading = turn.state(f"{TOOL_NAME}:reading", _Reading)
        for state in await self.library.states(turn.request_context.user_id, added):
            if state.id in reading.tasks:
                continue
            task = CustomTask(title=f"Reading {state.name}…", icon="document",
                              status_indicator="loading")  # fmt: skip
            reading.tasks[state.id], reading.names[state.id] = task, state.name
            await turn.show_task(task, stopped_title=f"Reading {state.name} (continues in the "
                                 "background)")  # fmt: skip
        if reading.watcher is None or reading.watcher.done():
            reading.watcher = asyncio.create_task(self._watch(turn, reading))

    async def _watch(self, turn: TurnContext, reading: _Reading) -> None:
        # Polled, not notified: the reader may be another server process.
        while True:
            try:
                if not await self._refresh(turn, reading, final=False):
                    return
            except Exception:  # Postgres away for a moment: the tasks catch up later
                logger.warning("refreshing the reading tasks failed", exc_info=True)
            await asyncio.sleep(_POLL)

    async def _refresh(self, turn: TurnContext, reading: _Reading, *, final: bool) -> bool:
        """Bring the reading tasks up to date; whether any document is still being read."""
        owner = turn.request_context.user_id
        still = False
        states = await self.library.states(owner, list(reading.tasks))
        for gone in set(reading.tasks) - {state.id for state in states}:
            task = reading.tasks.pop(gone)  # deleted (its attachment, say) while read
            task.title = f"{reading.names[gone]} was removed before it was read"
            task.content, task.status_indicator = None, "complete"
            await turn.refresh_task(task)
        for state in states:
            task = reading.tasks[state.id]
            title, content, done = reading_task(state, final=final)
            still = still or not done
            indicator: Literal["none", "loading", "complete"] = (
                "complete" if done else ("none" if final else "loading")
            )
            # The last refresh always goes out: the watcher's last one may have been streamed
            # after the model finished, when nothing read the stream any more.
            await turn.update_task(
                task, always=final, title=title, content=content, status_indicator=indicator
            )
        return still

    async def turn_finished(self, turn: TurnContext) -> None:
        reading = turn.tool_state.get(f"{TOOL_NAME}:reading")
        if not isinstance(reading, _Reading):
            return
        if reading.watcher is not None:
            reading.watcher.cancel()
            await asyncio.gather(reading.watcher, return_exceptions=True)
        await self._refresh(turn, reading, final=True)

    def stopped(self, turn: TurnContext, items: list[ThreadItem]) -> list[ThreadItem]:
        reading = turn.tool_state.get(f"{TOOL_NAME}:reading")
        if isinstance(reading, _Reading) and reading.watcher is not None:
            reading.watcher.cancel()
        return items

    # -- the search -------------------------------------------------------------------------

    async def call_started(self, turn: TurnContext, item: Any) -> None:
        # The runner may have started the call before its stream event reaches us: the
        # search has opened the task then.
        if str(item.call_id) not in _searches(turn):
            await self._open(turn, str(item.call_id))

    async def call_output(self, turn: TurnContext, call_id: str, output: Any) -> None:
        task = _searches(turn).pop(call_id, None)
        if task is not None:
            task.status_indicator = "complete"
            await turn.refresh_task(task)

    async def _open(self, turn: TurnContext, call_id: str) -> SearchTask:
        task = SearchTask(title="Searching documents…", status_indicator="loading")
        _searches(turn)[call_id] = task
        await turn.show_task(task, stopped_title="Document search stopped")
        return task

    async def search(self, turn: TurnContext, call_id: str, query: str, file: str | None) -> str:
        """What the model reads back for ``query``: numbered passages, or why there are none."""
        task = _searches(turn).get(call_id) or await self._open(turn, call_id)
        # The model's words reach Postgres (the query, the task's title): no NUL.
        query = " ".join(storable(query).split())[:_QUERY_CHARS]
        file = None if file is None else storable(file)
        owner, thread_id = turn.request_context.user_id, turn.thread.id
        documents = await self.library.thread_documents(owner, thread_id)
        if not documents:
            task.title = "No documents to search"
            return (
                "This conversation has no documents to search yet. Documents the user attaches "
                "(PDF, DOCX, PPTX, XLSX, CSV, HTML, Markdown, text) and workspace files added "
                "with add_to_search can be searched."
            )
        chosen = _chosen(documents, file)
        if chosen is None:
            task.title = f"No document named “{file}”"
            names = ", ".join(sorted({d.name for d in documents}))
            return f"No document is named {file!r}. The documents are: {names}."
        if not query:
            return "The search query was empty: call search_files with the words to look for."
        task.title = f"Searching documents for “{query}”"
        task.title_query, task.queries = query, [query]
        await turn.refresh_task(task)
        chosen = await self._wait_for(turn, task, chosen)
        scope = Scope(owner, thread_id, [d.same_as or d.id for d in chosen] if file else None)
        found = await search_passages(
            self.library.pool, scope, query, self._settings.search_results, self._semantic
        )
        sources = [_source(passage) for passage in found]
        numbers = turn.cite(sources)
        task.title = f"Searched documents for “{query}”"
        task.sources = self._links(turn, found)
        return listing(query, found, numbers, chosen)

    async def _wait_for(
        self, turn: TurnContext, task: SearchTask, chosen: list[DocumentState]
    ) -> list[DocumentState]:
        """``chosen`` once none is being read, or as they stand after the wait."""
        deadline = time.monotonic() + self._settings.documents_search_wait
        ids = [d.id for d in chosen]
        while any(d.reading for d in chosen) and time.monotonic() < deadline:
            reading = next(d for d in chosen if d.reading)
            await turn.update_task(task, title=f"Reading {reading.name}" + pages_so_far(reading))
            await asyncio.sleep(_POLL)
            chosen = await self.library.states(turn.request_context.user_id, ids)
        return chosen

    def _links(self, turn: TurnContext, found: list[Passage]) -> list[URLSource]:
        context = turn.request_context
        links: dict[str, URLSource] = {}
        for passage in found:
            if passage.document_id in links:
                continue
            if passage.attachment_id is not None:
                url = attachment_url(self._signer, passage.attachment_id, context.user_id,
                                     context.base_url, inline=False)  # fmt: skip
            else:
                url = workspace_file_url(self._signer, context.base_url, context.user_id,
                                         turn.thread.id, passage.path or "")  # fmt: skip
            links[passage.document_id] = URLSource(url=url, title=passage.name)
        return list(links.values())


class AddToSearchTool(ToolPlugin):
    id = ADD_TOOL_NAME

    def __init__(self, search: SearchFilesTool, services: ToolServices) -> None:
        self._search = search  # which reads what is added, and shows it being read
        self._workspaces = services.workspaces

    def tool(self) -> FunctionTool:
        @function_tool(name_override=ADD_TOOL_NAME, description_override=_ADD_DESCRIPTION)
        async def add_to_search(context: ToolContext[TurnContext], path: str) -> str:
            """
            Args:
                path: The file's path in the workspace, e.g. reports/q3.pdf.
            """
            return await self.add(context.context, path)

        return add_to_search

    async def add(self, turn: TurnContext, path: str) -> str:
        owner, thread_id = turn.request_context.user_id, turn.thread.id
        try:
            parts = file_parts(path)
            workspace = self._workspaces.ensure(owner, thread_id)
            await asyncio.to_thread(_check_readable, workspace, parts)
        except OSError as error:
            return str(error)
        relative, name = joined(parts), parts[-1]
        mime_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        kind = kind_of(name, mime_type)
        if kind is None:
            return (
                f"{shown(relative)} is not a document search_files can read: PDF, DOCX, PPTX, "
                "XLSX, CSV, HTML, Markdown and text files can be added."
            )
        library = self._search.library
        await self._search.track(
            turn, [await library.add_path(owner, thread_id, relative, name, mime_type, kind)]
        )
        return f"Added {relative} to the documents: it is being read; search it with search_files."


def _check_readable(workspace: Path, parts: tuple[str, ...]) -> None:
    os.close(open_file(workspace, parts))


def _chosen(documents: list[DocumentState], file: str | None) -> list[DocumentState] | None:
    """The documents ``file`` names (exactly, else by part of the name), all if it is empty."""
    if not file or not file.strip():
        return documents
    wanted = file.strip().casefold()
    exact = [d for d in documents if d.name.casefold() == wanted or (d.path or "") == file]
    partial = [d for d in documents if wanted in d.name.casefold()]
    return exact or partial or None


def _source(passage: Passage) -> FileSource:
    where = f"{passage.name}, page {passage.page}" if passage.page else passage.name
    # The snippet's **highlights** are for the model's Markdown; a source's description is
    # shown as plain text.
    snippet = passage.snippet.replace("**", "")
    return FileSource(filename=passage.name, title=where, description=snippet or None)


def _searches(turn: TurnContext) -> dict[str, SearchTask]:
    return turn.state(TOOL_NAME, dict)
