"""Real servers on real sockets for the HTTP tests.

* ``LiveServer`` runs the Workbench app under uvicorn in a background thread (its own event
  loop, its own database pool), on a free loopback port.
* ``ScriptedOpenAI`` is a local stand-in for the OpenAI API: it serves scripted Responses SSE
  (``POST /v1/responses``) and Chat Completions chunks (``POST /v1/chat/completions``), one
  scripted step per request, and records every request body, so tests drive the real
  ``openai`` client end to end; and deterministic embeddings (``POST /v1/embeddings``,
  ``tests.embeddings_server``).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from agents import FunctionTool
from chatkit.types import Page, ThreadItem, ThreadStreamEvent
from pydantic import TypeAdapter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from tests.embeddings_server import EmbeddingsEndpoint
from workbench.agent.models import ModelCatalog
from workbench.agent.response_events import OutputPart, Text, response_events
from workbench.app import create_app
from workbench.config import Settings
from workbench.plugins import FunctionToolPlugin
from workbench.server import WorkbenchServer
from workbench.serving import UVICORN_OPTIONS

EVENT = TypeAdapter[ThreadStreamEvent](ThreadStreamEvent)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _ThreadedUvicorn:
    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
            **UVICORN_OPTIONS,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class LiveServer(_ThreadedUvicorn):
    def __init__(self, settings: Settings, catalog: ModelCatalog | None = None) -> None:
        self.settings = settings
        self.app = create_app(settings, catalog)
        super().__init__(self.app)

    @property
    def workbench(self) -> WorkbenchServer:
        """The app's ChatKit server (exists once the server has started)."""
        server: WorkbenchServer = self.app.state.server
        return server

    def add_tool(self, tool: FunctionTool) -> None:
        """Offer ``tool`` too, in place of a tool of that name (whose demo trigger it keeps)."""
        toolset = self.workbench.toolset
        old = toolset.get(tool.name)
        trigger = old.demo_trigger if old is not None else None
        self.workbench.toolset = toolset.replacing(FunctionToolPlugin(tool, trigger))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/chatkit"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Step:
    """One scripted answer: SSE events (Responses or Chat Completions chunks) or an error.

    ``stream`` says which requests the step answers: streaming ones (True), non-streaming ones
    such as the thread-title call (False), or whichever comes first (None). A non-streaming
    request gets the step's final result as one JSON body.
    """

    events: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    error: dict[str, Any] | None = None
    delay: float = 0.0  # seconds between events, to let a test act mid-stream
    headers: dict[str, str] = field(default_factory=dict)
    stream: bool | None = True
    # Called with each event (and ``sent_at``, a perf_counter time) as it goes out.
    on_send: Callable[[dict[str, Any]], None] | None = None


def responses_step(
    parts: list[OutputPart], *, delay: float = 0.0, chunk_size: int = 8, stream: bool = True
) -> Step:
    events = list(
        response_events(parts, model="gpt-test", response_id=f"resp_{time.time_ns()}",
                        chunk_size=chunk_size)
    )  # fmt: skip
    return Step(events=events, delay=delay, stream=stream)


def title_step(title: str, *, chat: bool = False) -> Step:
    """The answer to the non-streaming thread-title call."""
    if chat:
        return replace(chat_step(title), stream=False)
    return responses_step([Text(title)], stream=False)


def chat_step(text: str = "", *, tool_call: tuple[str, str, str] | None = None) -> Step:
    """Chat Completions chunks: text in several deltas, or one tool call (id, name, args)."""
    base = {"id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": "llama-test"}  # fmt: skip
    chunks: list[dict[str, Any]] = []
    if tool_call:
        call_id, name, arguments = tool_call
        for index, piece in enumerate([arguments[i : i + 6] for i in range(0, len(arguments), 6)]):
            call = {"index": 0, "function": {"arguments": piece}}
            if index == 0:
                call.update(
                    id=call_id, type="function", function={"name": name, "arguments": piece}
                )
            chunks.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [call]},
                                                "finish_reason": None}]})  # fmt: skip
        finish = "tool_calls"
    else:
        for i in range(0, len(text), 5):
            delta = {"content": text[i : i + 5]}
            if i == 0:
                delta["role"] = "assistant"
            chunks.append({**base, "choices": [{"index": 0, "delta": delta,
                                                "finish_reason": None}]})  # fmt: skip
        finish = "stop"
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    return Step(events=chunks)


