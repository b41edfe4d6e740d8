"""The Python workspace end to end: real bubblewrap, real kernels, over HTTP.

The demo model (no provider configured) calls ``execute_python`` with the code of a fenced
python block in the user's message, and its reply quotes the tool's output — what the model
reads — so these tests see both what the user is shown (the cell widget) and what the model
is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import psutil
import pytest
from chatkit.types import AssistantMessageItem, Thread, ThreadItem, WidgetItem
from pydantic import TypeAdapter

from tests.live import (
    EVENT,
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
)
from workbench.agent.response_events import FunctionCall, Text
from workbench.config import Settings
from workbench.sandbox.bubblewrap import sandbox_problem
from workbench.sandbox.manager import KernelManager
from workbench.sandbox.workspaces import Workspaces
from workbench.tools.python import TOOL_NAME as PYTHON_TOOL

SANDBOX_PROBLEM = sandbox_problem()
pytestmark = pytest.mark.skipif(
    SANDBOX_PROBLEM is not None, reason=f"no bubblewrap sandbox here: {SANDBOX_PROBLEM}"
)

THREAD = TypeAdapter[Thread](Thread)
KERNEL_MARK = "ipykernel_launcher"
LINK = re.compile(r"\[(?P<name>[^\]]+)\]\((?P<url>[^)\s]+)\)")


# -- helpers ----------------------------------------------------------------------------------


def run_code(code: str) -> str:
    """A user message the demo model answers by running ``code``."""
    return f"Please run this:\n```python\n{code}```"


def workspace_settings(settings: Settings, **overrides: Any) -> Settings:
    return settings.model_copy(update=overrides)


def kernels_of(live: LiveServer) -> KernelManager:
    kernels: KernelManager = live.app.state.kernels
    return kernels


def workspaces_of(live: LiveServer) -> Workspaces:
    workspaces: Workspaces = live.app.state.workspaces
    return workspaces


def user_of(live: LiveServer) -> str:
    return live.settings.local_user


async def eventually(check: Callable[[], bool | Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within:g} s")
        await asyncio.sleep(0.05)


async def timed_events(
    client: httpx.AsyncClient, url: str, body: dict[str, Any]
) -> list[tuple[float, Any]]:
    """``stream_events`` with each event's arrival time (``time.monotonic``)."""
    events = []
    async with client.stream("POST", url, json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append((time.monotonic(), EVENT.validate_json(line[len("data: ") :])))
    return events


def cell_wait(timed: list[tuple[float, Any]]) -> float:
    """Seconds from the cell showing as running to its result, as the client saw them."""
    running_at = next(
        at for at, e in timed
        if e.type == "thread.item.updated" and e.update.type == "widget.root.updated"
    )  # fmt: skip
    done_at = next(
        at for at, e in timed if e.type == "thread.item.done" and e.item.type == "widget"
    )
    return done_at - running_at


async def timed_when_free(
    client: httpx.AsyncClient, url: str, body: dict[str, Any]
) -> list[tuple[float, Any]]:
    """``timed_events``, retrying while the thread still finishes a stopped turn."""
    async with asyncio.timeout(15):
        while True:
            timed = await timed_events(client, url, body)
            if not any(e.type == "error" and "already answering" in (e.message or "")
                       for _, e in timed):  # fmt: skip
                return timed
            await asyncio.sleep(0.05)


def no_errors(events: list[Any]) -> None:
    assert [e for e in events if e.type == "error"] == []


def widget_of(item: ThreadItem | WidgetItem) -> dict[str, Any]:
    assert isinstance(item, WidgetItem), item
    data: dict[str, Any] = item.widget.model_dump(mode="json", exclude_none=True)
    return data


def components(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "type" in node:
            yield node
        for child in node.get("children", []) or []:
            yield from components(child)


def status_of(widget: dict[str, Any]) -> str:
    [badge] = [c for c in components(widget) if c["type"] == "Badge"]
    label: str = badge["label"]
    return label


def markdown_of(widget: dict[str, Any]) -> str:
    """Every Markdown and Text value of the widget, one per line."""
    return "\n".join(
        str(c["value"]) for c in components(widget) if c["type"] in {"Markdown", "Text"}
    )


def code_of(widget: dict[str, Any]) -> str:
    [code] = [c for c in components(widget) if c.get("id") == "code"]
    value: str = code["value"]
    return value


def final_cell(events: list[Any]) -> WidgetItem:
    [item] = [e.item for e in events if e.type == "thread.item.done" and e.item.type == "widget"]
    assert isinstance(item, WidgetItem)
    return item


def reply_of(events: list[Any]) -> str:
    """The demo model's answer, which quotes the tool output it was given."""
    texts = [
        "".join(part.text for part in e.item.content)
        for e in events
        if e.type == "thread.item.done" and isinstance(e.item, AssistantMessageItem)
    ]
    assert len(texts) == 1, texts
    return texts[0]


async def run_turn(
    client: httpx.AsyncClient, live: LiveServer, code: str, thread_id: str | None = None
) -> tuple[str, list[Any]]:
    body = create_thread(run_code(code)) if thread_id is None else add_message(
        thread_id, run_code(code)
    )  # fmt: skip
    events = await stream_events(client, live.url, body)
    no_errors(events)
    if thread_id is None:
        thread_id = events[0].thread.id
    assert thread_id is not None
    return thread_id, events


def kernel_processes() -> list[psutil.Process]:
    """Processes under this one (the live servers' kernels) running a Jupyter kernel."""
    found = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if any(KERNEL_MARK in part for part in process.cmdline()):
                found.append(process)
    return found


def alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                living.add(pid)
    return living


def tampered(url: str) -> str:
    """The same link with its signature's first character changed."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    sig = query["sig"]
    query["sig"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    return urlunsplit(parts._replace(query=urlencode(query)))


# -- the cell widget over HTTP ----------------------------------------------------------------


async def test_code_streams_into_the_widget_before_it_runs_and_the_result_is_saved(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    code = (
        "numbers = [n * n for n in range(1, 11)]\n"
        "total = sum(numbers)\n"
        "print(f'the sum of the first ten squares is {total}')\n"
    )
    thread_id, events = await run_turn(http, live, code)

    [added] = [e for e in events if e.type == "thread.item.added" and e.item.type == "widget"]
    cell_id = added.item.id
    assert status_of(widget_of(added.item)) == "Writing"
    updates = [
        (index, e.update)
        for index, e in enumerate(events)
        if e.type == "thread.item.updated" and e.item_id == cell_id
    ]
    deltas = [(i, u) for i, u in updates if u.type == "widget.streaming_text.value_delta"]
    roots = [(i, u) for i, u in updates if u.type == "widget.root.updated"]
    done = [
        i for i, e in enumerate(events) if e.type == "thread.item.done" and e.item.id == cell_id
    ]

    # The code arrives piece by piece into the code component, while the model writes it...
    assert len(deltas) >= 3
    assert {u.component_id for _, u in deltas} == {"code"}
    assert "".join(u.delta for _, u in deltas) == code
    # ...all of it before the cell shows as running, and that before the result.
    [(running_at, running_update)] = roots
    running_widget = running_update.widget.model_dump(mode="json", exclude_none=True)
    assert status_of(running_widget) == "Running"
    assert code in code_of(running_widget)
    [done_at] = done
    assert max(i for i, _ in deltas) < running_at < done_at
    reply_at = next(
        i for i, e in enumerate(events)
        if e.type == "thread.item.done" and isinstance(e.item, AssistantMessageItem)
    )  # fmt: skip
    assert done_at < reply_at

    final = final_cell(events)
    widget = widget_of(final)
    assert status_of(widget) == "Done"
    assert code in code_of(widget)
    assert "the sum of the first ten squares is 385" in markdown_of(widget)
    assert "the sum of the first ten squares is 385" in reply_of(events)

    # Saved as it finished: the items list and a reload of the thread both show it.
    items = await list_items(http, live.url, thread_id)
    [saved] = [item for item in items if item.id == cell_id]
    assert widget_of(saved) == widget
    response = await http.post(
        live.url, json={"type": "threads.get_by_id", "params": {"thread_id": thread_id}}
    )
    assert response.status_code == 200, response.text
    thread = THREAD.validate_json(response.content)
    [reloaded] = [item for item in thread.items.data if item.id == cell_id]
    assert widget_of(reloaded) == widget
    assert [item.type for item in thread.items.data].count("widget") == 1


async def test_state_persists_across_cells_and_turns(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    thread_id, events = await run_turn(http, live, "import math\nlog = ['first']\n")
    assert status_of(widget_of(final_cell(events))) == "Done"
    _, events = await run_turn(http, live, "log.append('second')\n", thread_id)
    assert status_of(widget_of(final_cell(events))) == "Done"
    _, events = await run_turn(http, live, "print(log, math.sqrt(16))\n", thread_id)
    widget = widget_of(final_cell(events))
    assert status_of(widget) == "Done"
    assert "['first', 'second'] 4.0" in markdown_of(widget)
    assert "NOTE" not in reply_of(events)  # nothing about lost state


async def test_state_persists_across_cells_of_one_turn_with_a_provider(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    """A real provider's turn with two cells, then another turn: one kernel throughout."""
    settings = provider_settings(database_url, tmp_path / "data", scripted_openai)

    def call(code: str, call_id: str) -> FunctionCall:
        return FunctionCall(PYTHON_TOOL, json.dumps({"code": code}), call_id)

    scripted_openai.script(
        responses_step([call("answer = 6 * 7", "call_1")]),
        responses_step([call("print(answer)", "call_2")]),
        responses_step([Text("It is 42.")]),
        title_step("Answers"),
        responses_step([call("print(answer + 1)", "call_3")]),
        responses_step([Text("Then 43.")]),
    )
    with running(LiveServer(settings)) as live:
        events = await stream_events(http, live.url, create_thread("Compute"))
        no_errors(events)
        thread_id = events[0].thread.id
        cells = [e.item for e in events if e.type == "thread.item.done" and e.item.type == "widget"]
        assert [status_of(widget_of(cell)) for cell in cells] == ["Done", "Done"]
        events = await stream_events(http, live.url, add_message(thread_id, "And one more?"))
        no_errors(events)

    outputs = {
        entry["call_id"]: entry["output"]
        for request in scripted_openai.streamed
        for entry in request["input"]
        if isinstance(entry, dict) and entry.get("type") == "function_call_output"
    }
    assert outputs["call_1"].startswith("status: ok")
    assert "stdout:\n42" in outputs["call_2"]
    assert "stdout:\n43" in outputs["call_3"]
    assert not any("NOTE" in output for output in outputs.values())


# -- outputs: figures, tables, files ----------------------------------------------------------


async def test_a_matplotlib_figure_shows_as_an_image_served_by_a_signed_url(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [4, 1, 9])\n"
        "plt.title('A figure')\n"
        "plt.show()\n"
    )
    _, events = await run_turn(http, live, code)
    widget = widget_of(final_cell(events))
    assert status_of(widget) == "Done"
    [image] = [c for c in components(widget) if c["type"] == "Image"]
    src = image["src"]
    assert src.startswith(f"{live.base}/files/workspaces/")
    query = dict(parse_qsl(urlsplit(src).query))
    assert {"exp", "sig"} <= query.keys()

    response = await http.get(src)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(response.content) > 1000
    assert "figures shown to the user" in reply_of(events)


async def test_a_dataframe_shows_as_a_table_and_the_model_hears_of_it(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    code = (
        "import pandas as pd\n"
        "df = pd.DataFrame({'city': ['Oslo', 'Lima', 'Pune'], 'temp': [4, 19, 31]})\n"
        "df\n"
    )
    _, events = await run_turn(http, live, code)
    widget = widget_of(final_cell(events))
    assert status_of(widget) == "Done"
    shown = markdown_of(widget)
    assert "| city | temp |" in shown
    for row in ("| Oslo | 4 |", "| Lima | 19 |", "| Pune | 31 |"):
        assert row in shown
    captions = [c["value"] for c in components(widget) if c["type"] == "Caption"]
    assert "3 rows × 2 columns" in captions
    assert "table shown to the user: 3 rows × 2 columns (city, temp)" in reply_of(events)


async def test_a_csv_written_to_disk_gets_a_download_link(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    content = "name,score\nada,10\ngrace,12\n"
    code = f"with open('scores.csv', 'w') as file:\n    file.write({content!r})\n"
    thread_id, events = await run_turn(http, live, code)
    widget = widget_of(final_cell(events))
    assert status_of(widget) == "Done"
    links = [m for m in LINK.finditer(markdown_of(widget)) if m["name"] == "scores.csv"]
    assert len(links) == 1
    url = links[0]["url"]
    assert url.startswith(f"{live.base}/files/workspaces/{thread_id}/scores.csv?")
    assert f"scores.csv ({len(content)} bytes)" in reply_of(events)
    assert "| ada | 10 |" in markdown_of(widget)  # a preview of the CSV, too

    response = await http.get(url)
    assert response.status_code == 200, response.text
    assert response.content == content.encode()
    assert response.headers["content-disposition"].startswith("attachment")

    response = await http.get(tampered(url))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "invalid_signature"
    other_file = url.replace("/scores.csv?", "/other.csv?")
    assert (await http.get(other_file)).status_code == 403


# -- limits and stops -------------------------------------------------------------------------


async def test_a_timeout_interrupts_the_cell_and_keeps_the_kernel_state(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    with running(LiveServer(workspace_settings(settings, sandbox_timeout=1.5))) as live:
        code = "kept = 'still here'\nimport time\nwhile True:\n    time.sleep(0.05)\n"
        started = time.monotonic()
        thread_id, events = await run_turn(http, live, code)
        assert time.monotonic() - started < 10
        widget = widget_of(final_cell(events))
        assert status_of(widget) == "Timed out"
        assert "Timeout: The cell ran longer than 1.5 s." in markdown_of(widget)
        assert "interrupted (time limit); the kernel's state was kept" in reply_of(events)

        _, events = await run_turn(http, live, "print(kept)\n", thread_id)
        widget = widget_of(final_cell(events))
        assert status_of(widget) == "Done"
        assert "still here" in markdown_of(widget)
        assert "NOTE" not in reply_of(events)


async def test_stop_mid_cell_interrupts_it_keeps_the_kernel_and_saves_the_widget_stopped(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    code = "marker = 'survived the stop'\nimport time\ntime.sleep(30)\n"
    events: list[Any] = []

    def shows_running(event: Any) -> bool:
        return bool(
            event.type == "thread.item.updated"
            and event.update.type == "widget.root.updated"
            and status_of(event.update.widget.model_dump(mode="json", exclude_none=True))
            == "Running"
        )

    async with http.stream("POST", live.url, json=create_thread(run_code(code))) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        async for line in lines:
            if line.startswith("data: "):
                events.append(EVENT.validate_json(line[len("data: ") :]))
                if shows_running(events[-1]):
                    break
        # Once the kernel is up and the cell asleep in it, hang up (what Stop does).
        await eventually(lambda: kernels_of(live).live_kernels == 1)
        await asyncio.sleep(0.3)
    stopped_at = time.monotonic()
    thread_id = events[0].thread.id
    [cell_id] = [e.item.id for e in events if e.type == "thread.item.added"
                 and e.item.type == "widget"]  # fmt: skip

    async def saved_stopped() -> bool:
        items = await list_items(http, live.url, thread_id)
        cells = [item for item in items if item.id == cell_id]
        return bool(cells) and status_of(widget_of(cells[0])) == "Stopped"

    await eventually(saved_stopped)
    [cell] = [item for item in await list_items(http, live.url, thread_id) if item.id == cell_id]
    assert code in code_of(widget_of(cell))

    # The kernel was interrupted, not replaced: the next cell runs at once (not after the
    # 30 s sleep), with the state.
    timed = await timed_when_free(http, live.url, add_message(thread_id, run_code("marker\n")))
    events = [event for _, event in timed]
    no_errors(events)
    assert time.monotonic() - stopped_at < 5
    assert cell_wait(timed) < 1.0
    widget = widget_of(final_cell(events))
    assert status_of(widget) == "Done", markdown_of(widget)
    assert "survived the stop" in markdown_of(widget)
    assert "NOTE" not in reply_of(events)
    assert kernels_of(live).live_kernels == 1


async def test_stop_during_a_cold_start_leaves_no_kernel_behind(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    before = {p.pid for p in kernel_processes()}
    body = create_thread(run_code("started = True\n"))
    async with http.stream("POST", live.url, json=body) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        async for line in lines:
            if line.startswith("data: "):
                event = EVENT.validate_json(line[len("data: ") :])
                if event.type == "thread.item.added" and event.item.type == "widget":
                    break
        # Hang up as soon as the kernel's process exists (no pool here), long before the
        # kernel is ready.
        seen: set[int] = set()
        for _ in range(500):
            if seen := {p.pid for p in kernel_processes()} - before:
                break
            await asyncio.sleep(0.01)

    assert seen, "the kernel did not begin to start"
    await eventually(lambda: not alive({p.pid for p in kernel_processes()} - before))
    assert not alive(seen)
    assert kernels_of(live).live_kernels == 0


# -- kernel lifecycle -------------------------------------------------------------------------


async def test_an_idle_kernel_is_shut_down_and_the_next_cell_says_state_was_lost(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    with running(LiveServer(workspace_settings(settings, kernel_idle_seconds=0.5))) as live:
        thread_id, events = await run_turn(http, live, "forgotten = 1\n")
        assert status_of(widget_of(final_cell(events))) == "Done"
        await eventually(lambda: kernels_of(live).live_kernels == 0)

        _, events = await run_turn(http, live, "print(forgotten)\n", thread_id)
        widget = widget_of(final_cell(events))
        assert status_of(widget) == "Error"
        assert "NameError" in markdown_of(widget)
        reply = reply_of(events)
        assert "NOTE: its kernel was shut down after being idle" in reply
        assert "variables and imports from earlier cells are gone" in reply


async def test_least_recently_used_kernel_is_evicted_beyond_max_kernels(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    with running(LiveServer(workspace_settings(settings, max_kernels=1))) as live:
        first, _ = await run_turn(http, live, "mine = 'first'\n")
        second, events = await run_turn(http, live, "mine = 'second'\n")
        assert status_of(widget_of(final_cell(events))) == "Done"
        assert kernels_of(live).live_kernels == 1

        _, events = await run_turn(http, live, "print(mine)\n", first)
        widget = widget_of(final_cell(events))
        assert status_of(widget) == "Error"
        assert "NameError" in markdown_of(widget)
        assert "NOTE: its kernel was stopped to make room for others" in reply_of(events)
        assert kernels_of(live).live_kernels == 1

        # And the second thread, evicted in turn, says so too.
        _, events = await run_turn(http, live, "print(mine)\n", second)
        assert "NOTE: its kernel was stopped to make room for others" in reply_of(events)


async def test_deleting_a_thread_removes_its_kernel_and_workspace(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    before = {p.pid for p in kernel_processes()}
    thread_id, events = await run_turn(http, live, "open('notes.txt', 'w').write('hi')\n")
    assert status_of(widget_of(final_cell(events))) == "Done"
    started = {p.pid for p in kernel_processes()} - before
    assert started, "the cell's kernel process was not found"
    workspace = workspaces_of(live).path(user_of(live), thread_id)
    assert (workspace / "notes.txt").read_text() == "hi"

    response = await http.post(
        live.url, json={"type": "threads.delete", "params": {"thread_id": thread_id}}
    )
    assert response.status_code == 200, response.text
    await eventually(lambda: not alive(started))
    assert not workspace.exists()
    assert kernels_of(live).live_kernels == 0


async def test_the_pool_gives_a_new_thread_a_warm_kernel_that_sees_its_files(
    settings: Settings, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    async def first_cell_wait(live: LiveServer, thread_id: str) -> tuple[float, list[Any]]:
        timed = await timed_events(http, live.url, add_message(thread_id, run_code(code)))
        events = [event for _, event in timed]
        no_errors(events)
        return cell_wait(timed), events

    code = "print(open('data.txt').read())\n"

    async def new_thread_with_file(live: LiveServer, text: str) -> str:
        events = await stream_events(http, live.url, create_thread("Hello"))
        thread_id: str = events[0].thread.id
        workspace = workspaces_of(live).ensure(user_of(live), thread_id)
        (workspace / "data.txt").write_text(text)
        return thread_id

    # Without a pool, the first cell waits for a kernel to start.
    with running(LiveServer(settings)) as cold:
        thread_id = await new_thread_with_file(cold, "cold")
        cold_wait, events = await first_cell_wait(cold, thread_id)
        assert "cold" in markdown_of(widget_of(final_cell(events)))

    pooled_settings = workspace_settings(settings, kernel_pool_size=1, data_dir=tmp_path / "pool")
    with running(LiveServer(pooled_settings)) as live:
        kernels = kernels_of(live)
        thread_id = await new_thread_with_file(live, "already in the workspace")
        await eventually(lambda: kernels.pooled_kernels == 1, within=30)
        warm_wait, events = await first_cell_wait(live, thread_id)
        widget = widget_of(final_cell(events))
        assert status_of(widget) == "Done"
        assert "already in the workspace" in markdown_of(widget)
        assert "NOTE" not in reply_of(events)
        # The pool refills for the next thread.
        await eventually(lambda: kernels.pooled_kernels == 1, within=30)

    assert warm_wait < cold_wait / 4, (warm_wait, cold_wait)
    assert warm_wait < 0.25, warm_wait


async def test_no_kernel_process_outlives_the_server(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    before = {p.pid for p in kernel_processes()}
    with running(LiveServer(workspace_settings(settings, kernel_pool_size=1))) as live:
        for n in range(2):
            _, events = await run_turn(http, live, f"value = {n}\n")
            assert status_of(widget_of(final_cell(events))) == "Done"
        await eventually(lambda: kernels_of(live).pooled_kernels == 1, within=30)
        ours = {p.pid for p in kernel_processes()} - before
        assert len(ours) >= 3  # two threads' kernels and a spare, each under bwrap
    await eventually(lambda: not alive(ours))
    assert kernel_processes() == []
