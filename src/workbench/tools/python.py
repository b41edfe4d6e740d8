"""``execute_python``: run code in the thread's sandboxed, stateful kernel.

The user watches it in one widget: the code as the model writes it (this plug-in's
``call_event`` streams each arguments delta into the widget), then running, then the outcome
with output, images, tables and download links. The model gets a bounded text summary that
says what was cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jiter
from agents import FunctionTool, function_tool
from agents.tool_context import ToolContext
from chatkit.types import (
    ProgressUpdateEvent,
    ThreadItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    WidgetItem,
    WidgetRootUpdated,
    WidgetStreamingTextValueDelta,
)

from workbench.config import Settings
from workbench.files.downloads import workspace_file_url
from workbench.files.signing import UrlSigner
from workbench.plugins import ToolPlugin, TurnContext
from workbench.sandbox.manager import CellRun, KernelManager, SandboxUnavailableError
from workbench.sandbox.outputs import CellOutput
from workbench.sandbox.workspace_fs import file_parts, open_file
from workbench.tools.cell_output import cell_outputs, describe_displays
from workbench.tools.services import ToolServices
from workbench.widgets import (
    CODE_COMPONENT_ID,
    CellStatus,
    CellView,
    ErrorView,
    FileView,
    format_size,
    python_cell_widget,
)

TOOL_NAME = "execute_python"
_CODE_ON_SCREEN_WITHIN = 10.0  # seconds a cell waits for its code to reach the user
_FENCED_PYTHON = re.compile(r"```(?:python|py)\s*\n(.*?)```", re.DOTALL)
_STATUS: dict[str, CellStatus] = {
    "ok": "done", "error": "error", "timeout": "timed_out", "cpu_limit": "timed_out",
    "disk_quota": "error", "interrupted": "stopped", "crashed": "error",
}  # fmt: skip
_DESCRIPTION = """Run Python code in this conversation's own Jupyter kernel and return its output.

State persists between calls: variables, imports and files stay. The working directory is
/workspace; files written there are shown to the user with download links, and files the user
uploaded are there too. pandas, numpy and matplotlib are installed; a figure shown with
plt.show() or left as the last expression appears to the user, as does what display() shows
(Markdown, LaTeX, HTML tables, images) and a preview of the images, CSV, Markdown, text and
JSON files a cell writes. There is no network access.
Each call has time and memory limits; long output is cut."""


@dataclass
class CodeCell:
    """One ``execute_python`` call's widget, from the first streamed character to the end."""

    item: WidgetItem
    view: CellView
    arguments: str = ""  # the raw JSON arguments streamed so far
    # Set once the user has been sent all of the code. The tool waits for it: an in-process
    # model finishes writing long before the client has been sent what it wrote, and the
    # code must be on screen before the cell shows as running.
    written: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Cells:
    """This turn's cells, by tool call id, and the provider item id of each call."""

    by_call: dict[str, CodeCell] = field(default_factory=dict)
    call_of_item: dict[str, str] = field(default_factory=dict)


def plugins(services: ToolServices) -> list[ToolPlugin]:
    return [PythonTool(services.kernels, services.signer, services.settings)]


def new_cell_item(context: TurnContext) -> WidgetItem:
    view = CellView()
    return WidgetItem(
        id=context.generate_id("message"),
        thread_id=context.thread.id,
        created_at=datetime.now(),
        widget=python_cell_widget(view),
        copy_text="",
    )


def stopped_cell(cell: CodeCell) -> WidgetItem:
    """The widget of a cell whose run was stopped, as it stood."""
    view = dataclasses.replace(cell.view, status="stopped")
    return cell.item.model_copy(update={"widget": python_cell_widget(view), "copy_text": view.code})


