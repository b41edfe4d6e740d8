"""Tools benchmark: what the tool seam and the tools add to a turn, from one run.

Workbench runs on the OpenAI provider against a scripted local Responses server (the real
``openai`` client, real sockets, real Postgres); rounds of each pair are interleaved, so the
machine's mood falls on both sides alike. Prints:

* seam overhead: the p50 of a text turn with every tool registered (hosted ones included)
  over the p50 with only ``execute_python`` (target <= 1.05), and how much of the difference
  is the ``openai`` client preparing a request that carries more tool schemas;
* image relay: the p50 delay from the provider sending a 1.5 MB image (a partial, then the
  final one, written to the blob store on the way) to the client receiving it, over the p50
  delay of a text delta in the same turns (target <= 3), and the same delays for the
  ``openai`` client alone reading those events: the ceiling of any server built on it;
* calculate: the p50 of a turn that calls ``calculate`` over one that calls a no-op function
  tool through the same machinery (target <= 2).

Exit code 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from agents import function_tool, set_tracing_disabled
from openai import AsyncOpenAI
from openai._utils import maybe_transform
from openai.types.responses import response_create_params
from tests.live import (
    LiveServer,
    ScriptedOpenAI,
    Step,
    create_thread,
    provider_settings,
    responses_step,
    running,
    started,
    title_step,
)
from tests.postgres_server import admin_server, throwaway_database

from workbench.agent.response_events import FunctionCall, ImageGeneration, OutputPart, Text
from workbench.plugins import Toolset

TURNS = 100  # measured turns per side, per pair
WARMUP = 5
SEAM_TARGET = 1.05
RELAY_TARGET = 3.0
CALC_TARGET = 2.0
IMAGE_BYTES = 1_500_000
EVENT_GAP = 0.02  # seconds between the events of a relay turn
ANSWER = " ".join(f"tok{n:02d}" for n in range(50))


@dataclass
class Turn:
    seconds: float
    received: dict[str, float]  # marker -> when the client read the event carrying it


def image_b64() -> str:
    """A PNG of about ``IMAGE_BYTES`` (noise does not compress)."""
    import os

    from PIL import Image

    side = int((IMAGE_BYTES / 3) ** 0.5)
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=0)
    return base64.b64encode(out.getvalue()).decode()


async def run_turn(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    markers: dict[str, Callable[[Any], bool]],
) -> Turn:
    """One streamed turn; when each marker's event first arrived."""
    received: dict[str, float] = {}
    start = time.perf_counter()
    async with client.stream("POST", url, json=body) as response:
        assert response.status_code == 200, response.status_code
        async for now, data in sse_events(response):
            event = json.loads(data)
            if event.get("type") == "error":
                raise RuntimeError(f"error event: {event}")
            for name, matches in markers.items():
                if name not in received and matches(event):
                    received[name] = now
    return Turn(time.perf_counter() - start, received)


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[float, bytes]]:
    """Each event's data, and when its last byte arrived. Linear in the bytes received:
    httpx's line reader joins its buffer anew for every chunk, which for a 2 MB image line
    would cost this client more than the server under test spends on it."""
    buffer = bytearray()
    searched = 0
    async for chunk in response.aiter_raw():
        buffer += chunk
        while (end := buffer.find(b"\n\n", searched)) != -1:
            now = time.perf_counter()
            event = bytes(buffer[:end])
            del buffer[: end + 2]
            searched = 0
            if event.startswith(b"data: "):
                yield now, event[6:]
        searched = max(0, len(buffer) - 1)


def step(parts: list[OutputPart], sent: list[dict[str, Any]]) -> Step:
    """A scripted answer that records when each event left the provider."""
    answer = responses_step(parts, chunk_size=len("tok00 "))
    answer.on_send = sent.append
    return answer


