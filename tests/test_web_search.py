"""OpenAI's hosted web search through the real ``openai`` client and a scripted Responses API:
what the request asks for, the search task the user watches, citations, and Stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from chatkit.types import AssistantMessageItem, SearchTask, URLSource, WorkflowItem

from tests.live import (
    LiveServer,
    ScriptedOpenAI,
    add_message,
    create_thread,
    list_items,
    provider_settings,
    responses_step,
    running,
    stream_events,
    title_step,
    workflow_tasks,
)
from tests.test_cancellation import eventually, read_until
from tests.test_tool_seam import DOCUMENTS, LOCAL_TOOLS
from workbench.agent.response_events import Text, WebSearch
from workbench.tools.web_search import SOURCES_INCLUDE

PEP = "https://peps.python.org/pep-0719/"
NEWS = "https://www.python.org/downloads/release/python-3130/"
ANSWER = "Python 3.13 came out on 7 October 2024."


def search_tasks(items: list[Any]) -> list[SearchTask]:
    return [task for task in workflow_tasks(items) if isinstance(task, SearchTask)]


def search_states(event: Any) -> list[SearchTask]:
    """The search tasks one event sends: in a new workflow, or one task added or updated."""
    if event.type == "thread.item.added":
        return search_tasks([event.item])
    update = getattr(event, "update", None)
    if update is not None and update.type in {"workflow.task.added", "workflow.task.updated"}:
        return [update.task] if isinstance(update.task, SearchTask) else []
    return []


def task_updates(events: list[Any]) -> list[SearchTask]:
    """Every search task state the client was sent, in order."""
    return [task for e in events for task in search_states(e)]


def tools_sent(body: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """The function names, and the hosted web search tools, of one provider request."""
    tools = body.get("tools") or []
    names = [tool["name"] for tool in tools if tool["type"] == "function"]
    return names, [tool for tool in tools if tool["type"] == "web_search"]


def citation(url: str, title: str) -> dict[str, Any]:
    return {"type": "url_citation", "url": url, "title": title,
            "start_index": 0, "end_index": len(ANSWER)}  # fmt: skip


async def test_a_search_shows_its_query_and_sources_and_the_answer_cites_them(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    scripted_openai.script(
        responses_step([
            WebSearch("python 3.13 release date", sources=[PEP, NEWS, PEP]),
            Text(ANSWER, annotations=[citation(NEWS, "Python 3.13.0")]),
        ]),
        title_step("Python 3.13"),
    )  # fmt: skip

    events = await stream_events(http, provider.url, create_thread("When was 3.13 out?"))

    assert [e for e in events if e.type == "error"] == []
    states = [(task.title, task.status_indicator) for task in task_updates(events)]
    assert states == [
        ("Starting a web search", "loading"),
        ("Searching the web", "loading"),
        ("Reading the results", "loading"),
        ("Searched the web", "complete"),
    ]
    # The search is finished before the answer starts.
    message_added = next(
        i for i, e in enumerate(events)
        if e.type == "thread.item.added" and isinstance(e.item, AssistantMessageItem)
    )  # fmt: skip
    assert max(i for i, e in enumerate(events) if search_states(e)) < message_added

    thread_id = events[0].thread.id
    saved = await list_items(http, provider.url, thread_id)
    [task] = search_tasks(saved)
    assert task.status_indicator == "complete"
    assert task.title_query == "python 3.13 release date"
    assert task.queries == ["python 3.13 release date"]
    assert [(s.url, s.title) for s in task.sources] == [(PEP, "peps.python.org"),
                                                        (NEWS, "python.org")]  # fmt: skip
    [message] = [item for item in saved if isinstance(item, AssistantMessageItem)]
    assert message.content[0].text == ANSWER
    [annotation] = message.content[0].annotations
    assert isinstance(annotation.source, URLSource)
    assert (annotation.source.url, annotation.source.title) == (NEWS, "Python 3.13.0")

    [request] = scripted_openai.streamed
    assert SOURCES_INCLUDE in request["include"]

    # The search stays in the transcript the next turn replays.
    scripted_openai.script(responses_step([Text("You're welcome.")]))
    await stream_events(http, provider.url, add_message(thread_id, "Thanks"))
    replayed = [e for e in scripted_openai.streamed[-1]["input"]
                if e.get("type") == "web_search_call"]  # fmt: skip
    assert [e["action"]["query"] for e in replayed] == ["python 3.13 release date"]


async def test_two_searches_in_one_answer_are_two_tasks(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    scripted_openai.script(
        responses_step([
            WebSearch("lisbon weather today", sources=["https://weather.example/lisbon"]),
            WebSearch("porto weather today", sources=["https://weather.example/porto"]),
            Text("Both sunny."),
        ]),
        title_step("Weather"),
    )  # fmt: skip

    events = await stream_events(http, provider.url, create_thread("Lisbon or Porto?"))

    saved = await list_items(http, provider.url, events[0].thread.id)
    tasks = search_tasks(saved)
    assert [(t.title_query, [s.url for s in t.sources], t.status_indicator) for t in tasks] == [
        ("lisbon weather today", ["https://weather.example/lisbon"], "complete"),
        ("porto weather today", ["https://weather.example/porto"], "complete"),
    ]
    assert len([item for item in saved if isinstance(item, WorkflowItem)]) == 1


async def test_a_failed_search_says_so(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    scripted_openai.script(
        responses_step([WebSearch("anything", status="failed"), Text("I could not search.")]),
        title_step("Search"),
    )

    events = await stream_events(http, provider.url, create_thread("Search something"))

    [task] = search_tasks(await list_items(http, provider.url, events[0].thread.id))
    assert (task.title, task.status_indicator) == ("The web search failed", "none")


async def test_nul_and_lone_surrogates_from_the_provider_are_saved_cleaned(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    scripted_openai.script(
        responses_step([WebSearch("nul\x00 and \ud800", sources=["https://a.example/\x00"]),
                        Text("Done.")]),
        title_step("Odd"),
    )  # fmt: skip

    events = await stream_events(http, provider.url, create_thread("Odd search"))

    [task] = search_tasks(await list_items(http, provider.url, events[0].thread.id))
    assert task.title_query == "nul\ufffd and \ufffd"
    assert [s.url for s in task.sources] == ["https://a.example/\ufffd"]


async def test_the_request_offers_web_search_as_configured(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    settings = provider_settings(
        database_url, tmp_path / "data", scripted_openai,
        web_search_context_size="high", web_search_country="pt", web_search_city="Lisbon",
        web_search_timezone="Europe/Lisbon",
    )  # fmt: skip
    with running(LiveServer(settings)) as live:
        scripted_openai.script(responses_step([Text("Hi.")]), title_step("Hi"))
        await stream_events(http, live.url, create_thread("Hello"))
        ids = live.workbench.toolset.ids

    sent = scripted_openai.streamed[-1]["tools"]
    assert [tool.get("name") or tool["type"] for tool in sent] == ids == [
        *LOCAL_TOOLS, "web_search", "image_generation", *DOCUMENTS,
    ]  # fmt: skip
    [search] = [tool for tool in sent if tool["type"] == "web_search"]
    assert search["search_context_size"] == "high"
    assert search["user_location"] == {
        "type": "approximate", "country": "PT", "city": "Lisbon", "timezone": "Europe/Lisbon",
    }  # fmt: skip
    assert SOURCES_INCLUDE in scripted_openai.streamed[-1]["include"]


async def test_without_a_location_none_is_sent(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    scripted_openai.script(responses_step([Text("Hi.")]), title_step("Hi"))
    await stream_events(http, provider.url, create_thread("Hello"))

    [search] = tools_sent(scripted_openai.streamed[-1])[1]
    assert search["search_context_size"] == "medium"
    assert search.get("user_location") is None


async def test_hosted_search_turned_off_is_not_offered(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    settings = provider_settings(
        database_url, tmp_path / "data", scripted_openai, openai_web_search=False
    )
    with running(LiveServer(settings)) as live:
        scripted_openai.script(responses_step([Text("Hi.")]), title_step("Hi"))
        await stream_events(http, live.url, create_thread("Hello"))
        assert "web_search" not in live.workbench.toolset.ids

    body = scripted_openai.streamed[-1]
    names, hosted = tools_sent(body)
    assert "execute_python" in names and "web_search" not in names
    assert hosted == []
    assert SOURCES_INCLUDE not in (body.get("include") or [])


async def test_stop_mid_search_saves_no_spinning_task(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    scripted_openai.script(
        responses_step([WebSearch("slow query", sources=[PEP]), Text(ANSWER)], delay=0.3)
    )

    def searching(seen: list[Any]) -> bool:
        return any(task.title == "Searching the web" for task in task_updates(seen))

    events = await read_until(http, provider.url, create_thread("Search slowly"), searching)
    thread_id = events[0].thread.id

    async def workflow_saved() -> bool:
        return bool(search_tasks(await list_items(http, provider.url, thread_id)))

    await eventually(workflow_saved)
    [task] = search_tasks(await list_items(http, provider.url, thread_id))
    assert task.status_indicator != "loading"
    assert task.title == "Web search stopped"
    assert not [i for i in await list_items(http, provider.url, thread_id)
                if isinstance(i, AssistantMessageItem)]  # fmt: skip
