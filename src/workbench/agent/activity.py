"""Tool activity the SDK's ``stream_agent_response`` does not show, dispatched to plug-ins.

The SDK renders messages, reasoning and client tool calls, but drops every function tool
call, its arguments as they stream, and the hosted tools' progress. This dispatcher hands
each of those events to the plug-in that owns the call (``Toolset.owner_of``): the code cell
that fills in as the model writes, a search task, a progress line. It knows no tool by name.
"""

from __future__ import annotations

import logging
from typing import Any

from agents.stream_events import RawResponsesStreamEvent, RunItemStreamEvent, StreamEvent

from workbench.plugins import ToolPlugin, Toolset, TurnContext

logger = logging.getLogger(__name__)


class ToolActivity:
    def __init__(self, turn: TurnContext, toolset: Toolset) -> None:
        self.turn = turn
        self._toolset = toolset
        self._by_item: dict[str, ToolPlugin] = {}  # provider item id -> its plug-in
        self._by_call: dict[str, ToolPlugin] = {}  # function call id -> its plug-in

    async def observe(self, event: StreamEvent) -> None:
        """Hand ``event`` to the plug-in that owns it. A plug-in's failure to show a call is
        logged and the answer goes on: it must never cost the user the response."""
        try:
            await self._dispatch(event)
        except Exception:
            logger.exception("a tool plug-in failed to show a %s event", _kind(event))

    async def _dispatch(self, event: StreamEvent) -> None:
        if isinstance(event, RawResponsesStreamEvent):
            await self._raw(event.data)
        elif isinstance(event, RunItemStreamEvent) and event.name == "tool_output":
            raw = event.item.raw_item
            call_id = raw.get("call_id") if isinstance(raw, dict) else getattr(raw, "call_id", None)
            plugin = self._by_call.pop(str(call_id), None)
            if plugin is not None:
                output = getattr(event.item, "output", None)
                await plugin.call_output(self.turn, str(call_id), output)

    async def _raw(self, data: Any) -> None:
        kind = getattr(data, "type", "")
        if kind == "response.output_item.added":
            plugin = self._toolset.owner_of(data.item)
            if plugin is None:
                return
            self._by_item[data.item.id or ""] = plugin
            if getattr(data.item, "call_id", None):
                self._by_call[data.item.call_id] = plugin
            await plugin.call_started(self.turn, data.item)
        elif kind == "response.output_item.done":
            plugin = self._by_item.pop(getattr(data.item, "id", None) or "", None)
            if plugin is not None:
                await plugin.call_written(self.turn, data.item)
        elif (plugin := self._by_item.get(getattr(data, "item_id", None) or "")) is not None:
            await plugin.call_event(self.turn, data)


def _kind(event: StreamEvent) -> str:
    if isinstance(event, RawResponsesStreamEvent):
        return str(getattr(event.data, "type", "raw"))
    return str(getattr(event, "name", event.type))