async def pair(
    client: httpx.AsyncClient,
    live: LiveServer,
    scripted: ScriptedOpenAI,
    sides: dict[str, tuple[Toolset, list[OutputPart]]],
) -> dict[str, list[float]]:
    """Turn times per side, the sides taking turns."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for index in range(WARMUP + TURNS):
        for name, (toolset, parts) in sides.items():
            live.workbench.toolset = toolset
            # A new thread each turn, so every turn sends the model the same history.
            answers = [step(parts, []), *[step([Text("ok")], [])] * followups(parts)]
            scripted.script(*answers, title_step("Bench"))
            turn = await run_turn(client, live.url, create_thread("go"), {})
            if index >= WARMUP:
                times[name].append(turn.seconds)
    return times


def followups(parts: list[OutputPart]) -> int:
    return 1 if any(isinstance(part, FunctionCall) for part in parts) else 0


def relay_step(picture: str, sent: list[dict[str, Any]]) -> Step:
    """A text answer, then an image with one partial, its events spaced as a model streams
    them: each delay is then that event's own, not time queued behind the ones just sent.
    The text comes first, so its delta never waits behind the image."""
    answer = step([Text(ANSWER), ImageGeneration(result=picture, partials=[picture])], sent)
    answer.delay = EVENT_GAP
    return answer


def relay_delays(sent: list[dict[str, Any]], received: dict[str, float]) -> dict[str, float]:
    """Per event kind, from the provider sending it to the client having it."""
    first = {event["type"]: event["sent_at"] for event in reversed(sent)}
    image_done = [e["sent_at"] for e in sent if e["type"] == "response.output_item.done"][-1]
    return {
        "text": received["text"] - first["response.output_text.delta"],
        "partial": received["partial"] - first["response.image_generation_call.partial_image"],
        "final": received["final"] - image_done,
    }


async def relay(
    client: httpx.AsyncClient, live: LiveServer, scripted: ScriptedOpenAI, picture: str
) -> list[dict[str, float]]:
    """Provider-to-client delays of a text delta and of the image events, per turn."""
    markers = {
        "text": lambda e: (
            e.get("type") == "thread.item.updated"
            and e["update"].get("type") == "assistant_message.content_part.text_delta"
        ),
        "partial": lambda e: (
            e.get("type") == "thread.item.updated"
            and e["update"].get("type") == "generated_image.updated"
        ),
        "final": lambda e: (
            e.get("type") == "thread.item.done" and e["item"].get("type") == "generated_image"
        ),
    }
    delays = []
    for index in range(WARMUP + TURNS):
        sent: list[dict[str, Any]] = []
        # A new thread each time: a thread's images go back to the model on every turn.
        scripted.script(relay_step(picture, sent), title_step("Drawing"))
        turn = await run_turn(client, live.url, create_thread("draw"), markers)
        if index >= WARMUP:
            delays.append(relay_delays(sent, turn.received))
    return delays


async def bare_relay(scripted: ScriptedOpenAI, picture: str) -> list[dict[str, float]]:
    """The same events read by the ``openai`` client alone, in this process: the part of
    every delay that any server built on that client pays before its own code runs."""
    client = AsyncOpenAI(base_url=scripted.base_url, api_key="unused", max_retries=0)
    delays = []
    try:
        for index in range(WARMUP + TURNS):
            sent: list[dict[str, Any]] = []
            scripted.script(relay_step(picture, sent))
            received: dict[str, float] = {}
            stream = await client.responses.create(model="gpt-test", input="draw", stream=True)
            async for event in stream:
                now = time.perf_counter()
                if event.type == "response.output_text.delta":
                    received.setdefault("text", now)
                elif event.type == "response.image_generation_call.partial_image":
                    received.setdefault("partial", now)
                elif event.type == "response.output_item.done":
                    received["final"] = now
            if index >= WARMUP:
                delays.append(relay_delays(sent, received))
    finally:
        await client.close()
    return delays


def first_text_delta(sent: list[dict[str, Any]]) -> float:
    return next(e["sent_at"] for e in sent if e["type"] == "response.output_text.delta")


def verdict(label: str, ratio: float, target: float, detail: str) -> bool:
    ok = ratio <= target
    print(f"{label}: {detail} = ratio {ratio:.2f} (target <= {target}) {'OK' if ok else 'MISSED'}")
    return ok


def transform_ms(body: dict[str, Any]) -> float:
    """What the ``openai`` client spends preparing this request body (its ``maybe_transform``
    walks every tool schema), in ms: a cost of sending the tools, not of our seam."""
    started = time.perf_counter()
    for _ in range(50):
        maybe_transform(body, response_create_params.ResponseCreateParamsStreaming)
    return (time.perf_counter() - started) / 50 * 1e3


def encoding_note(seam: dict[str, list[float]], encoding: dict[str, float]) -> bool:
    """Print how much of the difference the openai client's own request encoding is."""
    all_ms, python_ms = (statistics.median(seam[side]) * 1e3 for side in ("all", "python"))
    ours = (all_ms - encoding["all"]) / (python_ms - encoding["python"])
    print(
        f"  of which the openai client preparing the request: {encoding['all']:.2f} ms with "
        f"every tool / {encoding['python']:.2f} ms with one; without it, ratio {ours:.2f}"
    )
    return True


