"""`workbench chat` and `workbench doctor` as a user runs them; max turns as a readable error."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
from agents import function_tool

from tests.live import (
    LiveServer,
    ScriptedOpenAI,
    create_thread,
    list_items,
    provider_settings,
    responses_step,
    running,
    stream_events,
)
from workbench.agent.response_events import FunctionCall
from workbench.config import Settings


async def workbench(*args: str, **env: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workbench", *args,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_chat_renders_the_stream_and_continues_a_thread(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    code, output = await workbench("chat", "--url", live.url, "Hello from the terminal")
    assert code == 0, output
    assert "You said: Hello from the terminal" in output
    assert "[title] Hello from the terminal" in output
    thread_id = output.strip().splitlines()[-1].removeprefix("thread: ")
    assert thread_id.startswith("thr_")

    code, output = await workbench("chat", "--url", live.url, "--thread", thread_id, "More")
    assert code == 0, output
    assert "You said: More" in output and output.strip().endswith(thread_id)
    items = await list_items(http, live.url, thread_id)
    assert [item.type for item in items].count("assistant_message") == 2


async def test_chat_reports_http_errors(live: LiveServer) -> None:
    code, output = await workbench("chat", "--url", live.url, "--thread", "thr_nope", "Hi")
    assert code == 1
    assert "404" in output and "thr_nope" in output


async def test_doctor_all_good(settings: Settings) -> None:
    code, output = await workbench(
        "doctor",
        DATABASE_URL=settings.database_url or "",
        WORKBENCH_DATA_DIR=str(settings.data_dir),
    )
    assert code == 0, output
    assert "[ok] database reachable" in output and "DEMO MODEL" in output


async def test_doctor_says_what_to_fix(tmp_path: Path) -> None:
    code, output = await workbench(
        "doctor",
        DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere",
        OPENAI_API_KEY="sk-test",
        OPENAI_BASE_URL="http://127.0.0.1:1/v1",
        WORKBENCH_DATA_DIR=str(tmp_path),
    )
    assert code == 1
    assert "[PROBLEM] database" in output and "fix: check DATABASE_URL" in output
    assert "[PROBLEM] model provider" in output and "fix: check OPENAI_API_KEY" in output


async def test_max_turns_is_a_readable_error(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    @function_tool
    def again() -> str:
        """Call me again."""
        return "again"

    settings = provider_settings(database_url, tmp_path / "data", scripted_openai, max_turns=2)
    scripted_openai.script(
        *[responses_step([FunctionCall("again", "{}", call_id=f"c{i}")]) for i in range(3)]
    )
    with running(LiveServer(settings)) as live:
        live.add_tool(again)
        events = await stream_events(http, live.url, create_thread("loop forever"))
    errors = [e for e in events if e.type == "error"]
    assert len(errors) == 1
    assert "stopped after 2 steps" in (errors[0].message or "")


async def test_a_setting_out_of_range_is_refused_with_its_name(tmp_path: Path) -> None:
    code, output = await workbench(
        "doctor", WORKBENCH_DATA_DIR=str(tmp_path), WORKBENCH_SANDBOX_MEMORY_MB="256"
    )
    assert code == 2
    assert "invalid settings" in output
    assert "sandbox_memory_mb" in output
    assert "512" in output
