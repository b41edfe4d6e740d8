"""The tool plug-in seam: what every tool supplies, and the turn context it works in.

Neutral ground between ``agent/`` (which runs the model and dispatches what it streams) and
``tools/`` (one module per tool): neither imports the other, both import this.

* ``TurnContext`` is the Agents SDK run context of one response: ChatKit's ``AgentContext``
  plus a slot of state per plug-in and the workflow tasks plug-ins show.
* ``ToolPlugin`` is one tool: its id (the function name the model sees, or the hosted tool's
  type), its Agents SDK definition, its line of instructions, how its call shows while the
  model streams it, what a Stop keeps of its items, its widget-action handlers and its
  demo-model trigger, and ``aclose`` for what it holds (called at server shutdown). The
  defaults show a call as a workflow task that completes with a preview of the output; a
  plug-in overrides only what it shows differently.
* A plug-in may also wrap the ChatKit ``ResponseStreamConverter`` of a turn (how a generated
  image's bytes become a URL, say: ``ConverterWrapper``) and rewrite its own items on their
  way into and out of the thread's model transcript (``transcript_saving`` /
  ``transcript_replaying``: bytes that belong in the blob store, not in Postgres).
* What a plug-in offers may depend on the thread: ``turn_tool`` gives this turn's definition
  (a hosted file search names the thread's vector store) or none, and only the tools offered
  bring their instructions. ``TurnContext.notes`` carries what a plug-in learnt as the turn
  started (documents that cannot be searched) into that turn's system prompt.
* ``Toolset`` is the plug-ins of one server, built by ``tools.registry``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, TypeVar

from agents import FunctionTool, Tool
from chatkit.agents import AgentContext, ResponseStreamConverter
from chatkit.types import (
    CustomTask,
    Source,
    Task,
    ThreadItem,
    ThreadItemReplacedEvent,
    ThreadStreamEvent,
    WorkflowItem,
)
from pydantic import Field, PrivateAttr

from workbench.context import RequestContext

T = TypeVar("T")

DemoTrigger = Callable[[str], str | None]
"""Given the user's message text, the JSON arguments of a demo call to the tool, or None."""

DemoAnswer = Callable[[str], str | None]
"""Given what a call to the tool returned, the demo model's answer, or None (it then quotes
the output whole)."""

ActionHandler = Callable[..., Awaitable[Any]]

_OUTPUT_PREVIEW = 300


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