def relay_verdict(relayed: list[dict[str, float]], bare: list[dict[str, float]]) -> bool:
    def p50(delays: list[dict[str, float]], *kinds: str) -> float:
        return statistics.median(d[kind] for d in delays for kind in kinds)

    image, text = p50(relayed, "partial", "final"), p50(relayed, "text")
    ok = verdict(
        "image relay p50 (1.5 MB, partial and final)", image / text, RELAY_TARGET,
        f"image {image * 1e3:.2f} ms (partial {p50(relayed, 'partial') * 1e3:.2f}, final "
        f"{p50(relayed, 'final') * 1e3:.2f}) / text delta {text * 1e3:.2f} ms",
    )  # fmt: skip
    floor = p50(bare, "partial", "final")
    print(
        f"  the openai client alone, same events, same process: image {floor * 1e3:.2f} ms "
        f"(partial {p50(bare, 'partial') * 1e3:.2f}, final {p50(bare, 'final') * 1e3:.2f}) / "
        f"text delta {p50(bare, 'text') * 1e3:.2f} ms. Its image delay alone is "
        f"{floor / text:.1f}x Workbench's whole text delay: the ceiling of any server on it."
    )
    return ok


async def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    set_tracing_disabled(True)

    @function_tool
    def noop() -> str:
        """Do nothing."""
        return "done"

    with (
        admin_server() as admin_url,
        throwaway_database(admin_url, "workbench_bench_tools") as url,
        contextmanager(started)(ScriptedOpenAI()) as scripted,
        tempfile.TemporaryDirectory() as data_dir,
    ):
        settings = provider_settings(url, Path(data_dir), scripted)
        with running(LiveServer(settings)) as live:
            live.add_tool(noop)
            full = live.workbench.toolset
            python_only = Toolset([full.get("execute_python")])  # type: ignore[list-item]
            async with httpx.AsyncClient(timeout=120) as client:
                seam = await pair(
                    client, live, scripted,
                    {"all": (full, [Text(ANSWER)]), "python": (python_only, [Text(ANSWER)])},
                )  # fmt: skip
                # The last two agent requests: one of each side.
                encoding = {"all": transform_ms(scripted.streamed[-2]),
                            "python": transform_ms(scripted.streamed[-1])}  # fmt: skip
                calc_call = FunctionCall("calculate", json.dumps({"expression": "12*(3+4)"}), "c1")
                calls = await pair(
                    client, live, scripted,
                    {"calculate": (full, [calc_call]),
                     "noop": (full, [FunctionCall("noop", "{}", "c2")])},
                )  # fmt: skip
                picture = image_b64()
                relayed = await relay(client, live, scripted, picture)
                bare = await bare_relay(scripted, picture)

    p50 = statistics.median
    results = [
        verdict(
            "seam overhead, text turn p50",
            p50(seam["all"]) / p50(seam["python"]),
            SEAM_TARGET,
            f"{len(full.ids)} tools {p50(seam['all']) * 1e3:.2f} ms / execute_python only "
            f"{p50(seam['python']) * 1e3:.2f} ms",
        ),
        encoding_note(seam, encoding),
        relay_verdict(relayed, bare),
        verdict(
            "calculate turn p50",
            p50(calls["calculate"]) / p50(calls["noop"]),
            CALC_TARGET,
            f"calculate {p50(calls['calculate']) * 1e3:.2f} ms / no-op tool "
            f"{p50(calls['noop']) * 1e3:.2f} ms",
        ),
    ]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
