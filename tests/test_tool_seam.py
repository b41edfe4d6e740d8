"""The tool seam holds: ``agent/`` knows no tool, and every tool comes from the registry."""

from __future__ import annotations

import ast
import asyncio
import json
import re
import secrets
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from agents import FunctionTool, function_tool
from openai import AsyncOpenAI
from psycopg_pool import AsyncConnectionPool

from tests.live import (
    LiveServer,
    ScriptedOpenAI,
    create_thread,
    list_items,
    responses_step,
    running,
    stream_events,
    title_step,
    workflow_tasks,
)
from workbench.agent.response_events import FunctionCall, Text
from workbench.config import Settings
from workbench.files.blobs import open_blob_store
from workbench.files.signing import UrlSigner
from workbench.plugins import ToolPlugin
from workbench.sandbox.manager import KernelManager
from workbench.sandbox.workspaces import Workspaces
from workbench.tools.registry import build_toolset
from workbench.tools.services import Provider, ToolServices

AGENT = Path(__file__).resolve().parents[1] / "src" / "workbench" / "agent"
README = Path(__file__).resolve().parents[1] / "README.md"


async def toolset_ids(tmp_path: Path, provider: Provider, **overrides: object) -> list[str]:
    """The ids of the tools a server with these settings would offer."""
    return [plugin.id for plugin in await plugins_of(tmp_path, provider, **overrides)]


async def plugins_of(tmp_path: Path, provider: Provider, **overrides: object) -> list[ToolPlugin]:
    """The plug-ins a server with these settings would offer."""
    settings = Settings(_env_file=None, data_dir=tmp_path, **overrides)  # type: ignore[arg-type]
    workspaces = Workspaces(tmp_path / "workspaces")
    kernels = KernelManager(settings, workspaces)
    # As the app does: the OpenAI provider's client, for its hosted services.
    openai = AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    services = ToolServices(
        settings, provider, kernels, workspaces, UrlSigner(secrets.token_bytes(32), 60),
        open_blob_store(settings), AsyncConnectionPool("postgresql://unused", open=False),
        openai=openai if provider == "openai" else None,
    )  # fmt: skip
    toolset = build_toolset(services)
    await toolset.aclose()
    await kernels.close()  # its cgroup, made when it was built
    await openai.close()
    return toolset.plugins


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_agent_imports_no_tool_module() -> None:
    for path in AGENT.glob("*.py"):
        tools = {m for m in imported_modules(path) if m.split(".")[:2] == ["workbench", "tools"]}
        assert not tools, f"{path.name} imports {tools}"