class PythonTool(ToolPlugin):
    id = TOOL_NAME
    widget_templates = ("python_cell",)

    def __init__(self, kernels: KernelManager, signer: UrlSigner, settings: Settings) -> None:
        self._kernels = kernels
        self._signer = signer
        self._settings = settings

    def tool(self) -> FunctionTool:
        @function_tool(name_override=TOOL_NAME, description_override=_DESCRIPTION)
        async def execute_python(context: ToolContext[TurnContext], code: str) -> str:
            """
            Args:
                code: The Python code to run.
            """
            return await self.run(context.context, context.tool_call_id, code)

        return execute_python

    def demo_trigger(self, text: str) -> str | None:
        code = _FENCED_PYTHON.search(text)
        return json.dumps({"code": code.group(1)}) if code else None

    # -- the cell widget while the model writes the code ----------------------------------

    async def call_started(self, turn: TurnContext, item: Any) -> None:
        cell = CodeCell(new_cell_item(turn), CellView())
        cells = _cells(turn)
        cells.by_call[item.call_id] = cell
        cells.call_of_item[item.id] = item.call_id
        await turn.stream(ThreadItemAddedEvent(item=cell.item))

    async def call_event(self, turn: TurnContext, event: Any) -> None:
        if event.type != "response.function_call_arguments.delta":
            return
        cells = _cells(turn)
        cell = cells.by_call.get(cells.call_of_item.get(event.item_id, ""))
        if cell is None:
            return
        cell.arguments += event.delta
        code = _partial_code(cell.arguments)
        if code is None or len(code) <= len(cell.view.code) or not code.startswith(cell.view.code):
            return
        added = code[len(cell.view.code) :]
        cell.view = dataclasses.replace(cell.view, code=code)
        update = WidgetStreamingTextValueDelta(
            component_id=CODE_COMPONENT_ID, delta=added, done=False
        )
        await turn.stream(ThreadItemUpdatedEvent(item_id=cell.item.id, update=update))

    async def call_written(self, turn: TurnContext, item: Any) -> None:
        cells = _cells(turn)
        cell = cells.by_call.get(cells.call_of_item.get(item.id or "", ""))
        if cell is not None:
            cell.written.set()

    async def call_output(self, turn: TurnContext, call_id: str, output: Any) -> None:
        return None  # the cell widget already shows the outcome

    def stopped(self, turn: TurnContext, items: list[ThreadItem]) -> list[ThreadItem]:
        cells = {cell.item.id: cell for cell in _cells(turn).by_call.values()}
        return [stopped_cell(cells[item.id]) if item.id in cells else item for item in items]

    # -- the run ---------------------------------------------------------------------------

    async def run(self, context: TurnContext, call_id: str, code: str) -> str:
        cells = _cells(context)
        cell = cells.by_call.get(call_id)
        if cell is None:  # the provider streamed no arguments (or a client replayed a call)
            cell = CodeCell(new_cell_item(context), CellView())
            cells.by_call[call_id] = cell
            await context.stream(ThreadItemAddedEvent(item=cell.item))
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cell.written.wait(), _CODE_ON_SCREEN_WITHIN)
        await self._show(context, cell, dataclasses.replace(cell.view, code=code, status="running"))
        await context.stream(ProgressUpdateEvent(icon="square-code", text="Running…"))
        thread, user = context.thread.id, context.request_context.user_id

        async def starting() -> None:
            await context.stream(ProgressUpdateEvent(icon="square-code", text="Starting Python…"))

        try:
            run = await self._kernels.run_cell(user, thread, code, on_starting=starting)
        except SandboxUnavailableError as error:
            view = CellView(code=code, status="error", error=ErrorView("Unavailable", str(error)))
            await self._finish(context, cell, view)
            return str(error)
        except asyncio.CancelledError:
            # Stop or a disconnect: the kernel interrupts the cell; it and its state live on.
            cell.view = dataclasses.replace(cell.view, status="stopped")
            raise
        view = self._final_view(code, run, context.request_context.base_url, user, thread)
        await self._finish(context, cell, view)
        return model_summary(run, self._settings.tool_output_chars)

    async def _show(self, context: TurnContext, cell: CodeCell, view: CellView) -> None:
        cell.view = view
        cell.item = cell.item.model_copy(update={"widget": python_cell_widget(view)})
        await context.stream(
            ThreadItemUpdatedEvent(
                item_id=cell.item.id, update=WidgetRootUpdated(widget=cell.item.widget)
            )
        )

    async def _finish(self, context: TurnContext, cell: CodeCell, view: CellView) -> None:
        cell.view = view
        cell.item = cell.item.model_copy(
            update={"widget": python_cell_widget(view), "copy_text": view.code}
        )
        await context.stream(ThreadItemDoneEvent(item=cell.item))

    def _final_view(
        self, code: str, run: CellRun, base_url: str, user: str, thread: str
    ) -> CellView:
        output = run.output

        def url(path: str, inline: bool = False) -> str:
            return workspace_file_url(self._signer, base_url, user, thread, path, inline=inline)

        def open_in_workspace(path: str) -> int:
            return open_file(self._kernels.workspaces.path(user, thread), file_parts(path))

        outputs = cell_outputs(
            output, run.changed_files, open_file=open_in_workspace,
            url=lambda path: url(path, inline=True),
            max_outputs=self._settings.cell_outputs, max_images=self._settings.cell_images,
        )  # fmt: skip
        error = None
        if output.status in {"timeout", "cpu_limit", "disk_quota", "crashed"}:
            # Why it stopped, not the KeyboardInterrupt the interrupt raised; its traceback
            # still shows where the cell was.
            traceback = output.error.traceback if output.error is not None else ""
            error = ErrorView(*_stop_reason(output, self._settings), traceback)
        elif (failure := output.error) is not None:
            error = ErrorView(failure.name, failure.value, failure.traceback)
        return CellView(
            code=code,
            status=_STATUS[output.status],
            duration_seconds=output.duration,
            stdout=output.stdout,
            stderr=output.stderr,
            outputs=outputs,
            files=[FileView(info.path, url(info.path), info.size) for info in run.changed_files],
            error=error,
        )


