"""``workbench chat``: send one message to a running server and render its stream as it arrives."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

import httpx
from chatkit.types import ThreadStreamEvent
from pydantic import TypeAdapter

_EVENT = TypeAdapter[ThreadStreamEvent](ThreadStreamEvent)


async def chat(
    url: str, message: str, thread_id: str | None, token: str | None, out: TextIO = sys.stdout
) -> int:
    user_input = {
        "content": [{"type": "input_text", "text": message}],
        "attachments": [],
        "inference_options": {},
    }
    if thread_id:
        body = {
            "type": "threads.add_user_message",
            "params": {"thread_id": thread_id, "input": user_input},
        }
    else:
        body = {"type": "threads.create", "params": {"input": user_input}}
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"

    logging.getLogger("httpx").setLevel(logging.WARNING)
    renderer = _Renderer(out)
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client,
        client.stream("POST", url, json=body, headers=headers) as response,
    ):
        if response.status_code != 200:
            await response.aread()
            print(f"error: HTTP {response.status_code}: {response.text}", file=sys.stderr)
            return 1
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                renderer.render(_EVENT.validate_json(line[len("data: ") :]))
    renderer.finish(thread_id)
    return 1 if renderer.failed else 0


class _Renderer:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.thread_id: str | None = None
        self.failed = False
        self._streamed_text: set[str] = set()

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def render(self, event: Any) -> None:
        match event.type:
            case "thread.created":
                self.thread_id = event.thread.id
            case "thread.updated":
                if event.thread.title:
                    self.write(f"\n[title] {event.thread.title}\n")
            case "thread.item.updated":
                update = event.update
                if update.type == "assistant_message.content_part.text_delta":
                    self._streamed_text.add(event.item_id)
                    self.write(update.delta)
                elif update.type == "widget.streaming_text.value_delta":
                    self.write(update.delta)
                elif update.type in {"workflow.task.added", "workflow.task.updated"}:
                    title = getattr(update.task, "title", None) or getattr(
                        update.task, "content", ""
                    )
                    self.write(f"\n[task] {title}\n")
            case "thread.item.done":
                self._render_done(event.item)
            case "progress_update":
                self.write(f"\n[progress] {event.text}\n")
            case "error":
                self.failed = True
                self.write(f"\n[error] {event.message or event.code}\n")
            case "notice":
                self.write(f"\n[{event.level}] {event.message}\n")

    def _render_done(self, item: Any) -> None:
        if item.type == "assistant_message":
            if item.id not in self._streamed_text:
                self.write("".join(part.text for part in item.content))
            self.write("\n")
        elif item.type == "widget":
            summary = item.copy_text or item.widget.type
            self.write(f"\n[widget] {summary}\n")
        elif item.type == "workflow":
            self.write(f"\n[workflow] {len(item.workflow.tasks)} task(s)\n")
        elif item.type == "client_tool_call":
            self.write(f"\n[client tool] {item.name}({json.dumps(item.arguments)})\n")

    def finish(self, thread_id: str | None) -> None:
        self.write(f"\nthread: {self.thread_id or thread_id}\n")