def test_agent_pulls_in_no_tool_module_even_indirectly() -> None:
    modules = ", ".join(f"workbench.agent.{path.stem}" for path in AGENT.glob("[!_]*.py"))
    script = (
        f"import sys, {modules}; print([m for m in sys.modules if m.startswith('workbench.tools')])"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


LOCAL_TOOLS = [
    "execute_python", "list_files", "read_file", "write_file", "delete_file", "calculate",
]  # fmt: skip
SEARXNG = {"searxng_url": "http://127.0.0.1:9"}
DOCUMENTS = ["search_files", "add_to_search"]
HOSTED_SEARCH = {"file_search": "openai", "openai_api_key": "sk-test"}


@pytest.mark.parametrize(
    ("provider", "overrides", "expected"),
    [
        ("demo", {}, [*LOCAL_TOOLS, *DOCUMENTS]),
        ("demo", {"file_search": "off"}, LOCAL_TOOLS),
        ("demo", SEARXNG, [*LOCAL_TOOLS, "search_web", *DOCUMENTS]),
        ("chat_completions", SEARXNG, [*LOCAL_TOOLS, "search_web", *DOCUMENTS]),
        ("openai", {}, [*LOCAL_TOOLS, "web_search", "image_generation", *DOCUMENTS]),
        ("openai", SEARXNG, [*LOCAL_TOOLS, "web_search", "image_generation", *DOCUMENTS]),
        (
            "openai", {**SEARXNG, "openai_web_search": False},
            [*LOCAL_TOOLS, "search_web", "image_generation", *DOCUMENTS],
        ),
        (
            "openai",
            {"openai_web_search": False, "openai_image_generation": False, "file_search": "off"},
            LOCAL_TOOLS,
        ),
        ("openai", HOSTED_SEARCH, [*LOCAL_TOOLS, "web_search", "image_generation", "file_search"]),
        (
            "openai", {**HOSTED_SEARCH, **SEARXNG, "openai_web_search": False,
                       "openai_image_generation": False},
            [*LOCAL_TOOLS, "search_web", "file_search"],
        ),
    ],
)  # fmt: skip
async def test_the_registry_offers_exactly_what_can_work(
    tmp_path: Path, provider: Provider, overrides: dict[str, object], expected: list[str]
) -> None:
    assert await toolset_ids(tmp_path, provider, **overrides) == expected


async def test_every_widget_template_belongs_to_a_tool(tmp_path: Path) -> None:
    plugins = await plugins_of(tmp_path, "openai", **SEARXNG)
    claimed = {template for plugin in plugins for template in plugin.widget_templates}
    on_disk = {path.stem for path in (README.parent / "widgets").glob("*.widget")}
    assert claimed == on_disk


async def test_no_tool_name_in_the_dispatcher_or_the_demo_model(tmp_path: Path) -> None:
    ids = set(await toolset_ids(tmp_path, "openai")) | set(
        await toolset_ids(tmp_path, "demo", **SEARXNG)
    )
    assert "execute_python" in ids
    for name in ("activity.py", "demo.py", "stream.py"):
        source = (AGENT / name).read_text()
        named = sorted(tool for tool in ids if tool in source)
        assert not named, f"agent/{name} names tools {named}"


async def test_execute_python_keeps_its_id(tmp_path: Path) -> None:
    assert (await toolset_ids(tmp_path, "demo"))[0] == "execute_python"


def readme_example() -> str:
    text = README.read_text()
    section = text[text.index("### Adding a tool") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)  # type: ignore[union-attr]


async def test_the_readme_example_tool_plugs_in(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    module = types.ModuleType("workbench.tools.clock")
    exec(compile(readme_example(), "README.md", "exec"), module.__dict__)
    with running(LiveServer(settings)) as live:
        services = cast(ToolServices, None)  # the example needs none of them
        [clock] = module.plugins(services)
        live.workbench.toolset = live.workbench.toolset.replacing(clock)
        events = await stream_events(http, live.url, create_thread("time: Europe/Lisbon"))

    [reply] = [
        e.item
        for e in events
        if e.type == "thread.item.done" and e.item.type == "assistant_message"
    ]
    text = "".join(part.text for part in reply.content)
    assert "`current_time` returned" in text
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0[01]:00", text), text
    assert "Use current_time for the date or time" in clock.instructions


def slow_tool(seconds: float) -> FunctionTool:
    @function_tool
    async def slow_lookup(topic: str) -> str:
        """Look a topic up, slowly."""
        await asyncio.sleep(seconds)
        return f"all about {topic}"

    return slow_lookup


def saved_tasks(items: list[Any]) -> list[tuple[str | None, str]]:
    return [(task.title, task.status_indicator) for task in workflow_tasks(items)]


async def test_a_task_its_workflow_closed_on_is_saved_finished(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    """Two calls at once: the calculator's widget closes the workflow while the slow tool's
    task still runs; the saved workflow still ends up showing it done."""
    provider.add_tool(slow_tool(0.5))
    scripted_openai.script(
        responses_step([
            FunctionCall("slow_lookup", '{"topic": "owls"}', "call_slow"),
            FunctionCall("calculate", '{"expression": "6*7"}', "call_calc"),
        ]),
        responses_step([Text("Owls, and 42.")]),
        title_step("Owls"),
    )  # fmt: skip
    events = await stream_events(http, provider.url, create_thread("owls and 6*7"))

    assert not [e for e in events if e.type == "error"]
    assert any(e.type == "thread.item.replaced" for e in events)
    items = await list_items(http, provider.url, events[0].thread.id)
    assert saved_tasks(items) == [("Using slow_lookup", "complete")]


async def test_stop_leaves_no_task_spinning(
    provider: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    provider.add_tool(slow_tool(30))
    scripted_openai.script(
        responses_step([FunctionCall("slow_lookup", '{"topic": "owls"}', "call_slow")]),
    )
    thread_id = ""
    async with http.stream("POST", provider.url, json=create_thread("owls")) as response:
        async for line in response.aiter_lines():
            if '"thread.created"' in line:
                thread_id = json.loads(line[6:])["thread"]["id"]
            if '"workflow.task.added"' in line or '"type":"workflow"' in line:
                break  # the task is showing: hang up, as a Stop does

    for _ in range(100):
        items = await list_items(http, provider.url, thread_id)
        if saved_tasks(items):
            break
        await asyncio.sleep(0.1)
    assert saved_tasks(items) == [("Using slow_lookup (stopped)", "none")]
