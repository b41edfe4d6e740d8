"""Real model providers end to end: the live server, the real ``openai`` client, and a scripted
OpenAI API on a real socket (Responses SSE and Chat Completions chunks)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents import FunctionTool, function_tool
from agents.models.fake_id import FAKE_RESPONSES_ID
from chatkit.types import AssistantMessageItem, ThoughtTask, URLSource, WorkflowItem

from tests.live import (
    LiveServer,
    ScriptedOpenAI,
    add_message,
    chat_step,
    create_thread,
    error_step,
    list_items,
    provider_settings,
    responses_step,
    running,
    stream_events,
    title_step,
)
from workbench.agent.response_events import FunctionCall, Reasoning, Refusal, Text
from workbench.config import Settings


def recording_tool(calls: list[str]) -> FunctionTool:
    @function_tool
    def look_up_weather(city: str) -> str:
        """Today's weather in a city."""
        calls.append(city)
        return f"Sunny and 21 C in {city}"

    return look_up_weather


def assistant_done(events: list[Any]) -> list[AssistantMessageItem]:
    return [
        e.item
        for e in events
        if e.type == "thread.item.done" and isinstance(e.item, AssistantMessageItem)
    ]


def text_of(item: AssistantMessageItem) -> str:
    return "".join(part.text for part in item.content)


def errors(events: list[Any]) -> list[Any]:
    return [e for e in events if e.type == "error"]


