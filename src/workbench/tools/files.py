"""File tools: list, read, write and delete files in the thread's workspace.

They work on the host, on the same directory the thread's kernel sees as ``/workspace``, which
sandboxed code shapes and may fill with symlinks at any moment. So every path goes through
``sandbox.workspace_fs`` (the rules every host access to a workspace obeys: checked as text,
walked one component at a time from a descriptor, no link ever followed) and the operations
of ``sandbox.workspace_ops``; what the model reads back is worded in ``tools.file_texts``.
This module is the tools themselves: definitions, progress, widgets.

* ``list_files(path=".")``: files and folders below ``path``, recursively (bounded), with
  sizes. Hidden entries (a name starting with a dot, like ``.outputs`` where cell figures
  go) are skipped unless ``path`` is inside one; the model is told which. Listing a single
  file is allowed: it is how the model hands the user a download link to an existing file.
  The user sees a file-list widget with download links.
* ``read_file(path, offset=0, limit=200)``: a text file as numbered lines, bounded in lines
  and characters, saying how to read on. Binary files are described, not dumped.
* ``write_file(path, content)``: creates missing folders, writes atomically, bounded in size;
  the user sees the file with a download link. Writing over a symlink or a folder is refused.
* ``delete_file(path)``: a file, a symlink (itself) or an empty folder.

Every failure the model can cause or meet comes back as the tool's text result, never as an
exception that ends the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from agents import FunctionTool, function_tool
from agents.tool_context import ToolContext
from chatkit.icons import IconName
from chatkit.types import (
    ProgressUpdateEvent,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    WidgetItem,
)

from workbench.config import Settings
from workbench.files.downloads import workspace_file_url
from workbench.files.signing import UrlSigner
from workbench.plugins import ToolPlugin, TurnContext
from workbench.sandbox.workspace_fs import (
    MOUNT,
    WorkspaceError,
    describe,
    file_parts,
    joined,
    shown,
    workspace_parts,
)
from workbench.sandbox.workspace_ops import (
    LIST_SCAN_LIMIT,
    delete_entry,
    list_entries,
    read_text,
    write_bytes,
)
from workbench.sandbox.workspaces import PathOutsideWorkspaceError, Workspaces
from workbench.tools.file_texts import listed, listing_text, page_text, printable
from workbench.tools.services import ToolServices
from workbench.widgets import FileView, file_list_widget, format_size, plural

LIST_FILES = "list_files"
READ_FILE = "read_file"
WRITE_FILE = "write_file"
DELETE_FILE = "delete_file"
WIDGET_TOOLS = frozenset({LIST_FILES, WRITE_FILE})
"""File tools that show the user a widget of their own (so no workflow task for them: a
widget ends the open workflow, which would save their task still spinning)."""

WIDGET_FILES = 50  # files with a download link in the widget
READ_MAX_CHARS = 16_000  # characters of lines returned (or tool_output_chars, if larger)
READ_MAX_LIMIT = 2000  # lines per call
WRITE_MAX_BYTES = 10 * 1024 * 1024  # or sandbox_max_file_mb, if smaller

_LIST_DESCRIPTION = f"""List files and folders in this conversation's workspace (the /workspace
folder that execute_python works in), with sizes, and show them to the user with download links.

`path` is a folder relative to the workspace ("." for all of it; "/workspace/..." works too).
Folders are listed recursively (up to {LIST_SCAN_LIMIT} entries). Hidden entries (names starting
with a dot, such as .outputs where figures are saved) are skipped unless `path` is inside one.
Symbolic links are shown, never followed. To give the user a download link to a file that
already exists, list that file's path."""

_READ_DESCRIPTION = f"""Read a text file from the workspace as numbered lines.

`offset` is how many lines to skip (0: from the start), `limit` how many lines to return (at
most {READ_MAX_LIMIT}). Long output is cut and says how to continue. Binary files (images,
spreadsheets, archives, ...) are described, not shown: use execute_python for them."""

_WRITE_DESCRIPTION = """Create or replace a text file in the workspace with `content` (UTF-8).

Missing folders are created; the file is replaced atomically. The user is shown the file with a
download link. Writing over a folder or a symbolic link is refused."""

