"""``execute_python``: run code in the thread's sandboxed, stateful kernel.

The user watches it in one widget: the code as the model writes it (fed by the stream adapter
in ``agent/activity.py``), then running, then the outcome with output, images, tables and
download links. The model gets a bounded text summary that says what was cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import datetime

from agents import FunctionTool, function_tool
from agents.tool_context import ToolContext
from chatkit.types import (
    ProgressUpdateEvent,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    WidgetItem,
    WidgetRootUpdated,
)

from workbench.agent.context import CodeCell, WorkbenchContext
from workbench.config import Settings
from workbench.files.downloads import open_workspace_file, workspace_file_url
from workbench.files.signing import UrlSigner
from workbench.sandbox.kernel import CellOutput
from workbench.sandbox.manager import CellRun, KernelManager, SandboxUnavailableError
from workbench.tools.cell_output import cell_outputs, clean, describe_displays
from workbench.widgets import (
    CellStatus,
    CellView,
    ErrorView,
    FileView,
    format_size,
    python_cell_widget,
)

TOOL_NAME = "execute_python"
_CODE_ON_SCREEN_WITHIN = 10.0  # seconds a cell waits for its code to reach the user
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


def new_cell_item(context: WorkbenchContext) -> WidgetItem:
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


class PythonTool:
    def __init__(self, kernels: KernelManager, signer: UrlSigner, settings: Settings) -> None:
        self._kernels = kernels
        self._signer = signer
        self._settings = settings

    def tool(self) -> FunctionTool:
        @function_tool(name_override=TOOL_NAME, description_override=_DESCRIPTION)
        async def execute_python(context: ToolContext[WorkbenchContext], code: str) -> str:
            """
            Args:
                code: The Python code to run.
            """
            return await self.run(context.context, context.tool_call_id, code)

        return execute_python

    async def run(self, context: WorkbenchContext, call_id: str, code: str) -> str:
        cell = context.cells.get(call_id)
        if cell is None:  # the provider streamed no arguments (or a client replayed a call)
            cell = CodeCell(new_cell_item(context), CellView())
            context.cells[call_id] = cell
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

    async def _show(self, context: WorkbenchContext, cell: CodeCell, view: CellView) -> None:
        cell.view = view
        cell.item = cell.item.model_copy(update={"widget": python_cell_widget(view)})
        await context.stream(
            ThreadItemUpdatedEvent(
                item_id=cell.item.id, update=WidgetRootUpdated(widget=cell.item.widget)
            )
        )

    async def _finish(self, context: WorkbenchContext, cell: CodeCell, view: CellView) -> None:
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

        def open_file(path: str) -> int:
            return open_workspace_file(self._kernels.workspaces, user, thread, path)

        outputs = cell_outputs(
            output, run.changed_files, open_file=open_file,
            url=lambda path: url(path, inline=True),
            max_outputs=self._settings.cell_outputs, max_images=self._settings.cell_images,
        )  # fmt: skip
        error = None
        if output.status in {"timeout", "cpu_limit", "disk_quota", "crashed"}:
            # Why it stopped, not the KeyboardInterrupt the interrupt raised; its traceback
            # still shows where the cell was.
            traceback = output.error.traceback if output.error is not None else ""
            error = ErrorView(*_stop_reason(output, self._settings), clean(traceback))
        elif (failure := output.error) is not None:
            error = ErrorView(clean(failure.name), clean(failure.value), clean(failure.traceback))
        # The view is saved in Postgres: what the cell printed or named may hold NUL.
        return CellView(
            code=code,
            status=_STATUS[output.status],
            duration_seconds=output.duration,
            stdout=clean(output.stdout),
            stderr=clean(output.stderr),
            outputs=outputs,
            files=[
                FileView(clean(info.path), url(info.path), info.size) for info in run.changed_files
            ],
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
    return clean(_bounded("\n\n".join(parts), limit))


def _bounded(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    note = f"\n[... {len(text) - limit} characters cut from the middle ...]\n"
    keep = max(0, limit - len(note))
    return text[: keep // 2] + note + text[len(text) - (keep - keep // 2) :]