def messages_in(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) of every message a provider request carries, Responses or Chat."""
    entries: str | list[Any] = body.get("input") or body.get("messages") or []
    if isinstance(entries, str):
        return [("user", entries)]
    found = []
    for entry in entries:
        if "role" not in entry:
            continue
        content = entry.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text") or part.get("refusal") or "" for part in content)
        found.append((entry["role"], content or ""))
    return found


async def test_text_streams_in_deltas(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    reply = "Paris is the capital of France, on the Seine."
    scripted_openai.script(responses_step([Text(reply)], chunk_size=6), title_step("Capitals"))

    events = await stream_events(http, provider.url, create_thread("Capital of France?"))

    assert errors(events) == []
    deltas = [
        e.update.delta
        for e in events
        if e.type == "thread.item.updated"
        and e.update.type == "assistant_message.content_part.text_delta"
    ]
    assert len(deltas) >= 5
    assert "".join(deltas) == reply
    [message] = assistant_done(events)
    assert text_of(message) == reply
    saved = await list_items(http, provider.url, events[0].thread.id)
    assert [item.type for item in saved] == ["user_message", "assistant_message"]
    assert isinstance(saved[1], AssistantMessageItem) and text_of(saved[1]) == reply
    request = scripted_openai.streamed[0]
    assert messages_in(request)[-1] == ("user", "Capital of France?")


async def test_reasoning_summary_becomes_a_workflow(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    thought = "The user wants a number; 6 times 7 is 42."
    scripted_openai.script(
        responses_step([Reasoning(thought), Text("42")]), title_step("Multiplication")
    )

    events = await stream_events(http, provider.url, create_thread("6 x 7?"))

    assert errors(events) == []
    workflows = [
        e.item for e in events if e.type == "thread.item.done" and isinstance(e.item, WorkflowItem)
    ]
    assert len(workflows) == 1
    tasks = workflows[0].workflow.tasks
    assert [type(task) for task in tasks] == [ThoughtTask]
    assert isinstance(tasks[0], ThoughtTask) and tasks[0].content == thought
    assert [text_of(m) for m in assistant_done(events)] == ["42"]
    saved = await list_items(http, provider.url, events[0].thread.id)
    assert [item.type for item in saved] == ["user_message", "workflow", "assistant_message"]


async def test_function_call_runs_the_tool_once(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    calls: list[str] = []
    provider.add_tool(recording_tool(calls))
    arguments = '{"city": "Lisbon"}'
    scripted_openai.script(
        responses_step([FunctionCall("look_up_weather", arguments, call_id="call_w1")],
                       chunk_size=4),
        responses_step([Text("It is sunny in Lisbon today.")]),
        title_step("Lisbon weather"),
    )  # fmt: skip

    events = await stream_events(http, provider.url, create_thread("Weather in Lisbon?"))

    assert errors(events) == []
    assert calls == ["Lisbon"]
    assert [text_of(m) for m in assistant_done(events)] == ["It is sunny in Lisbon today."]
    first, second = scripted_openai.streamed
    assert "look_up_weather" in [tool.get("name") for tool in first["tools"]]
    by_type = {entry.get("type"): entry for entry in second["input"]}
    call = by_type["function_call"]
    assert (call["call_id"], call["name"], call["arguments"]) == (
        "call_w1", "look_up_weather", arguments,
    )  # fmt: skip
    output = by_type["function_call_output"]
    assert output["call_id"] == "call_w1"
    assert "Sunny and 21 C in Lisbon" in str(output["output"])
    types = [entry.get("type") for entry in second["input"]]
    assert types.index("function_call") < types.index("function_call_output")


async def test_url_citations_reach_the_message(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    text = "Python 3.13 was released in October 2024."
    citation = {
        "type": "url_citation", "url": "https://www.python.org/downloads/release/python-3130/",
        "title": "Python 3.13.0", "start_index": 0, "end_index": len(text),
    }  # fmt: skip
    scripted_openai.script(
        responses_step([Text(text, annotations=[citation])]), title_step("Python release")
    )

    events = await stream_events(http, provider.url, create_thread("When was 3.13 out?"))

    assert errors(events) == []
    added = [
        e.update.annotation
        for e in events
        if e.type == "thread.item.updated"
        and e.update.type == "assistant_message.content_part.annotation_added"
    ]
    assert len(added) == 1
    [message] = assistant_done(events)
    assert text_of(message) == text
    saved = await list_items(http, provider.url, events[0].thread.id)
    assert isinstance(saved[-1], AssistantMessageItem)
    for found in (added, message.content[0].annotations, saved[-1].content[0].annotations):
        [annotation] = found
        assert isinstance(annotation.source, URLSource)
        assert annotation.source.url == citation["url"]
        assert annotation.source.title == "Python 3.13.0"


async def test_refusal_is_shown_as_a_message(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    refusal = "I can't help with that request."
    scripted_openai.script(responses_step([Refusal(refusal)]), title_step("Declined"))

    events = await stream_events(http, provider.url, create_thread("Something forbidden"))

    assert errors(events) == []
    [message] = assistant_done(events)
    assert text_of(message) == refusal
    saved = await list_items(http, provider.url, events[0].thread.id)
    assert isinstance(saved[-1], AssistantMessageItem) and text_of(saved[-1]) == refusal

    scripted_openai.script(responses_step([Text("Sure, here is a haiku.")]))
    events = await stream_events(http, provider.url, add_message(saved[0].thread_id, "A haiku?"))
    assert errors(events) == []
    assert messages_in(scripted_openai.streamed[-1]) == [
        ("user", "Something forbidden"), ("assistant", refusal), ("user", "A haiku?"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (429, "rate_limit_exceeded", ["rate limit", "429"]),
        (500, "server_error", ["model provider", "failed", "500"]),
    ],
)
async def test_provider_errors_end_the_stream_with_a_message(
    provider: LiveServer,
    scripted_openai: ScriptedOpenAI,
    http: httpx.AsyncClient,
    status: int,
    kind: str,
    expected: list[str],
) -> None:
    scripted_openai.script(error_step(status, "Upstream trouble", kind))

    events = await stream_events(http, provider.url, create_thread("Hello?"))

    [error] = errors(events)
    assert events[-1] is error
    assert error.message is not None
    for words in expected:
        assert words in error.message.lower()
    assert error.allow_retry is True
    assert assistant_done(events) == []

    health = await http.get(provider.base + "/healthz")
    assert health.status_code == 200
    scripted_openai.script(responses_step([Text("Back to normal.")]), title_step("Hello"))
    events = await stream_events(http, provider.url, add_message(events[0].thread.id, "Again?"))
    assert errors(events) == []
    assert [text_of(m) for m in assistant_done(events)] == ["Back to normal."]


async def test_model_picker(
    database_url: str,
    tmp_path: Path,
    scripted_openai: ScriptedOpenAI,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKBENCH_MODELS", "gpt-test-large, gpt-test-mini")
    settings = provider_settings(database_url, tmp_path, scripted_openai, model="gpt-test")
    with running(LiveServer(settings)) as live:
        scripted_openai.script(
            responses_step([Text("From the large model.")]), title_step("Picked"),
            responses_step([Text("From the default model.")]),
        )  # fmt: skip
        events = await stream_events(
            http, live.url, create_thread("Use the big one", model="gpt-test-large")
        )
        assert errors(events) == []
        thread_id = events[0].thread.id
        events = await stream_events(http, live.url, add_message(thread_id, "Now the default"))
        assert errors(events) == []

        refused = await http.post(live.url, json=add_message(thread_id, "x", model="gpt-nope"))
        assert refused.status_code == 400
        message = refused.json()["error"]["message"]
        for name in ("gpt-nope", "gpt-test", "gpt-test-large", "gpt-test-mini"):
            assert name in message

    assert [body["model"] for body in scripted_openai.streamed] == ["gpt-test-large", "gpt-test"]
    assert [body["model"] for body in scripted_openai.not_streamed] == ["gpt-test"]


async def test_second_turn_sends_the_transcript(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    scripted_openai.script(
        responses_step([Text("Nice to meet you, Ada.")]), title_step("Introductions"),
        responses_step([Text("Your name is Ada.")]),
    )  # fmt: skip
    events = await stream_events(http, provider.url, create_thread("My name is Ada."))
    thread_id = events[0].thread.id
    events = await stream_events(http, provider.url, add_message(thread_id, "What is my name?"))

    assert errors(events) == []
    first, second = scripted_openai.streamed
    assert messages_in(first) == [("user", "My name is Ada.")]
    assert messages_in(second) == [
        ("user", "My name is Ada."),
        ("assistant", "Nice to meet you, Ada."),
        ("user", "What is my name?"),
    ]


async def test_thread_title_is_written_by_the_model(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    scripted_openai.script(
        responses_step([Text("Try a sourdough starter.")]), title_step("  \"Baking bread\"  "),
        responses_step([Text("Feed it daily.")]),
    )  # fmt: skip
    question = "How do I bake bread at home without commercial yeast?"

    events = await stream_events(http, provider.url, create_thread(question))

    titles = [e.thread.title for e in events if e.type == "thread.updated"]
    assert titles == ["Baking bread"]
    types = [e.type for e in events]
    assert types.index("thread.item.done", 2) < types.index("thread.updated")
    [title_request] = scripted_openai.not_streamed
    assert title_request["input"] == question
    assert "title" in title_request["instructions"].lower()
    thread_id = events[0].thread.id
    got = await http.post(
        provider.url, json={"type": "threads.get_by_id", "params": {"thread_id": thread_id}}
    )
    assert got.json()["title"] == "Baking bread"

    events = await stream_events(http, provider.url, add_message(thread_id, "And then?"))
    assert errors(events) == []
    assert [e for e in events if e.type == "thread.updated"] == []
    assert len(scripted_openai.not_streamed) == 1


async def test_reasoning_settings_reach_the_request(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    settings = provider_settings(
        database_url, tmp_path, scripted_openai,
        reasoning_effort="low", reasoning_summary="detailed",
    )  # fmt: skip
    with running(LiveServer(settings)) as live:
        scripted_openai.script(responses_step([Text("Done.")]), title_step("Reasoning"))
        events = await stream_events(http, live.url, create_thread("Think briefly"))
    assert errors(events) == []
    [request] = scripted_openai.streamed
    assert request["reasoning"] == {"effort": "low", "summary": "detailed"}


async def test_retry_rewinds_the_transcript(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    scripted_openai.script(
        responses_step([Text("First answer.")]), title_step("Retry"),
        responses_step([Text("Second answer.")]),
        responses_step([Text("A better first answer.")]),
    )  # fmt: skip
    events = await stream_events(http, provider.url, create_thread("First question"))
    thread_id = events[0].thread.id
    first_message = events[1].item
    assert first_message.type == "user_message"
    await stream_events(http, provider.url, add_message(thread_id, "Second question"))

    retry = {
        "type": "threads.retry_after_item",
        "params": {"thread_id": thread_id, "item_id": first_message.id},
    }
    events = await stream_events(http, provider.url, retry)

    assert errors(events) == []
    assert [text_of(m) for m in assistant_done(events)] == ["A better first answer."]
    assert messages_in(scripted_openai.streamed[-1]) == [("user", "First question")]
    saved = await list_items(http, provider.url, thread_id)
    assert [item.type for item in saved] == ["user_message", "assistant_message"]
    assert saved[0].id == first_message.id
    assert isinstance(saved[1], AssistantMessageItem)
    assert text_of(saved[1]) == "A better first answer."


# -- Chat Completions ----------------------------------------------------------------------


@pytest.fixture
def chat_provider(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI
) -> Iterator[LiveServer]:
    settings: Settings = provider_settings(
        database_url, tmp_path / "data", scripted_openai, chat=True
    )
    with running(LiveServer(settings)) as live:
        yield live


async def test_chat_completions_two_turns(
    chat_provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    scripted_openai.script(
        chat_step("Hello! I am a local model."), title_step("Greeting", chat=True),
        chat_step("You said hello before."),
    )  # fmt: skip
    events = await stream_events(http, chat_provider.url, create_thread("Hello"))
    assert errors(events) == []
    assert [e.thread.title for e in events if e.type == "thread.updated"] == ["Greeting"]
    thread_id = events[0].thread.id
    first_ids = [m.id for m in assistant_done(events)]
    events = await stream_events(http, chat_provider.url, add_message(thread_id, "And now?"))
    assert errors(events) == []
    second_ids = [m.id for m in assistant_done(events)]

    assert all(path.endswith("/chat/completions") for path in scripted_openai.paths)
    first, second = scripted_openai.streamed
    assert messages_in(first)[1:] == [("user", "Hello")]
    assert messages_in(second)[1:] == [
        ("user", "Hello"),
        ("assistant", "Hello! I am a local model."),
        ("user", "And now?"),
    ]
    [assistant] = [m for m in second["messages"] if m["role"] == "assistant"]
    assert assistant["content"] == "Hello! I am a local model."
    saved = await list_items(http, chat_provider.url, thread_id)
    ids = [item.id for item in saved]
    assert len(set(ids)) == 4
    assert FAKE_RESPONSES_ID not in ids
    assert [item.id for item in saved if item.type == "assistant_message"] == [
        *first_ids, *second_ids,
    ]  # fmt: skip


async def test_chat_completions_tool_call(
    chat_provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    calls: list[str] = []
    chat_provider.add_tool(recording_tool(calls))
    scripted_openai.script(
        chat_step(tool_call=("call_c1", "look_up_weather", '{"city": "Oslo"}')),
        chat_step("Sunny in Oslo."),
        title_step("Oslo", chat=True),
    )
    events = await stream_events(http, chat_provider.url, create_thread("Oslo weather?"))

    assert errors(events) == []
    assert calls == ["Oslo"]
    assert [text_of(m) for m in assistant_done(events)] == ["Sunny in Oslo."]
    second = scripted_openai.streamed[1]["messages"]
    [call_message] = [m for m in second if m.get("tool_calls")]
    assert call_message["tool_calls"][0]["id"] == "call_c1"
    assert call_message["tool_calls"][0]["function"]["name"] == "look_up_weather"
    [tool_message] = [m for m in second if m["role"] == "tool"]
    assert tool_message["tool_call_id"] == "call_c1"
    assert "Sunny and 21 C in Oslo" in str(tool_message["content"])


async def test_transcription_goes_to_the_audio_api(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    audio = b"\x1aE\xdf\xa3 fake webm bytes"
    body = {
        "type": "input.transcribe",
        "params": {"audio_base64": base64.b64encode(audio).decode(), "mime_type": "audio/webm"},
    }
    response = await http.post(provider.url, json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"text": f"heard {len(audio)} bytes"}
    (sent,) = scripted_openai.transcriptions
    assert sent["bytes"] == audio and sent["filename"] == "dictation.webm"
    assert sent["model"] == "gpt-4o-mini-transcribe"