class ToolPlugin:
    """One tool. Subclasses set ``id`` and implement ``tool()``; the rest is optional."""

    id: str = ""
    """The function name the model sees, or the hosted tool's type (``web_search``)."""

    item_type: str = "function_call"
    """The type of the provider output item a call to this tool streams as."""

    instructions: str | None = None
    """A line for the system prompt, when the tool's description alone is not enough."""

    response_include: tuple[str, ...] = ()
    """Extra output the Responses request must ask for (``ModelSettings.response_include``)."""

    widget_templates: tuple[str, ...] = ()
    """The ``widgets/*.widget`` templates this tool renders."""

    actions: Mapping[str, ActionHandler] = {}
    """Widget-action handlers by action type."""

    def tool(self) -> Tool:
        raise NotImplementedError

    def turn_tool(self, turn: TurnContext, tool: Tool) -> Tool | None:
        """What this turn offers: ``tool`` (``tool()``, built once), one made for the thread
        (after ``turn_started``), or None to offer nothing this turn."""
        return tool

    def demo_trigger(self, text: str) -> str | None:
        """The arguments the offline demo model calls this tool with for ``text``, if any."""
        return None

    def demo_answer(self, output: str) -> str | None:
        """What the demo model answers once this tool returned ``output`` (None: quote it)."""
        return None

    # -- how a call shows while the model streams it --------------------------------------
    # ``item`` is the provider's output item (a ``function_call`` or a hosted tool's call);
    # ``event`` any other streamed event naming that item (arguments deltas, progress).

    async def call_started(self, turn: TurnContext, item: Any) -> None:
        task = CustomTask(title=f"Using {self.id}", icon="bolt", status_indicator="loading")
        self._tasks(turn)[_call_key(item)] = task
        await turn.show_task(task)

    async def call_event(self, turn: TurnContext, event: Any) -> None:
        return None

    async def call_written(self, turn: TurnContext, item: Any) -> None:
        """The model finished writing the call (``output_item.done``)."""
        return None

    async def call_output(self, turn: TurnContext, call_id: str, output: Any) -> None:
        """A function tool's call returned ``output`` (what the model reads)."""
        task = self._tasks(turn).pop(call_id, None)
        if not isinstance(task, CustomTask):
            return
        text = str(output)
        task.content = text if len(text) <= _OUTPUT_PREVIEW else text[:_OUTPUT_PREVIEW] + "…"
        task.status_indicator = "complete"
        await turn.refresh_task(task)

    def stopped(self, turn: TurnContext, items: list[ThreadItem]) -> list[ThreadItem]:
        """What a Stop saves of the response's pending items: this tool's, as they stood."""
        return items

    # -- the turn around the calls ------------------------------------------------------------

    async def turn_started(self, turn: TurnContext, message: ThreadItem | None) -> None:
        """A response begins, answering ``message`` (the user's, or the thread's latest item),
        before the model is called: take in what the message brings (its documents)."""
        return None

    async def turn_finished(self, turn: TurnContext) -> None:
        """The model is done (not called on a Stop, which ``stopped`` handles). What is
        streamed here is sent, and saved, before the response ends."""
        return None

    async def aclose(self) -> None:
        """Release what the plug-in holds (an HTTP client); called once, at server shutdown."""
        return None

    # -- how the turn's stream is converted, and how its calls are kept ---------------------

    def stream_converter(
        self, turn: TurnContext, inner: ResponseStreamConverter
    ) -> ResponseStreamConverter:
        """The converter ChatKit's ``stream_agent_response`` uses for this turn: ``inner``, or
        a ``ConverterWrapper`` of it changing what this tool streams (image URLs, citations)."""
        return inner

    async def transcript_saving(self, turn: TurnContext, item: dict[str, Any]) -> dict[str, Any]:
        """One of this tool's items (``item_type``) as it goes into the model transcript."""
        return item

    async def transcript_replaying(self, turn: TurnContext, item: dict[str, Any]) -> dict[str, Any]:
        """One of this tool's items as it comes out of the transcript, back to the model."""
        return item

    def _tasks(self, turn: TurnContext) -> dict[str, Task]:
        return turn.state(f"{self.id}:tasks", dict)


class FunctionToolPlugin(ToolPlugin):
    """A plain Agents SDK function tool, shown as a workflow task."""

    def __init__(self, tool: FunctionTool, demo_trigger: DemoTrigger | None = None) -> None:
        self.id = tool.name
        self._tool = tool
        self._demo_trigger = demo_trigger

    def tool(self) -> FunctionTool:
        return self._tool

    def demo_trigger(self, text: str) -> str | None:
        return self._demo_trigger(text) if self._demo_trigger else None


class ConverterWrapper(ResponseStreamConverter):
    """A converter that hands everything to ``inner``: subclass it, override what one tool
    changes, and the other plug-ins' wrappers keep theirs."""

    def __init__(self, inner: ResponseStreamConverter) -> None:
        super().__init__(partial_images=inner.partial_images)
        self.inner = inner

    async def base64_image_to_url(
        self, image_id: str, base64_image: str, partial_image_index: int | None = None
    ) -> str:
        return await self.inner.base64_image_to_url(image_id, base64_image, partial_image_index)

    def partial_image_index_to_progress(self, partial_image_index: int) -> float:
        return self.inner.partial_image_index_to_progress(partial_image_index)

    async def file_citation_to_annotation(self, file_citation: Any) -> Any:
        return await self.inner.file_citation_to_annotation(file_citation)

    async def container_file_citation_to_annotation(self, container_file_citation: Any) -> Any:
        return await self.inner.container_file_citation_to_annotation(container_file_citation)

    async def url_citation_to_annotation(self, url_citation: Any) -> Any:
        return await self.inner.url_citation_to_annotation(url_citation)


def _call_key(item: Any) -> str:
    return str(getattr(item, "call_id", None) or getattr(item, "id", ""))


def field_of(item: Any, name: str) -> Any:
    """``item[name]`` of a dict (a transcript item), ``item.name`` of a parsed one, or None."""
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


