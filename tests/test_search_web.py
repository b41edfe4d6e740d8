"""``search_web`` end to end: the live server, a real provider client (or the demo model), and a
scripted SearXNG on loopback; results reach the model, ``[n]`` become the message's sources,
and whatever SearXNG does the turn ends normally."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from chatkit.types import AssistantMessageItem, SearchTask, ThreadItem, URLSource

from tests.live import (
    LiveServer,
    ScriptedOpenAI,
    add_message,
    chat_step,
    create_thread,
    free_port,
    list_items,
    provider_settings,
    responses_step,
    running,
    started,
    stream_events,
    title_step,
    workflow_tasks,
)
from tests.searxng_server import Answer, ScriptedSearxng, result, results_body
from tests.test_cancellation import eventually, read_until
from tests.test_tool_seam import toolset_ids
from workbench.agent.response_events import FunctionCall, Text
from workbench.config import Settings
from workbench.doctor import doctor
from workbench.tools.services import Provider


@pytest.fixture
def searxng() -> Iterator[ScriptedSearxng]:
    yield from started(ScriptedSearxng())


@pytest.fixture
def chat_search(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI, searxng: ScriptedSearxng
) -> Iterator[LiveServer]:
    settings = provider_settings(
        database_url, tmp_path / "data", scripted_openai, chat=True, searxng_url=searxng.url
    )
    with running(LiveServer(settings)) as live:
        yield live


def search_call(call_id: str, query: str) -> Any:
    return chat_step(tool_call=(call_id, "search_web", f'{{"query": "{query}"}}'))


def messages(items: list[ThreadItem]) -> list[AssistantMessageItem]:
    return [item for item in items if isinstance(item, AssistantMessageItem)]


def search_tasks(items: list[Any]) -> list[SearchTask]:
    return [task for task in workflow_tasks(items) if isinstance(task, SearchTask)]


def cited(message: AssistantMessageItem) -> list[tuple[str, int | None]]:
    return [
        (a.source.url, a.index)
        for part in message.content
        for a in part.annotations
        if isinstance(a.source, URLSource)
    ]


def tool_outputs(body: dict[str, Any]) -> list[str]:
    """What the model was given back from tools, Chat Completions or Responses."""
    if "messages" in body:
        return [str(m["content"]) for m in body["messages"] if m["role"] == "tool"]
    return [str(e["output"]) for e in body["input"] if e.get("type") == "function_call_output"]


async def test_chat_completions_results_and_citations(
    chat_search: LiveServer,
    scripted_openai: ScriptedOpenAI,
    searxng: ScriptedSearxng,
    http: httpx.AsyncClient,
) -> None:
    answer = "Python 3.13 is out [1][2]. Its docs [7] are elsewhere."
    scripted_openai.script(
        search_call("call_s1", "python release"), chat_step(answer), title_step("Py", chat=True)
    )

    events = await stream_events(http, chat_search.url, create_thread("What is new?"))

    assert [e for e in events if e.type == "error"] == []
    assert searxng.requests == [{"q": "python release", "format": "json"}]
    [given] = tool_outputs(scripted_openai.streamed[1])
    for n in (1, 2):
        assert f"[{n}] Python page {n}\nhttps://example.org/python/{n}\nSnippet {n}" in given
    saved = await list_items(http, chat_search.url, events[0].thread.id)
    [message] = messages(saved)
    text = "Python 3.13 is out. Its docs [7] are elsewhere."
    assert message.content[0].text == text
    at = len("Python 3.13 is out")
    assert cited(message) == [
        ("https://example.org/python/1", at),
        ("https://example.org/python/2", at),
    ]
    assert message.content[0].annotations[0].source.title == "Python page 1"
    [done] = [e.item for e in events if e.type == "thread.item.done" and e.item.id == message.id]
    assert done == message
    [task] = search_tasks(saved)
    assert task.status_indicator == "complete"
    assert (task.title_query, task.queries) == ("python release", ["python release"])
    assert [(s.url, s.title) for s in task.sources] == [
        ("https://example.org/python/1", "Python page 1"),
        ("https://example.org/python/2", "Python page 2"),
    ]

    # The transcript keeps the text as the model wrote it, and a new turn cites afresh.
    scripted_openai.script(chat_step("As I said [1]."))
    events = await stream_events(http, chat_search.url, add_message(message.thread_id, "And?"))
    assistant = [m for m in scripted_openai.streamed[2]["messages"] if m["role"] == "assistant"]
    assert answer in [m.get("content") for m in assistant]
    [later] = messages(await list_items(http, chat_search.url, message.thread_id))[1:]
    assert (later.content[0].text, cited(later)) == ("As I said [1].", [])


async def test_numbers_run_on_across_searches(
    chat_search: LiveServer,
    scripted_openai: ScriptedOpenAI,
    searxng: ScriptedSearxng,
    http: httpx.AsyncClient,
) -> None:
    searxng.script(Answer(results=[result(1, "cats")]), Answer(results=[result(1, "dogs")]))
    scripted_openai.script(
        search_call("call_a", "cats"), search_call("call_b", "dogs"),
        chat_step("Cats [1] and dogs [2]."), title_step("Pets", chat=True),
    )  # fmt: skip

    events = await stream_events(http, chat_search.url, create_thread("Pets?"))

    assert [e for e in events if e.type == "error"] == []
    assert "[2] Dogs page 1" in tool_outputs(scripted_openai.streamed[2])[-1]
    saved = await list_items(http, chat_search.url, events[0].thread.id)
    [message] = messages(saved)
    assert cited(message) == [
        ("https://example.org/cats/1", len("Cats")),
        ("https://example.org/dogs/1", len("Cats and dogs")),
    ]
    assert [task.queries for task in search_tasks(saved)] == [["cats"], ["dogs"]]


async def test_openai_provider_with_hosted_search_off(
    database_url: str,
    tmp_path: Path,
    scripted_openai: ScriptedOpenAI,
    searxng: ScriptedSearxng,
    http: httpx.AsyncClient,
) -> None:
    settings = provider_settings(
        database_url, tmp_path / "data", scripted_openai,
        searxng_url=searxng.url, openai_web_search=False,
    )  # fmt: skip
    scripted_openai.script(
        responses_step([FunctionCall("search_web", '{"query": "pep 8"}', call_id="call_r1")]),
        responses_step([Text("Use four spaces [2].")]),
        title_step("Style"),
    )
    with running(LiveServer(settings)) as live:
        events = await stream_events(http, live.url, create_thread("Indent?"))
        saved = await list_items(http, live.url, events[0].thread.id)

    assert [e for e in events if e.type == "error"] == []
    tools = scripted_openai.streamed[0]["tools"]
    assert [t["type"] for t in tools if t.get("name") == "search_web"] == ["function"]
    assert "cite each claim with its result's number" in scripted_openai.streamed[0]["instructions"]
    # Hosted search is off: search_web is the model's only web search.
    assert [t for t in tools if t["type"].startswith("web_search")] == []
    assert "[2] Python page 2" in tool_outputs(scripted_openai.streamed[1])[0]
    [message] = messages(saved)
    assert cited(message) == [("https://example.org/python/2", len("Use four spaces"))]


async def test_demo_model_searches_on_web_prefix(
    settings: Settings, searxng: ScriptedSearxng, http: httpx.AsyncClient
) -> None:
    configured = settings.model_copy(update={"searxng_url": searxng.url})
    with running(LiveServer(configured)) as live:
        events = await stream_events(http, live.url, create_thread("web: python release"))
        saved = await list_items(http, live.url, events[0].thread.id)

    assert [e for e in events if e.type == "error"] == []
    assert searxng.queries == ["python release"]
    [message] = messages(saved)
    assert [url for url, _ in cited(message)] == [
        "https://example.org/python/1", "https://example.org/python/2",
    ]  # fmt: skip
    assert "Python page 1" in message.content[0].text
    assert "[1]" not in message.content[0].text
    [task] = search_tasks(saved)
    assert task.queries == ["python release"]


async def test_demo_model_without_searxng_just_echoes(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    events = await stream_events(http, live.url, create_thread("web: python release"))
    [message] = messages(await list_items(http, live.url, events[0].thread.id))
    assert "You said: web: python release" in message.content[0].text


FAILURES = {
    "down": (None, "is unreachable"),
    "500": (Answer(status=500, body=b"Internal Server Error"), "HTTP 500"),
    "403": (Answer(status=403, body=b"Forbidden"), "add `json` to `search.formats`"),
    "invalid json": (Answer(body=b"<html>not json</html>"), "not JSON"),
    "wrong shape": (Answer(body=b'{"answer": 42}'), "not a list of search results"),
    "slow": (Answer(delay=3.0), "did not answer within 0.5 s"),
    "too large": (Answer(body=results_body([result(n) for n in range(1, 400)])), "larger than"),
}


@pytest.mark.parametrize("kind", list(FAILURES))
async def test_searxng_failures_are_tool_results_the_model_explains(
    kind: str,
    database_url: str,
    tmp_path: Path,
    scripted_openai: ScriptedOpenAI,
    searxng: ScriptedSearxng,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    answer, expected = FAILURES[kind]
    url = f"http://127.0.0.1:{free_port()}" if answer is None else searxng.url
    if answer is not None:
        searxng.script(answer)
    settings = provider_settings(
        database_url, tmp_path / "data", scripted_openai, chat=True,
        searxng_url=url, searxng_timeout=0.5, searxng_max_kb=16,
    )  # fmt: skip
    explanation = "The web search is unavailable right now."
    scripted_openai.script(
        search_call("call_f", "anything"), chat_step(explanation), title_step("x", chat=True)
    )
    with (
        caplog.at_level(logging.WARNING, logger="workbench.tools.search_web"),
        running(LiveServer(settings)) as live,
    ):
        events = await stream_events(http, live.url, create_thread("Search something"))
        saved = await list_items(http, live.url, events[0].thread.id)

    assert [e for e in events if e.type == "error"] == []
    [given] = tool_outputs(scripted_openai.streamed[1])
    assert given.startswith("The web search failed:") and expected in given
    assert [m.content[0].text for m in messages(saved)] == [explanation]
    [task] = search_tasks(saved)
    assert (task.title, task.status_indicator, task.sources) == (
        "Web search failed",
        "complete",
        [],
    )
    warnings = [r for r in caplog.records if r.name == "workbench.tools.search_web"]
    assert len(warnings) == 1 and expected in warnings[0].getMessage()


async def test_stop_mid_search_saves_the_task_stopped(
    database_url: str,
    tmp_path: Path,
    scripted_openai: ScriptedOpenAI,
    searxng: ScriptedSearxng,
    http: httpx.AsyncClient,
) -> None:
    settings = provider_settings(
        database_url, tmp_path / "data", scripted_openai, chat=True, searxng_url=searxng.url
    )
    searxng.script(Answer(delay=5.0))
    scripted_openai.script(search_call("call_x", "slow"))
    with running(LiveServer(settings)) as live:
        events = await read_until(
            http, live.url, create_thread("Search slowly"), lambda seen: searching(seen, "slow")
        )
        thread_id = events[0].thread.id

        async def saved_stopped() -> bool:
            tasks = search_tasks(await list_items(http, live.url, thread_id))
            return [(t.title, t.status_indicator) for t in tasks] == [
                ("Web search stopped", "none")
            ]

        await eventually(saved_stopped)


def searching(events: list[Any], query: str) -> bool:
    """Whether the events so far show a search task running for ``query``."""
    return any(
        e.type == "thread.item.updated"
        and e.update.type in {"workflow.task.added", "workflow.task.updated"}
        and isinstance(e.update.task, SearchTask)
        and e.update.task.title == f"Searching the web for “{query}”"
        for e in events
    )


async def offered(tmp_path: Path, provider: Provider, **overrides: Any) -> bool:
    return "search_web" in await toolset_ids(tmp_path, provider, **overrides)


async def test_offered_only_where_it_can_work(tmp_path: Path) -> None:
    url = "http://127.0.0.1:8888"
    for provider in ("openai", "chat_completions", "demo"):
        assert not await offered(tmp_path, provider)
    assert await offered(tmp_path, "chat_completions", searxng_url=url)
    assert await offered(tmp_path, "demo", searxng_url=url)
    # OpenAI searches the web itself unless told not to: never two web searches.
    assert not await offered(tmp_path, "openai", searxng_url=url)
    assert await offered(tmp_path, "openai", searxng_url=url, openai_web_search=False)


@pytest.mark.parametrize("formats", [("html", "json"), ("html",)])
async def test_doctor_checks_searxng_answers_json(
    settings: Settings, formats: tuple[str, ...]
) -> None:
    with running_searxng(formats) as searxng:
        out = io.StringIO()
        await doctor(settings.model_copy(update={"searxng_url": searxng.url}), out)
    report = out.getvalue()
    if "json" in formats:
        assert f"[ok] search_web: SearXNG at {searxng.url} answers JSON" in report
    else:
        assert "[PROBLEM] search_web: SearXNG refused to answer in JSON (HTTP 403)" in report
        assert "fix: add `json` to `search.formats` in SearXNG's settings.yml" in report


@contextmanager
def running_searxng(formats: tuple[str, ...]) -> Iterator[ScriptedSearxng]:
    yield from started(ScriptedSearxng(formats))
