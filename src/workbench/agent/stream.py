"""Fixes applied to Agents SDK stream events before ``stream_agent_response`` reads them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from agents import RunResultStreaming
from agents.models.fake_id import FAKE_RESPONSES_ID
from agents.stream_events import RawResponsesStreamEvent, StreamEvent
from chatkit.agents import _EventWrapper
from pydantic import BaseModel

from workbench.agent.activity import ToolActivity


class AdaptedRun:
    """Stands in for ``RunResultStreaming`` where the SDK only reads ``stream_events()``."""

    def __init__(
        self,
        result: RunResultStreaming,
        new_item_id: Callable[[], str],
        activity: ToolActivity,
    ) -> None:
        self.result = result
        self._new_item_id = new_item_id
        self._activity = activity
        self._cancelled = False

    def cancel(self) -> None:
        """Stop the run at once: the client went away or pressed Stop."""
        self._cancelled = True
        self.result.cancel()

    async def stream_events(self) -> AsyncIterator[StreamEvent]:
        ids = _ItemIds(self._new_item_id)
        async for event in self.result.stream_events():
            if isinstance(event, RawResponsesStreamEvent):
                _normalize_annotation(event.data)
                ids.rekey(event.data)
            with self._activity.turn.holding() as held:
                await self._activity.observe(event)
            for shown in held:  # what the tools showed for this event, ahead of the next
                yield _EventWrapper(shown)  # type: ignore[misc]
            yield event
        if self._cancelled:
            # A cancelled `stream_agent_response` leaves its pending read of this stream
            # behind; ending that read as cancelled rather than with StopAsyncIteration keeps
            # asyncio from logging "Task exception was never retrieved" on every Stop.
            raise asyncio.CancelledError


def _normalize_annotation(data: Any) -> None:
    # openai 3.x parses streamed citations into a class the SDK's union does not accept;
    # a plain dict validates fine.
    if getattr(data, "type", None) == "response.output_text.annotation.added":
        annotation = data.annotation
        if isinstance(annotation, BaseModel):
            data.annotation = annotation.model_dump(mode="json", exclude_none=True)


class _ItemIds:
    """Chat Completions models label every output item ``__fake_id__``; ChatKit needs them
    distinct (they become message ids), so each output index of each response gets its own."""

    def __init__(self, new_item_id: Callable[[], str]) -> None:
        self._new_item_id = new_item_id
        self._by_output_index: dict[int, str] = {}

    def rekey(self, data: Any) -> None:
        if getattr(data, "type", None) == "response.created":
            self._by_output_index.clear()
        index = getattr(data, "output_index", None)
        if index is None:
            return
        item = getattr(data, "item", None)
        if item is not None and getattr(item, "id", None) == FAKE_RESPONSES_ID:
            item.id = self._id_for(index)
        if getattr(data, "item_id", None) == FAKE_RESPONSES_ID:
            data.item_id = self._id_for(index)

    def _id_for(self, output_index: int) -> str:
        if output_index not in self._by_output_index:
            self._by_output_index[output_index] = self._new_item_id()
        return self._by_output_index[output_index]