def _stop_reason(output: CellOutput, settings: Settings) -> tuple[str, str]:
    match output.status:
        case "timeout":
            return "Timeout", f"The cell ran longer than {settings.sandbox_timeout:g} s."
        case "cpu_limit":
            return "CPU limit", f"The cell used more than {settings.sandbox_cpu_seconds:g} s CPU."
        case "disk_quota":
            return "Disk quota", (
                f"The cell grew the workspace past its {settings.workspace_quota_mb} MB quota. "
                "Delete files that are no longer needed."
            )
        case _:
            return "Kernel crashed", "The Python kernel stopped (out of memory?)."


def model_summary(run: CellRun, limit: int) -> str:
    """What the model reads back: everything useful, at most ``limit`` characters."""
    output = run.output
    parts = [f"status: {output.status} ({output.duration:.2f} s)"]
    if run.state_lost:
        parts.append(
            f"NOTE: {run.state_lost}; variables and imports from earlier cells are gone "
            "(files in /workspace remain). Re-run what you need."
        )
    for label, text in (("stdout", output.stdout), ("stderr", output.stderr)):
        if text:
            parts.append(f"{label}:\n{text.rstrip()}")
    if output.cut_characters:
        parts.append(f"[{output.cut_characters} more characters of output were not kept]")
    parts += describe_displays(output, limit)
    kept = "" if output.kernel_restarted else "; the kernel's state was kept"
    if output.status in {"timeout", "cpu_limit"}:
        parts.append(f"the cell was interrupted (time limit){kept}")
    if output.status == "disk_quota":
        parts.append(
            f"the cell grew the workspace past its disk quota and was stopped if still "
            f"running{kept}. Delete files that are no longer needed before writing more"
        )
    if output.error is not None:
        parts.append(f"error: {output.error.name}: {output.error.value}\n{output.error.traceback}")
    if run.changed_files:
        listing = ", ".join(f"{f.path} ({format_size(f.size)})" for f in run.changed_files[:50])
        parts.append("files created or changed (the user has download links): " + listing)
    return _bounded("\n\n".join(parts), limit)


def _bounded(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    note = f"\n[... {len(text) - limit} characters cut from the middle ...]\n"
    keep = max(0, limit - len(note))
    return text[: keep // 2] + note + text[len(text) - (keep - keep // 2) :]


def _cells(turn: TurnContext) -> _Cells:
    return turn.state(TOOL_NAME, _Cells)


def _partial_code(arguments: str) -> str | None:
    """The ``code`` argument as far as it has arrived (the JSON is still incomplete)."""
    try:
        parsed = jiter.from_json(arguments.encode(), partial_mode="trailing-strings")
    except ValueError:
        return None  # mid-escape: wait for the next delta
    code = parsed.get("code") if isinstance(parsed, dict) else None
    return code if isinstance(code, str) else None
