"""Turn benchmark: what Workbench adds to a chat turn, and whether it holds 200 streams at once.

Prints, from one run (both servers under uvicorn on loopback sockets, one httpx client):
* the p50 latency of a ``threads.add_user_message`` turn (request sent -> last SSE byte) with
  a model that answers at once in 50 one-word deltas, for Workbench (Postgres store) and for
  the SDK's minimal server (in-memory store, ``Runner.run_streamed`` +
  ``stream_agent_response``, a bare FastAPI route); the ratio Workbench / baseline
  (target <= 1.5);
* 200 simultaneous ``threads.create`` streams, then 200 simultaneous ``add_user_message``
  streams on those threads, against Workbench: HTTP errors, SSE ``error`` events and streams
  without the finished assistant message (target: 0), and the wall time of each burst.

Exit code 0 when both targets are met, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from agents import (
    Agent,
    Model,
    Runner,
    set_tracing_disabled,
)
from chatkit.agents import AgentContext, simple_to_agent_input, stream_agent_response
from chatkit.server import ChatKitServer, StreamingResult
from chatkit.store import NotFoundError, Store
from chatkit.types import (
    Attachment,
    Page,
    ThreadItem,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from tests.live import LiveServer, _ThreadedUvicorn, add_message, create_thread
from tests.postgres_server import admin_server, throwaway_database

from workbench.agent.demo import ScriptedReplyModel
from workbench.agent.models import ModelCatalog
from workbench.agent.response_events import OutputPart, Text
from workbench.config import Settings
from workbench.server import INSTRUCTIONS

WORDS = 50
ANSWER = " ".join(f"tok{n:02d}" for n in range(WORDS))  # "tok00 tok01 ... tok49"
CHUNK = len("tok00 ")  # one word (and its space) per delta
TURNS = 200  # measured turns per server
ROUNDS = 10  # interleaved rounds of TURNS // ROUNDS turns each
WARMUP = 30  # turns per server before measuring
CONCURRENT = 200
RATIO_TARGET = 1.5

_THREAD_FIELDS = set(ThreadMetadata.model_fields)


# -- the model: answers at once, 50 one-word deltas ------------------------------------------


class InstantModel(ScriptedReplyModel):
    name = "instant"
    chunk_size = CHUNK

    def reply(self, input: object, tool_names: set[str]) -> list[OutputPart]:
        return [Text(ANSWER)]


class InstantCatalog(ModelCatalog):
    def model(self, name: str, demo_triggers: object = None) -> Model:
        return InstantModel()


# -- the baseline: the SDK's minimal server ---------------------------------------------------


class MemoryStore(Store[dict[str, Any]]):
    """Just enough of a ``Store`` in dicts for the turns this benchmark makes."""

    def __init__(self) -> None:
        self.threads: dict[str, ThreadMetadata] = {}
        self.items: dict[str, list[ThreadItem]] = {}
        self.attachments: dict[str, Attachment] = {}

    async def load_thread(self, thread_id: str, context: dict[str, Any]) -> ThreadMetadata:
        if thread_id not in self.threads:
            raise NotFoundError(f"Thread {thread_id} not found")
        return self.threads[thread_id].model_copy(deep=True)

    async def save_thread(self, thread: ThreadMetadata, context: dict[str, Any]) -> None:
        # A `Thread` (metadata plus a page of items) may be passed: keep the metadata only.
        self.threads[thread.id] = ThreadMetadata.model_validate(
            thread.model_dump(include=_THREAD_FIELDS)
        )
        self.items.setdefault(thread.id, [])

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: dict[str, Any]
    ) -> Page[ThreadMetadata]:
        threads = sorted(self.threads.values(), key=lambda t: t.created_at, reverse=order == "desc")
        return _page(threads, after, limit)

    async def delete_thread(self, thread_id: str, context: dict[str, Any]) -> None:
        self.threads.pop(thread_id, None)
        self.items.pop(thread_id, None)

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: dict[str, Any]
    ) -> Page[ThreadItem]:
        items = self.items.get(thread_id, [])
        return _page(items[::-1] if order == "desc" else items, after, limit)

    async def add_thread_item(
        self, thread_id: str, item: ThreadItem, context: dict[str, Any]
    ) -> None:
        self.items.setdefault(thread_id, []).append(item)

    async def save_item(self, thread_id: str, item: ThreadItem, context: dict[str, Any]) -> None:
        items = self.items.setdefault(thread_id, [])
        for index, existing in enumerate(items):
            if existing.id == item.id:
                items[index] = item
                return
        items.append(item)

    async def load_item(self, thread_id: str, item_id: str, context: dict[str, Any]) -> ThreadItem:
        for item in self.items.get(thread_id, []):
            if item.id == item_id:
                return item
        raise NotFoundError(f"Item {item_id} not found")

    async def delete_thread_item(
        self, thread_id: str, item_id: str, context: dict[str, Any]
    ) -> None:
        self.items[thread_id] = [i for i in self.items.get(thread_id, []) if i.id != item_id]

    async def save_attachment(self, attachment: Attachment, context: dict[str, Any]) -> None:
        self.attachments[attachment.id] = attachment

    async def load_attachment(self, attachment_id: str, context: dict[str, Any]) -> Attachment:
        if attachment_id not in self.attachments:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        return self.attachments[attachment_id]

    async def delete_attachment(self, attachment_id: str, context: dict[str, Any]) -> None:
        self.attachments.pop(attachment_id, None)


def _page(rows: list[Any], after: str | None, limit: int) -> Page[Any]:
    start = next((i + 1 for i, row in enumerate(rows) if row.id == after), 0) if after else 0
    data = rows[start : start + limit]
    return Page(data=data, has_more=start + limit < len(rows), after=data[-1].id if data else None)


class BaselineServer(ChatKitServer[dict[str, Any]]):
    def __init__(self) -> None:
        super().__init__(MemoryStore())
        self.agent = Agent[AgentContext[dict[str, Any]]](
            name="Baseline", instructions=INSTRUCTIONS, model=InstantModel()
        )

    async def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: dict[str, Any],
    ) -> AsyncIterator[ThreadStreamEvent]:
        page = await self.store.load_thread_items(thread.id, None, 20, "desc", context)
        agent_input = await simple_to_agent_input(page.data[::-1])
        agent_context = AgentContext(thread=thread, store=self.store, request_context=context)
        result = Runner.run_streamed(self.agent, agent_input, context=agent_context)
        async for event in stream_agent_response(agent_context, result):
            yield event


def baseline_app() -> FastAPI:
    server = BaselineServer()
    app = FastAPI()

    @app.post("/chatkit")
    async def chatkit(request: Request) -> Response:
        result = await server.process(await request.body(), {})
        if isinstance(result, StreamingResult):
            return StreamingResponse(result, media_type="text/event-stream")
        return Response(result.json, media_type="application/json")

    return app


# -- the client -------------------------------------------------------------------------------


@dataclass
class Turn:
    seconds: float
    status: int
    events: list[dict[str, Any]]

    @property
    def thread_id(self) -> str | None:
        """The thread a ``threads.create`` stream created (even if its answer then failed)."""
        first = self.events[0] if self.events else {}
        return str(first["thread"]["id"]) if first.get("type") == "thread.created" else None

    def problem(self) -> str | None:
        """What went wrong with this stream, or None for a complete answer."""
        if self.status == 0:
            return f"no HTTP response: {self.events[0]['message']}"
        if self.status != 200:
            return f"HTTP {self.status}"
        errors = [e for e in self.events if e.get("type") == "error"]
        if errors:
            return f"SSE error: {errors[0].get('message') or errors[0].get('code')}"
        done = [e["item"] for e in self.events if e.get("type") == "thread.item.done"]
        if not done or done[-1].get("type") != "assistant_message":
            return "the stream did not end with the assistant message done"
        if done[-1]["content"][0]["text"] != ANSWER:
            return "the assistant message is not the model's answer"
        return None


async def turn(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> Turn:
    try:
        started = time.perf_counter()
        async with client.stream("POST", url, json=body) as response:
            raw = await response.aread()
        seconds = time.perf_counter() - started
    except httpx.HTTPError as error:
        return Turn(0.0, 0, [{"type": "error", "message": f"{type(error).__name__}: {error}"}])
    events = [
        json.loads(line[len(b"data: ") :])
        for line in raw.split(b"\n")
        if line.startswith(b"data: ")
    ]
    return Turn(seconds, response.status_code, events)


async def new_threads(client: httpx.AsyncClient, url: str, count: int) -> list[str]:
    ids: list[str] = []
    for _ in range(count):
        created = await turn(client, url, create_thread("Hello"))
        if created.problem() or created.thread_id is None:
            raise RuntimeError(f"threads.create failed at {url}: {created.problem()}")
        ids.append(created.thread_id)
    return ids


async def latency(
    client: httpx.AsyncClient, urls: dict[str, str]
) -> tuple[dict[str, float], list[str]]:
    """p50 of one add_user_message turn per server, measured in interleaved rounds."""
    threads = {name: await new_threads(client, url, WARMUP + TURNS) for name, url in urls.items()}
    problems: list[str] = []
    for name, url in urls.items():  # warm-up
        for thread_id in threads[name][:WARMUP]:
            result = await turn(client, url, add_message(thread_id, "Warm up"))
            if (problem := result.problem()) is not None:
                problems.append(f"{name}: {problem}")
    samples: dict[str, list[float]] = {name: [] for name in urls}
    per_round = TURNS // ROUNDS
    for round_ in range(ROUNDS):
        order = list(urls) if round_ % 2 == 0 else list(urls)[::-1]
        for name in order:
            start = WARMUP + round_ * per_round
            for thread_id in threads[name][start : start + per_round]:
                result = await turn(client, urls[name], add_message(thread_id, "Next question"))
                if (problem := result.problem()) is not None:
                    problems.append(f"{name}: {problem}")
                samples[name].append(result.seconds)
    return {name: statistics.median(times) for name, times in samples.items()}, problems


async def burst(
    client: httpx.AsyncClient, url: str, bodies: list[dict[str, Any]]
) -> tuple[list[Turn], float]:
    started = time.perf_counter()
    results = await asyncio.gather(*(turn(client, url, body) for body in bodies))
    return results, time.perf_counter() - started


@contextmanager
def serving(server: _ThreadedUvicorn) -> Iterator[str]:
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}/chatkit"
    finally:
        server.stop()


async def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    set_tracing_disabled(True)
    # The benchmark's catalog rides on the demo provider, whose startup banner is a warning.
    logging.getLogger("workbench.app").addFilter(
        lambda record: not record.getMessage().startswith("model provider:")
    )
    # Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them: with
    # httpx's default (also 5 s) a request can go out on a connection the server is closing,
    # and fail with a ReadError that says nothing about the server under test.
    limits = httpx.Limits(
        max_connections=CONCURRENT + 50, max_keepalive_connections=CONCURRENT, keepalive_expiry=2
    )
    with (
        admin_server() as admin_url,
        throwaway_database(admin_url, "workbench_bench") as url,
    ):
        settings = Settings(database_url=url, provider="demo")
        with (
            serving(LiveServer(settings, InstantCatalog(settings))) as workbench,
            serving(_ThreadedUvicorn(baseline_app())) as baseline,
        ):
            async with httpx.AsyncClient(timeout=120, limits=limits) as client:
                p50s, problems = await latency(
                    client, {"workbench": workbench, "baseline": baseline}
                )

                creates, create_wall = await burst(
                    client, workbench, [create_thread(f"Hello {n}") for n in range(CONCURRENT)]
                )
                thread_ids = [t.thread_id for t in creates if t.thread_id is not None]
                adds, add_wall = await burst(
                    client, workbench, [add_message(t, "And then?") for t in thread_ids]
                )

    ratio = p50s["workbench"] / p50s["baseline"]
    latency_ok = ratio <= RATIO_TARGET and not problems
    print(
        f"add_user_message turn p50 ({WORDS}-token instant answer, {TURNS} turns each): "
        f"workbench {p50s['workbench'] * 1e3:.2f} ms / baseline {p50s['baseline'] * 1e3:.2f} ms"
        f" = ratio {ratio:.2f} (target <= {RATIO_TARGET}) {'OK' if latency_ok else 'MISSED'}"
    )
    for problem in problems[:5]:
        print(f"  failed turn: {problem}")

    failures = 0
    for label, results, wall in (
        ("threads.create", creates, create_wall),
        ("threads.add_user_message", adds, add_wall),
    ):
        failed = [p for t in results if (p := t.problem()) is not None]
        failed += ["no thread to add to"] * (CONCURRENT - len(results))
        failures += len(failed)
        print(
            f"{CONCURRENT} concurrent {label} streams: {len(failed)} failed (target 0) "
            f"in {wall:.2f} s wall {'OK' if not failed else 'MISSED'}"
        )
        for problem in sorted(set(failed))[:5]:
            print(f"  {failed.count(problem)} x {problem}")
    return 0 if latency_ok and failures == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
