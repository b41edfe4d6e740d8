"""Tool activity the SDK's ``stream_agent_response`` does not show: function tool calls and
the provider's hosted web and file searches become workflow tasks that the user sees start
and finish."""

from __future__ import annotations

from typing import Any

from agents.stream_events import RawResponsesStreamEvent, RunItemStreamEvent, StreamEvent
from chatkit.agents import AgentContext
from chatkit.types import CustomTask, SearchTask, Task, URLSource

_OUTPUT_PREVIEW = 300


class ToolActivity:
    def __init__(self, context: AgentContext[Any], quiet_tools: frozenset[str] = frozenset()):
        self._context = context
        # Tools that render their own progress (the Python workspace's live widget).
        self._quiet_tools = quiet_tools
        self._tasks: dict[str, Task] = {}  # provider item id or tool call id -> its task

    async def observe(self, event: StreamEvent) -> None:
        if isinstance(event, RawResponsesStreamEvent):
            data = event.data
            if data.type == "response.output_item.added":
                await self._started(data.item)
            elif data.type == "response.output_item.done":
                await self._search_done(data.item)
        elif isinstance(event, RunItemStreamEvent) and event.name == "tool_output":
            await self._tool_done(event.item)

    async def _started(self, item: Any) -> None:
        if item.type == "function_call" and item.name not in self._quiet_tools:
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
