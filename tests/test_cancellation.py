"""Stopping a response over a real socket: the run really stops, what the user saw is kept,
and a thread answers one request at a time."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from agents import FunctionTool, function_tool
from chatkit.types import AssistantMessageItem, ThreadItem

from tests.live import (
    EVENT,
    LiveServer,
    ScriptedOpenAI,
    add_message,
    create_thread,
    list_items,
    responses_step,
    running,
    stream_events,
    title_step,
)
from workbench.agent.response_events import FunctionCall, Text
from workbench.config import Settings
from workbench.server import CANCELLED_NOTE
from workbench.tools.python import TOOL_NAME as PYTHON_TOOL

SLOW_TEXT = "Here is the first part of a long answer, streamed slowly so it can be stopped."


def recording_tool(calls: list[str]) -> FunctionTool:
    @function_tool
    def save_note(note: str) -> str:
        """Save a note for the user."""
        calls.append(note)
        return "saved"

    return save_note


def is_text_delta(event: Any) -> bool:
    return bool(
        event.type == "thread.item.updated"
        and event.update.type == "assistant_message.content_part.text_delta"
    )


async def read_until(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    stop: Callable[[list[Any]], bool],
    linger: float = 0.0,
) -> list[Any]:
    """Read a streaming op until ``stop`` holds for the events so far, wait ``linger`` seconds
    without reading, then hang up (what the Stop button does)."""
    events: list[Any] = []
    async with client.stream("POST", url, json=body) as response:
        assert response.status_code == 200
        # Held in a name: an abandoned line iterator, once collected, closes the connection.
        lines = response.aiter_lines()
        async for line in lines:
            if line.startswith("data: "):
                events.append(EVENT.validate_json(line[len("data: ") :]))
                if stop(events):
                    break
        await asyncio.sleep(linger)
    return events


async def eventually(check: Callable[[], bool | Awaitable[bool]]) -> None:
    """Wait (10 s at most) until ``check`` holds."""
    for _ in range(200):
        if await _value(check()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met within 10 s")


async def stream_when_free(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> list[Any]:
    """Send a turn, retrying (10 s at most) while the thread still finishes a stopped one, as a
    client does with an error event that allows a retry."""
    async with asyncio.timeout(10):
        while True:
            events = await stream_events(client, url, body)
            if not any(e.type == "error" and "already answering" in (e.message or "")
                       for e in events):  # fmt: skip
                return events
            await asyncio.sleep(0.05)


def assistant_texts(items: list[ThreadItem]) -> list[str]:
    return [
        "".join(part.text for part in item.content)
        for item in items
        if isinstance(item, AssistantMessageItem)
    ]


async def _value(result: bool | Awaitable[bool]) -> bool:
    return await result if inspect.isawaitable(result) else result


def _text(entry: dict[str, Any]) -> str:
    content = entry.get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return content if isinstance(content, str) else ""


async def test_disconnect_stops_the_run_and_keeps_the_partial_answer(
    provider: LiveServer,
    scripted_openai: ScriptedOpenAI,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    provider.add_tool(recording_tool(calls))
    slow = responses_step(
        [Text(SLOW_TEXT), FunctionCall("save_note", '{"note": "never"}', call_id="call_n1")],
        delay=0.08,
    )
    scripted_openai.script(slow)

    events = await read_until(
        http, provider.url, create_thread("Tell me a long story"),
        lambda seen: sum(map(is_text_delta, seen)) >= 2,
    )  # fmt: skip
    seen = "".join(e.update.delta for e in events if is_text_delta(e))
    thread_id = events[0].thread.id

    # The server stops reading from the model as soon as the client is gone...
    await eventually(lambda: scripted_openai.finished[0] is not None)
    assert scripted_openai.finished == [False]
    # ...and the function call the model would have streamed next never runs.
    await asyncio.sleep(len(slow.events) * slow.delay)
    assert calls == []
    assert len(scripted_openai.requests) == 1

    async def partial_saved() -> bool:
        return bool(assistant_texts(await list_items(http, provider.url, thread_id)))

    await eventually(partial_saved)
    items = await list_items(http, provider.url, thread_id)
    [partial] = assistant_texts(items)
    assert partial.startswith(seen) and SLOW_TEXT.startswith(partial)
    assert len(partial) < len(SLOW_TEXT)
    assert items[0].type == "user_message"

    scripted_openai.script(responses_step([Text("Shorter then.")]), title_step("Stories"))
    events = await stream_when_free(http, provider.url, add_message(thread_id, "Shorter please"))
    assert [e for e in events if e.type == "error"] == []
    assert assistant_texts([e.item for e in events if e.type == "thread.item.done"]) == [
        "Shorter then."
    ]
    request = scripted_openai.streamed[-1]
    texts = [_text(entry) for entry in request["input"]]
    assert texts[0] == "Tell me a long story"
    assert partial in texts
    assert any(CANCELLED_NOTE in text for text in texts)
    assert texts[-1] == "Shorter please"
    assert texts.index(partial) < texts.index(f"[{CANCELLED_NOTE}]") < len(texts) - 1
    assert calls == []
    # A Stop is routine: nothing about it may reach the log as an error.
    gc.collect()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_stop_while_the_server_saves_an_item_still_stops_the_run(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    """The Stop can land while the SDK awaits the store (saving a finished message) rather than
    while it waits for the model: the run must stop all the same."""
    calls: list[str] = []
    provider.add_tool(recording_tool(calls))
    store = provider.workbench.store
    save = store.add_thread_item

    async def slow_save(thread_id: str, item: ThreadItem, context: Any) -> None:
        if isinstance(item, AssistantMessageItem):
            await asyncio.sleep(2.0)
        await save(thread_id, item, context)

    store.add_thread_item = slow_save  # type: ignore[method-assign]
    step = responses_step(
        [Text("A short answer."), FunctionCall("save_note", '{"note": "late"}', call_id="c2")],
        delay=0.2,
    )
    scripted_openai.script(step)

    events = await read_until(
        http, provider.url, create_thread("Answer, then save a note"),
        lambda seen: seen[-1].type == "thread.item.updated"
        and seen[-1].update.type == "assistant_message.content_part.done",
        linger=0.6,  # the message's output_item.done comes 0.2 s later; its save takes 2 s
    )  # fmt: skip
    thread_id = events[0].thread.id
    await asyncio.sleep(len(step.events) * step.delay + 0.5)

    assert calls == []
    assert scripted_openai.finished == [False]
    assert assistant_texts(await list_items(http, provider.url, thread_id)) == ["A short answer."]


async def test_second_stream_on_a_busy_thread_is_refused(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    scripted_openai.script(
        responses_step([Text("Hi!")]), title_step("Busy"),
        responses_step([Text(SLOW_TEXT)], delay=0.03),
    )  # fmt: skip
    events = await stream_events(http, provider.url, create_thread("Hello"))
    thread_id = events[0].thread.id
    first_delta = asyncio.Event()
    slow_events: list[Any] = []

    async def slow_turn() -> None:
        body = add_message(thread_id, "Tell me more")
        async with http.stream("POST", provider.url, json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    slow_events.append(EVENT.validate_json(line[len("data: ") :]))
                    if is_text_delta(slow_events[-1]):
                        first_delta.set()

    running_turn = asyncio.create_task(slow_turn())
    await asyncio.wait_for(first_delta.wait(), 10)
    rejected = await stream_events(http, provider.url, add_message(thread_id, "Me too"))
    assert not running_turn.done()
    await asyncio.wait_for(running_turn, 30)

    [error] = rejected
    assert error.type == "error"
    assert "already answering" in (error.message or "")
    assert [e for e in slow_events if e.type == "error"] == []
    assert assistant_texts([e.item for e in slow_events if e.type == "thread.item.done"]) == [
        SLOW_TEXT
    ]
    items = await list_items(http, provider.url, thread_id)
    assert [item.type for item in items] == [
        "user_message", "assistant_message", "user_message", "assistant_message",
    ]  # fmt: skip
    assert assistant_texts(items) == ["Hi!", SLOW_TEXT]
    assert len(scripted_openai.streamed) == 2
    # The thread is free again once the running turn is over.
    scripted_openai.script(responses_step([Text("Now it is your turn.")]))
    events = await stream_events(http, provider.url, add_message(thread_id, "Me too"))
    assert [e for e in events if e.type == "error"] == []


async def test_stopping_a_running_tool_cancels_it(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    """The demo model (no provider) calls a slow tool; a Stop during the call cancels it."""
    entered, cancelled, completed = threading.Event(), threading.Event(), threading.Event()

    @function_tool(name_override=PYTHON_TOOL)
    async def slow_python(code: str) -> str:
        """Run Python code."""
        entered.set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        completed.set()
        return "finished"

    with running(LiveServer(settings)) as live:
        live.add_tool(slow_python)
        body = create_thread("Run this:\n```python\nprint('hi')\n```")
        events: list[Any] = []

        async def read() -> None:
            async with http.stream("POST", live.url, json=body) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        events.append(EVENT.validate_json(line[len("data: ") :]))

        reader = asyncio.create_task(read())
        await eventually(entered.is_set)
        # Nothing streams while a tool runs: hang up between events (cancelling the reader
        # closes the connection).
        assert not reader.done()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        thread_id = events[0].thread.id
        await eventually(cancelled.is_set)
        assert not completed.is_set()

        events = await stream_when_free(http, live.url, add_message(thread_id, "Hello again"))
        assert [e for e in events if e.type == "error"] == []
        [reply] = assistant_texts([e.item for e in events if e.type == "thread.item.done"])
        assert "Hello again" in reply
    assert not completed.is_set()
