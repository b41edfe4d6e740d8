"""The tool plug-in seam: what every tool supplies, and the turn context it works in.

Neutral ground between ``agent/`` (which runs the model and dispatches what it streams) and
``tools/`` (one module per tool): neither imports the other, both import this.

* ``TurnContext`` (``workbench.turn``, offered here with the rest) is the Agents SDK run
  context of one response: ChatKit's ``AgentContext`` plus a slot of state per plug-in, the
  sources the answer may cite and the workflow tasks plug-ins show.
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

import logging
from collections.abc import (
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any

from agents import FunctionTool, Tool
from chatkit.agents import ResponseStreamConverter
from chatkit.types import (
    CustomTask,
    Task,
    ThreadItem,
    ThreadStreamEvent,
)

from workbench.turn import TurnContext

logger = logging.getLogger(__name__)

__all__ = [
    "ActionHandler",
    "ConverterWrapper",
    "DemoAnswer",
    "DemoTrigger",
    "FunctionToolPlugin",
    "ToolPlugin",
    "Toolset",
    "TurnContext",
    "field_of",
]

DemoTrigger = Callable[[str], str | None]
"""Given the user's message text, the JSON arguments of a demo call to the tool, or None."""

DemoAnswer = Callable[[str], str | None]
"""Given what a call to the tool returned, the demo model's answer, or None (it then quotes
the output whole)."""

ActionHandler = Callable[..., Awaitable[Any]]

_OUTPUT_PREVIEW = 300


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
                try:
                    await plugin.turn_finished(turn)
                except Exception:  # the answer is given: a tool's last word must not undo it
                    logger.exception("tool %s failed as the turn ended", plugin.id)
        return held

    async def aclose(self) -> None:
        for plugin in self.plugins:
            await plugin.aclose()