def error_step(
    status: int, message: str, kind: str = "server_error", *, stream: bool | None = True
) -> Step:
    return Step(
        status=status,
        error={"error": {"message": message, "type": kind, "code": kind}},
        stream=stream,
    )


def _chat_completion(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` the chunks of a Chat Completions step add up to."""
    text = "".join(
        choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"]
    )
    first = chunks[0] if chunks else {"id": "chatcmpl-empty", "created": 0, "model": "llama-test"}
    return {
        "id": first["id"], "object": "chat.completion", "created": first["created"],
        "model": first["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }  # fmt: skip


def _completed_response(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streaming Responses body: the ``response.completed`` event's ``response``."""
    for event in events:
        if event.get("type") == "response.completed":
            response: dict[str, Any] = event["response"]
            return response
    raise AssertionError("a Responses step without response.completed")


class ScriptedOpenAI(_ThreadedUvicorn):
    def __init__(self, routes: Sequence[BaseRoute] = ()) -> None:
        """``routes``: more of the API to serve (``tests.openai_files``)."""
        self.steps: list[Step] = []
        self.requests: list[dict[str, Any]] = []
        self.transcriptions: list[dict[str, Any]] = []
        self.paths: list[str] = []
        # Per request: True once the whole answer was sent, False if the client hung up first,
        # None while it is still streaming.
        self.finished: list[bool | None] = []
        self.embeddings = EmbeddingsEndpoint()
        app = Starlette(routes=[
            Route("/v1/responses", self._serve, methods=["POST"]),
            Route("/v1/chat/completions", self._serve, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/v1/audio/transcriptions", self._transcribe, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings.serve, methods=["POST"]),
            *routes,
        ])  # fmt: skip
        super().__init__(app)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *steps: Step) -> None:
        self.steps.extend(steps)

    @property
    def streamed(self) -> list[dict[str, Any]]:
        """Bodies of the streaming requests (agent turns), oldest first."""
        return [body for body in self.requests if body.get("stream") is True]

    @property
    def not_streamed(self) -> list[dict[str, Any]]:
        """Bodies of the non-streaming requests (thread titles), oldest first."""
        return [body for body in self.requests if body.get("stream") is not True]

    def _next_step(self, stream: bool) -> Step | None:
        for index, step in enumerate(self.steps):
            if step.stream is None or step.stream == stream:
                return self.steps.pop(index)
        return None

    async def _transcribe(self, request: Request) -> Response:
        """Echo what arrived, so a test can check the upload reached the audio API intact."""
        form = await request.form()
        upload = form["file"]
        assert not isinstance(upload, str)
        audio = await upload.read()
        self.transcriptions.append(
            {"model": form["model"], "filename": upload.filename, "bytes": audio}
        )
        return JSONResponse({"text": f"heard {len(audio)} bytes"})

    async def _models(self, request: Request) -> Response:
        model = {"id": "gpt-test", "object": "model", "created": 0, "owned_by": "test"}
        return JSONResponse({"object": "list", "data": [model]})

    async def _serve(self, request: Request) -> Response:
        body = json.loads(await request.body())
        chat = request.url.path.endswith("chat/completions")
        index = len(self.requests)
        self.requests.append(body)
        self.paths.append(request.url.path)
        self.finished.append(None)
        streaming = body.get("stream") is True
        step = self._next_step(streaming)
        if step is None:
            self.finished[index] = True
            message = f"no scripted step left for a {'streaming' if streaming else 'plain'} call"
            return JSONResponse({"error": {"message": message, "type": "server_error"}}, 500)
        if step.error is not None or not streaming:
            self.finished[index] = True
            if step.error is not None:
                return JSONResponse(step.error, step.status, headers=step.headers)
            result = _chat_completion(step.events) if chat else _completed_response(step.events)
            return JSONResponse(result, headers=step.headers)

        async def stream() -> AsyncIterator[bytes]:
            try:
                # Encoded up front: a large event (an image) encoded mid-stream would hold up
                # the server under test, which shares this process.
                encoded = [f"data: {json.dumps(event)}\n\n".encode() for event in step.events]
                for event, data in zip(step.events, encoded, strict=True):
                    if step.delay:
                        await asyncio.sleep(step.delay)
                    if step.on_send is not None:
                        step.on_send({"type": event.get("type"), "sent_at": time.perf_counter()})
                    yield data
                if chat:
                    yield b"data: [DONE]\n\n"
                self.finished[index] = True
            finally:
                if self.finished[index] is None:
                    self.finished[index] = False

        return StreamingResponse(stream(), media_type="text/event-stream", headers=step.headers)


async def stream_events(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], **kwargs: Any
) -> list[Any]:
    """POST a streaming op and parse every SSE event with the SDK's ThreadStreamEvent."""
    events = []
    async with client.stream("POST", url, json=body, **kwargs) as response:
        assert response.status_code == 200, (response.status_code, await response.aread())
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(EVENT.validate_json(line[len("data: ") :]))
    return events


def user_input(text: str, **options: Any) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": [],
        "inference_options": options,
    }


def create_thread(text: str, **options: Any) -> dict[str, Any]:
    return {"type": "threads.create", "params": {"input": user_input(text, **options)}}


def add_message(thread_id: str, text: str, **options: Any) -> dict[str, Any]:
    return {
        "type": "threads.add_user_message",
        "params": {"thread_id": thread_id, "input": user_input(text, **options)},
    }


def started(server: _ThreadedUvicorn) -> Iterator[Any]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running(server: LiveServer) -> Iterator[LiveServer]:
    """``started`` for a test that builds its own server (settings of its own)."""
    yield from started(server)


ITEMS = TypeAdapter[Page[ThreadItem]](Page[ThreadItem])


def workflow_tasks(items: list[Any]) -> list[Any]:
    """The tasks of every workflow among ``items``, in order."""
    return [task for item in items if item.type == "workflow" for task in item.workflow.tasks]


async def list_items(client: httpx.AsyncClient, url: str, thread_id: str) -> list[ThreadItem]:
    """Every item of a thread, oldest first, through the ``items.list`` op."""
    body = {"type": "items.list", "params": {"thread_id": thread_id, "order": "asc", "limit": 100}}
    response = await client.post(url, json=body)
    assert response.status_code == 200, response.text
    return list(ITEMS.validate_json(response.content).data)


def provider_settings(
    database_url: str,
    data_dir: Path,
    scripted: ScriptedOpenAI,
    *,
    chat: bool = False,
    **overrides: Any,
) -> Settings:
    """Settings for a live server whose model provider is ``scripted``."""
    options: dict[str, Any] = {
        "database_url": database_url, "data_dir": data_dir, "model_max_retries": 0,
        "kernel_pool_size": 0, "_env_file": None,
    }  # fmt: skip
    if chat:
        options.update(chat_completions_base_url=scripted.base_url, provider="chat_completions")
    else:
        options.update(openai_api_key="sk-test", openai_base_url=scripted.base_url)
    return Settings(**options, **overrides)


def peak_rss_reset() -> None:
    """Reset this process's VmHWM (peak resident set), so a later read is this test's peak."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss() -> int:
    found = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    assert found is not None
    return int(found.group(1)) * 1024