_DELETE_DESCRIPTION = """Delete a file, a symbolic link (the link itself, never what it points
to) or an empty folder from the workspace. Folders that are not empty are refused."""

T = TypeVar("T")
P = ParamSpec("P")


class FileTools:
    def __init__(self, workspaces: Workspaces, signer: UrlSigner, settings: Settings) -> None:
        self._workspaces = workspaces
        self._signer = signer
        self._settings = settings

    @property
    def write_limit(self) -> int:
        return min(WRITE_MAX_BYTES, self._settings.sandbox_max_file_mb * 1024 * 1024)

    def tools(self) -> list[FunctionTool]:
        @function_tool(name_override=LIST_FILES, description_override=_LIST_DESCRIPTION)
        async def list_files(context: ToolContext[TurnContext], path: str = ".") -> str:
            """
            Args:
                path: A folder or file, relative to the workspace ("." for all of it).
            """
            return await self.list_files(context.context, path)

        @function_tool(name_override=READ_FILE, description_override=_READ_DESCRIPTION)
        async def read_file(
            context: ToolContext[TurnContext], path: str, offset: int = 0, limit: int = 200
        ) -> str:
            """
            Args:
                path: The file, relative to the workspace.
                offset: Lines to skip from the start.
                limit: Lines to return.
            """
            return await self.read_file(context.context, path, offset, limit)

        @function_tool(name_override=WRITE_FILE, description_override=_WRITE_DESCRIPTION)
        async def write_file(context: ToolContext[TurnContext], path: str, content: str) -> str:
            """
            Args:
                path: The file to create or replace, relative to the workspace.
                content: The file's complete new text.
            """
            return await self.write_file(context.context, path, content)

        @function_tool(name_override=DELETE_FILE, description_override=_DELETE_DESCRIPTION)
        async def delete_file(context: ToolContext[TurnContext], path: str) -> str:
            """
            Args:
                path: The file (or empty folder) to delete, relative to the workspace.
            """
            return await self.delete_file(context.context, path)

        return [list_files, read_file, write_file, delete_file]

    # Each returns the text the model reads, errors included.

    async def list_files(self, context: TurnContext, path: str = ".") -> str:
        await _progress(context, "book-open", f"Listing {_label(path, 'files')}…")
        try:
            parts = workspace_parts(path)
            listing = await self._on_disk(context, "list", path, list_entries, parts)
        except WorkspaceError as error:
            return str(error)
        files = [entry for entry in listing.entries if entry.kind == "file"]
        views = [
            FileView(entry.path, self._url(context, entry.path), entry.size)
            for entry in files
            if printable(entry.path)
        ][:WIDGET_FILES]
        if views:
            note = None
            if len(views) < len(files):
                note = f"Showing {len(views)} of {len(files)} files."
            if not listing.complete:
                note = (note + " " if note else "") + "The listing was cut short."
            title = "Files" if not parts else f"Files in {joined(parts)}"
            await self._show(context, views, "File" if listing.is_file else title, note)
        return listing_text(listing, parts, self._settings.tool_output_chars, len(views))

    async def read_file(
        self, context: TurnContext, path: str, offset: int = 0, limit: int = 200
    ) -> str:
        await _progress(context, "document", f"Reading {_label(path, 'a file')}…")
        if offset < 0:
            return "offset must be 0 or more (the number of lines to skip)."
        if limit < 1:
            return "limit must be at least 1 (the number of lines to return)."
        try:
            parts = file_parts(path)
            page = await self._on_disk(context, "read", path, read_text, parts)
        except WorkspaceError as error:
            return str(error)
        max_chars = max(READ_MAX_CHARS, self._settings.tool_output_chars)
        return page_text(page, joined(parts), offset, min(limit, READ_MAX_LIMIT), max_chars)

    async def write_file(self, context: TurnContext, path: str, content: str) -> str:
        await _progress(context, "write", f"Writing {_label(path, 'a file')}…")
        try:
            parts = file_parts(path)
            bad = next((part for part in parts if not printable(part)), None)
            if bad is not None:
                raise WorkspaceError(
                    f"{shown(bad)}: file names cannot contain control characters (line breaks, "
                    "tabs, ...) or invalid text."
                )
            try:
                data = content.encode("utf-8")
            except UnicodeEncodeError:
                raise WorkspaceError("The content is not valid text (a lone surrogate).") from None
            if len(data) > self.write_limit:
                raise WorkspaceError(
                    f"The content is {format_size(len(data))}; write_file writes at most "
                    f"{format_size(self.write_limit)}. Write large files with execute_python."
                )
            quota = self._settings.workspace_quota_mb * 1024 * 1024
            replaced = await self._on_disk(context, "write", path, write_bytes, parts, data, quota)
        except WorkspaceError as error:
            return str(error)
        relative = joined(parts)
        view = FileView(relative, self._url(context, relative), len(data))
        await self._show(context, [view], "Replaced file" if replaced else "New file", None)
        lines = content.count("\n") + (0 if content.endswith("\n") or not content else 1)
        return (
            f"{'Replaced' if replaced else 'Created'} {MOUNT}/{relative} "
            f"({format_size(len(data))}, {lines} {plural(lines, 'line')}). The user was shown "
            "it with a download link."
        )

    async def delete_file(self, context: TurnContext, path: str) -> str:
        await _progress(context, "page-blank", f"Deleting {_label(path, 'a file')}…")
        try:
            parts = file_parts(path)
            entry = await self._on_disk(context, "delete", path, delete_entry, parts)
        except WorkspaceError as error:
            return str(error)
        what = {
            "file": "the file", "folder": "the empty folder", "link": "the symbolic link",
            "other": "the special file",
        }[entry.kind]  # fmt: skip
        size = f" ({format_size(entry.size)})" if entry.kind == "file" else ""
        return f"Deleted {what} {MOUNT}/{entry.path}{size}."

    # -- helpers ---------------------------------------------------------------------------

    async def _on_disk(
        self,
        context: TurnContext,
        verb: str,
        path: str,
        operation: Callable[Concatenate[Path, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``operation(workspace, *args)`` in a worker thread; OS errors become messages."""
        user, thread = context.request_context.user_id, context.thread.id
        try:
            workspace = (
                self._workspaces.ensure(user, thread)
                if verb == "write"
                else self._workspaces.path(user, thread)
            )
            return await asyncio.to_thread(operation, workspace, *args, **kwargs)
        except PathOutsideWorkspaceError as error:
            raise WorkspaceError(f"This conversation has no workspace: {error}.") from None
        except OSError as error:
            raise describe(error, verb, path) from None

    def _url(self, context: TurnContext, relative: str) -> str:
        request = context.request_context
        return workspace_file_url(
            self._signer, request.base_url, request.user_id, context.thread.id, relative
        )

    async def _show(
        self, context: TurnContext, files: list[FileView], title: str, note: str | None
    ) -> None:
        item = WidgetItem(
            id=context.generate_id("message"),
            thread_id=context.thread.id,
            created_at=datetime.now(),
            widget=file_list_widget(files, title=title, note=note),
            copy_text="\n".join(file.name for file in files),
        )
        await context.stream(ThreadItemAddedEvent(item=item))
        await context.stream(ThreadItemDoneEvent(item=item))


def _label(path: str, fallback: str) -> str:
    """``path`` as a progress message shows it: short, printable."""
    if not path or path in {".", "./", MOUNT, MOUNT + "/"}:
        return fallback
    name = listed(path)
    return name if len(name) <= 60 else "…" + name[-59:]


async def _progress(context: TurnContext, icon: IconName, text: str) -> None:
    await context.stream(ProgressUpdateEvent(icon=icon, text=text))


class FileToolPlugin(ToolPlugin):
    """One of the file tools; those with a widget of their own show no workflow task."""

    def __init__(self, tool: FunctionTool) -> None:
        self.id = tool.name
        self._tool = tool
        self._own_widget = tool.name in WIDGET_TOOLS
        self.widget_templates = ("file_list",) if self._own_widget else ()

    def tool(self) -> FunctionTool:
        return self._tool

    async def call_started(self, turn: TurnContext, item: Any) -> None:
        if not self._own_widget:
            await super().call_started(turn, item)


def plugins(services: ToolServices) -> list[ToolPlugin]:
    tools = FileTools(services.workspaces, services.signer, services.settings)
    return [FileToolPlugin(tool) for tool in tools.tools()]
