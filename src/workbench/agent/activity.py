"""Tool activity the SDK's ``stream_agent_response`` does not show.

* ``execute_python``: the code appears in the cell widget while the model is still writing
  it, fed from ``response.function_call_arguments.delta``.
* Other function tools and the provider's hosted web and file searches become workflow tasks
  that the user sees start and finish — except the file tools that show a widget of their own
  (``list_files``, ``write_file``): a widget ends the open workflow, which would save their
  task still spinning.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jiter
from agents.stream_events import RawResponsesStreamEvent, RunItemStreamEvent, StreamEvent
from chatkit.types import (
    CustomTask,
    SearchTask,
    Task,
    ThreadItemAddedEvent,
    ThreadItemUpdatedEvent,
    URLSource,
    WidgetStreamingTextValueDelta,
)

from workbench.agent.context import CodeCell, WorkbenchContext
from workbench.tools.files import WIDGET_TOOLS
from workbench.tools.python import TOOL_NAME, new_cell_item
from workbench.widgets import CODE_COMPONENT_ID, CellView

_OUTPUT_PREVIEW = 300


class ToolActivity:
    def __init__(self, context: WorkbenchContext) -> None:
        self._context = context
        self._tasks: dict[str, Task] = {}  # provider item id or tool call id -> its task
        self._code_calls: dict[str, str] = {}  # provider item id -> tool call id

    async def observe(self, event: StreamEvent) -> None:
        if isinstance(event, RawResponsesStreamEvent):
            data = event.data
            if data.type == "response.output_item.added":
                await self._started(data.item)
            elif data.type == "response.function_call_arguments.delta":
                await self._code_written(data.item_id, data.delta)
            elif data.type == "response.output_item.done" and data.item.type == "function_call":
                cell = self._context.cells.get(self._code_calls.get(data.item.id or "", ""))
                if cell is not None:
                    cell.written.set()
            elif data.type == "response.output_item.done":
                await self._search_done(data.item)
        elif isinstance(event, RunItemStreamEvent) and event.name == "tool_output":
            await self._tool_done(event.item)

    async def _started(self, item: Any) -> None:
        if item.type == "function_call" and item.name == TOOL_NAME:
            cell = CodeCell(new_cell_item(self._context), CellView())
            self._context.cells[item.call_id] = cell
            self._code_calls[item.id] = item.call_id
            await self._context.stream(ThreadItemAddedEvent(item=cell.item))
            return
        if item.type == "function_call" and item.name in WIDGET_TOOLS:
            return
        if item.type == "function_call":
            task: Task = CustomTask(
                title=f"Using {item.name}", icon="bolt", status_indicator="loading"
            )
            self._tasks[item.call_id] = task
        elif item.type == "web_search_call":
            task = SearchTask(title="Searching the web", status_indicator="loading")
            self._tasks[item.id] = task
        elif item.type == "file_search_call":
            task = SearchTask(title="Searching files", status_indicator="loading")
            self._tasks[item.id] = task
        else:
            return
        await self._context.add_workflow_task(task)

    async def _code_written(self, item_id: str, delta: str) -> None:
        cell = self._context.cells.get(self._code_calls.get(item_id, ""))
        if cell is None:
            return
        cell.arguments += delta
        code = _partial_code(cell.arguments)
        if code is None or len(code) <= len(cell.view.code) or not code.startswith(cell.view.code):
            return
        added = code[len(cell.view.code) :]
        cell.view = dataclasses.replace(cell.view, code=code)
        update = WidgetStreamingTextValueDelta(
            component_id=CODE_COMPONENT_ID, delta=added, done=False
        )
        await self._context.stream(ThreadItemUpdatedEvent(item_id=cell.item.id, update=update))

    async def _search_done(self, item: Any) -> None:
        task = self._tasks.pop(getattr(item, "id", None) or "", None)
        if not isinstance(task, SearchTask):
            return
        if item.type == "web_search_call":
            action = getattr(item, "action", None)
            query = getattr(action, "query", None)
            task.queries = [query] if query else []
            task.title_query = query
            task.sources = [
                URLSource(url=source.url, title=source.url)
                for source in getattr(action, "sources", None) or []
                if getattr(source, "url", None)
            ]
        else:
            task.queries = list(getattr(item, "queries", None) or [])
        task.status_indicator = "complete"
        await self._update(task)

    async def _tool_done(self, run_item: Any) -> None:
        raw = run_item.raw_item
        call_id = raw.get("call_id") if isinstance(raw, dict) else getattr(raw, "call_id", None)
        task = self._tasks.pop(call_id or "", None)
        if not isinstance(task, CustomTask):
            return
        output = str(run_item.output)
        if len(output) > _OUTPUT_PREVIEW:
            output = output[:_OUTPUT_PREVIEW] + "…"
        task.content = output
        task.status_indicator = "complete"
        await self._update(task)

    async def _update(self, task: Task) -> None:
        workflow = self._context.workflow_item
        if workflow is not None and task in workflow.workflow.tasks:
            await self._context.update_workflow_task(task, workflow.workflow.tasks.index(task))


def _partial_code(arguments: str) -> str | None:
    """The ``code`` argument as far as it has arrived (the JSON is still incomplete)."""
    try:
        parsed = jiter.from_json(arguments.encode(), partial_mode="trailing-strings")
    except ValueError:
        return None  # mid-escape: wait for the next delta
    code = parsed.get("code") if isinstance(parsed, dict) else None
    return code if isinstance(code, str) else None
