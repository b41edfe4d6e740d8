"""The turn context: the Agents SDK run context of one response, as the tool plug-ins see it.

ChatKit's ``AgentContext`` plus a slot of state per plug-in, the sources the answer may cite,
notes for the turn's system prompt, and the workflow tasks plug-ins show — with how what they
stream reaches the client (relayed as the turn starts, held during a dispatch, otherwise
ChatKit's queue). Part of the plug-in seam: ``workbench.plugins`` offers it with the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

from chatkit.agents import AgentContext
from chatkit.types import (
    Source,
    Task,
    ThreadItemReplacedEvent,
    ThreadStreamEvent,
    WorkflowItem,
)
from pydantic import Field, PrivateAttr

from workbench.context import RequestContext

T = TypeVar("T")


class TurnContext(AgentContext[RequestContext]):
    # Per plug-in id: whatever that plug-in keeps for the length of one response (a code
    # cell's widget, a search's task). Here, not in the plug-in, because one plug-in object
    # serves every thread at once.
    tool_state: dict[str, Any] = Field(default_factory=dict)
    # Sources the answer may cite as ``[n]``, numbered across every search of this turn.
    citable: dict[int, Source] = Field(default_factory=dict)
    # Lines for this turn's system prompt, from plug-ins as the turn starts.
    notes: list[str] = Field(default_factory=list)
    _held: list[ThreadStreamEvent] | None = PrivateAttr(default=None)
    _relayed: asyncio.Queue[ThreadStreamEvent | None] | None = PrivateAttr(default=None)
    # Every task shown this turn: the workflow holding it, and its title should it be stopped.
    _shown: list[tuple[Task, WorkflowItem, str]] = PrivateAttr(default_factory=list)

    async def stream(self, event: ThreadStreamEvent) -> None:
        if self._held is not None:
            self._held.append(event)
        elif self._relayed is not None:
            self._relayed.put_nowait(event)
        else:
            await super().stream(event)

    async def relaying(self, work: Awaitable[None]) -> AsyncGenerator[ThreadStreamEvent, None]:
        """Run ``work`` (the turn's start), yielding what it streams as it streams it.

        Before the model's stream begins nobody else would send it: a task a plug-in shows
        while it waits for documents to be indexed would reach the client only once done.
        """
        queue: asyncio.Queue[ThreadStreamEvent | None] = asyncio.Queue()
        self._relayed = queue
        running = asyncio.ensure_future(work)
        running.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (event := await queue.get()) is not None:
                yield event
            self._relayed = None  # from now on, to ChatKit's queue: read after these
            while not queue.empty():  # streamed (by a task it started) after it returned
                if (late := queue.get_nowait()) is not None:
                    yield late
            await running  # what it raised
        finally:
            self._relayed = None
            if not running.done():  # a Stop: the work stops with the turn
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running

    @contextlib.contextmanager
    def holding(self) -> Iterator[list[ThreadStreamEvent]]:
        """Keep what is streamed meanwhile in a list instead of ChatKit's queue.

        ChatKit merges its queue with the model's stream in no set order: a task that a hook
        shows for one model event could otherwise reach the client after the next event (a
        message that closes the workflow, which would then be saved before the task's
        workflow was ever added). The dispatcher holds what hooks stream and sends it ahead
        of the next model event.
        """
        held: list[ThreadStreamEvent] = []
        self._held = held
        try:
            yield held
        finally:
            self._held = None

    def state(self, key: str, factory: Callable[[], T]) -> T:
        """This turn's state for ``key``, created by ``factory`` on first use."""
        if key not in self.tool_state:
            self.tool_state[key] = factory()
        value: T = self.tool_state[key]
        return value

    def cite(self, sources: Sequence[Source]) -> list[int]:
        """Number ``sources`` after those already given this turn; their numbers, in order."""
        first = len(self.citable) + 1
        numbers = list(range(first, first + len(sources)))
        self.citable.update(zip(numbers, sources, strict=True))
        return numbers

    async def show_task(self, task: Task, *, stopped_title: str | None = None) -> None:
        """Add a task to the response's workflow (opening one if needed).

        Should the response be stopped while the task still runs, it is saved with
        ``stopped_title`` (default: its title, marked stopped) and no spinner.
        """
        await self.add_workflow_task(task)
        assert self.workflow_item is not None
        title = stopped_title or f"{task.title or 'Task'} (stopped)"
        self._shown.append((task, self.workflow_item, title))

    async def update_task(self, task: Task, *, always: bool = False, **fields: Any) -> None:
        """Set ``fields`` of ``task`` and send it if any of them changed (or ``always``)."""
        if always or any(getattr(task, name) != value for name, value in fields.items()):
            for name, value in fields.items():
                setattr(task, name, value)
            await self.refresh_task(task)

    async def refresh_task(self, task: Task) -> None:
        """Send ``task``'s new state to the client, and to the store if need be."""
        # By identity: tasks in the same state compare equal.
        workflow = next((w for shown, w, _ in self._shown if shown is task), None)
        if workflow is None:
            return
        if workflow is self.workflow_item:
            tasks = workflow.workflow.tasks
            index = next(i for i, shown in enumerate(tasks) if shown is task)
            await self.update_workflow_task(task, index)
        else:
            # Its workflow closed (a widget or a message came meanwhile, as with calls in
            # parallel) and was saved with the task still running: save it anew.
            await self.stream(ThreadItemReplacedEvent(item=workflow))

    def stop_tasks(self) -> list[WorkflowItem]:
        """Mark every task still running as stopped; the workflows that hold them."""
        touched: list[WorkflowItem] = []
        for task, workflow, title in self._shown:
            if task.status_indicator == "loading":
                task.title = title
                task.status_indicator = "none"
                if not any(workflow is seen for seen in touched):
                    touched.append(workflow)
        return touched