class Toolset:
    """The plug-ins a server offers, in the order the model is shown them."""

    def __init__(self, plugins: Iterable[ToolPlugin]) -> None:
        self.plugins = list(plugins)
        self._by_id = {plugin.id: plugin for plugin in self.plugins}
        if len(self._by_id) != len(self.plugins):
            raise ValueError("two tool plug-ins share an id")
        # Built once: every turn asks for them.
        self._include = list(dict.fromkeys(n for p in self.plugins for n in p.response_include))
        self._triggers = {plugin.id: plugin.demo_trigger for plugin in self.plugins}
        self._answers = {plugin.id: plugin.demo_answer for plugin in self.plugins}
        self._tools = [plugin.tool() for plugin in self.plugins]
        self._hosted = {
            plugin.item_type: plugin
            for plugin in self.plugins
            if plugin.item_type != "function_call"
        }

    @property
    def ids(self) -> list[str]:
        return list(self._by_id)

    def get(self, plugin_id: str) -> ToolPlugin | None:
        return self._by_id.get(plugin_id)

    def tools(self, turn: TurnContext) -> list[Tool]:
        """The tools offered this turn."""
        return [tool for _, tool in self._offered(turn)]

    def instructions(self, turn: TurnContext) -> str:
        """The instructions of the tools offered this turn."""
        return "\n".join(p.instructions for p, _ in self._offered(turn) if p.instructions)

    def _offered(self, turn: TurnContext) -> Iterator[tuple[ToolPlugin, Tool]]:
        for plugin, built in zip(self.plugins, self._tools, strict=True):
            if (tool := plugin.turn_tool(turn, built)) is not None:
                yield plugin, tool

    def response_include(self) -> list[str]:
        return list(self._include)

    def demo_triggers(self) -> dict[str, DemoTrigger]:
        return dict(self._triggers)

    def demo_answers(self) -> dict[str, DemoAnswer]:
        return dict(self._answers)

    def owner_of(self, item: Any) -> ToolPlugin | None:
        """The plug-in an output item (a tool call, streamed or in the transcript) belongs to."""
        item_type = field_of(item, "type")
        if item_type == "function_call":
            return self._by_id.get(str(field_of(item, "name") or ""))
        return self._hosted.get(str(item_type))

    def stream_converter(self, turn: TurnContext) -> ResponseStreamConverter:
        converter = ResponseStreamConverter()
        for plugin in self.plugins:
            converter = plugin.stream_converter(turn, converter)
        return converter

    async def transcript_saving(self, turn: TurnContext, item: Any) -> Any:
        plugin = self.owner_of(item) if isinstance(item, dict) else None
        return item if plugin is None else await plugin.transcript_saving(turn, item)

    async def transcript_replaying(self, turn: TurnContext, item: Any) -> Any:
        plugin = self.owner_of(item) if isinstance(item, dict) else None
        return item if plugin is None else await plugin.transcript_replaying(turn, item)

    def replacing(self, plugin: ToolPlugin) -> Toolset:
        """This toolset with ``plugin`` in place of the one with its id (or added last)."""
        if plugin.id not in self._by_id:
            return Toolset([*self.plugins, plugin])
        return Toolset(plugin if old.id == plugin.id else old for old in self.plugins)

    def stopped(self, turn: TurnContext, items: Sequence[ThreadItem]) -> list[ThreadItem]:
        """What a Stop saves: no task left spinning (in the open workflow or one saved
        earlier this turn), then what each tool keeps of its own items."""
        # Ours, not the pending copies: the tasks in ours are the ones marked stopped.
        stopped = {workflow.id: workflow for workflow in turn.stop_tasks()}
        kept = [stopped.pop(item.id, item) for item in items] + list(stopped.values())
        for plugin in self.plugins:
            kept = plugin.stopped(turn, kept)
        return kept

    async def turn_started(self, turn: TurnContext, message: ThreadItem | None) -> None:
        for plugin in self.plugins:
            await plugin.turn_started(turn, message)

    async def turn_finished(self, turn: TurnContext) -> list[ThreadStreamEvent]:
        """What the plug-ins stream as the turn ends, for the server to send last."""
        with turn.holding() as held:
            for plugin in self.plugins:
                await plugin.turn_finished(turn)
        return held

    async def aclose(self) -> None:
        for plugin in self.plugins:
            await plugin.aclose()
