"""The tool seam holds: ``agent/`` knows no tool, and every tool comes from the registry."""

from __future__ import annotations

import ast
import re
import secrets
import types
from pathlib import Path
from typing import cast

import httpx

from tests.live import LiveServer, create_thread, running, stream_events
from workbench.config import Settings
from workbench.files.blobs import open_blob_store
from workbench.files.signing import UrlSigner
from workbench.sandbox.manager import KernelManager
from workbench.sandbox.workspaces import Workspaces
from workbench.tools.registry import build_toolset
from workbench.tools.services import Provider, ToolServices

AGENT = Path(__file__).resolve().parents[1] / "src" / "workbench" / "agent"
README = Path(__file__).resolve().parents[1] / "README.md"


async def toolset_ids(tmp_path: Path, provider: Provider, **overrides: object) -> list[str]:
    """The ids of the tools a server with these settings would offer."""
    settings = Settings(_env_file=None, data_dir=tmp_path, **overrides)  # type: ignore[arg-type]
    workspaces = Workspaces(tmp_path / "workspaces")
    kernels = KernelManager(settings, workspaces)
    services = ToolServices(
        settings, provider, kernels, workspaces, UrlSigner(secrets.token_bytes(32), 60),
        open_blob_store(settings),
    )  # fmt: skip
    toolset = build_toolset(services)
    await toolset.aclose()
    await kernels.close()  # its cgroup, made when it was built
    return toolset.ids


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


async def test_no_tool_name_in_the_dispatcher_or_the_demo_model(tmp_path: Path) -> None:
    ids = set(await toolset_ids(tmp_path, "openai")) | set(await toolset_ids(tmp_path, "demo"))
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
