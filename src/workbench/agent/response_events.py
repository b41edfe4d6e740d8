"""Responses API stream events, built from a plain description of what a model says.

The demo model streams these in-process, and the tests serve the very same dicts as SSE from
a scripted local Responses server, so both go through the code paths a real model uses:
``output_item.added`` / deltas / ``output_item.done`` per item and a final
``response.completed``. Text and function-call arguments are split into several deltas, as a
real model streams them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Text:
    text: str
    annotations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Refusal:
    refusal: str


@dataclass
class Reasoning:
    summary: str


@dataclass
class FunctionCall:
    name: str
    arguments: str
    call_id: str


@dataclass
class WebSearch:
    """A hosted web search call: what it searched for and the pages it found."""

    query: str
    sources: list[str] = field(default_factory=list)
    status: str = "completed"  # or "failed"


@dataclass
class FileSearch:
    """A hosted file search call: its queries and what it found, as the Responses API gives
    each result (``file_id``, ``filename``, ``score``, ``text``, ``attributes``)."""

    queries: list[str]
    results: list[dict[str, Any]] = field(default_factory=list)
    status: str = "completed"  # or "failed"


@dataclass
class ImageGeneration:
    """A hosted image generation call: ``partials`` then ``result`` (base64 images); no
    result and ``status="failed"`` for a call that fails."""

    result: str | None
    partials: list[str] = field(default_factory=list)
    status: str = "completed"


OutputPart = Text | Refusal | Reasoning | FunctionCall | WebSearch | FileSearch | ImageGeneration


def chunks(text: str, size: int) -> list[str]:
    """Split ``text`` into pieces of about ``size`` characters (at least one piece)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def response_events(
    parts: list[OutputPart], *, model: str, response_id: str, chunk_size: int = 12
) -> Iterator[dict[str, Any]]:
    """Every event of one streamed response, as JSON-ready dicts."""
    sequence = iter(range(1_000_000))
    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": time.time(),
        "model": model,
        "status": "in_progress",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    yield {"type": "response.created", "sequence_number": next(sequence), "response": response}
    output: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        item_id = f"{response_id}_item{index}"
        item = yield from _item_events(part, item_id, index, sequence, chunk_size)
        output.append(item)
    usage: dict[str, Any] = {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }
    done = {**response, "status": "completed", "output": output, "usage": usage}
    yield {"type": "response.completed", "sequence_number": next(sequence), "response": done}


def _item_events(
    part: OutputPart, item_id: str, index: int, sequence: Iterator[int], chunk_size: int
) -> Generator[dict[str, Any], None, dict[str, Any]]:
    """The events of one output item; returns the finished item."""

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "sequence_number": next(sequence), "output_index": index, **fields}

    if isinstance(part, FunctionCall):
        item: dict[str, Any] = {
            "type": "function_call", "id": item_id, "call_id": part.call_id, "name": part.name,
            "arguments": "", "status": "in_progress",
        }  # fmt: skip
        yield event("response.output_item.added", item=item)
        for delta in chunks(part.arguments, chunk_size):
            yield event("response.function_call_arguments.delta", item_id=item_id, delta=delta)
        yield event(
            "response.function_call_arguments.done",
            item_id=item_id, name=part.name, arguments=part.arguments,
        )  # fmt: skip
        done = {**item, "arguments": part.arguments, "status": "completed"}
        yield event("response.output_item.done", item=done)
        return done

    if isinstance(part, WebSearch):
        return (yield from _web_search_events(part, item_id, event))
    if isinstance(part, FileSearch):
        return (yield from _file_search_events(part, item_id, event))
    if isinstance(part, ImageGeneration):
        return (yield from _image_events(part, item_id, event))

    if isinstance(part, Reasoning):
        item = {"type": "reasoning", "id": item_id, "summary": []}
        yield event("response.output_item.added", item=item)
        summary_part: dict[str, Any] = {"type": "summary_text", "text": ""}
        yield event(
            "response.reasoning_summary_part.added",
            item_id=item_id, summary_index=0, part=summary_part,
        )  # fmt: skip
        for delta in chunks(part.summary, chunk_size):
            yield event(
                "response.reasoning_summary_text.delta",
                item_id=item_id, summary_index=0, delta=delta,
            )  # fmt: skip
        yield event(
            "response.reasoning_summary_text.done",
            item_id=item_id, summary_index=0, text=part.summary,
        )  # fmt: skip
        summary_part = {"type": "summary_text", "text": part.summary}
        yield event(
            "response.reasoning_summary_part.done",
            item_id=item_id, summary_index=0, part=summary_part,
        )  # fmt: skip
        done = {**item, "summary": [summary_part]}
        yield event("response.output_item.done", item=done)
        return done

    message: dict[str, Any] = {
        "type": "message", "id": item_id, "role": "assistant", "status": "in_progress",
        "content": [],
    }  # fmt: skip
    yield event("response.output_item.added", item=message)
    if isinstance(part, Refusal):
        content: dict[str, Any] = {"type": "refusal", "refusal": ""}
        yield event("response.content_part.added", item_id=item_id, content_index=0, part=content)
        for delta in chunks(part.refusal, chunk_size):
            yield event("response.refusal.delta", item_id=item_id, content_index=0, delta=delta)
        yield event("response.refusal.done", item_id=item_id, content_index=0, refusal=part.refusal)
        content = {"type": "refusal", "refusal": part.refusal}
    else:
        content = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        yield event("response.content_part.added", item_id=item_id, content_index=0, part=content)
        for delta in chunks(part.text, chunk_size):
            yield event(
                "response.output_text.delta",
                item_id=item_id, content_index=0, delta=delta, logprobs=[],
            )  # fmt: skip
        for annotation_index, annotation in enumerate(part.annotations):
            yield event(
                "response.output_text.annotation.added",
                item_id=item_id, content_index=0, annotation_index=annotation_index,
                annotation=annotation,
            )  # fmt: skip
        yield event(
            "response.output_text.done",
            item_id=item_id, content_index=0, text=part.text, logprobs=[],
        )  # fmt: skip
        content = {**content, "text": part.text, "annotations": part.annotations}
    yield event("response.content_part.done", item_id=item_id, content_index=0, part=content)
    done = {**message, "status": "completed", "content": [content]}
    yield event("response.output_item.done", item=done)
    return done


def _web_search_events(
    part: WebSearch, item_id: str, event: Callable[..., dict[str, Any]]
) -> Generator[dict[str, Any], None, dict[str, Any]]:
    # As the Responses API streams it: the query (and the sources, when the request asked
    # for ``web_search_call.action.sources``) only arrive with the finished item.
    item: dict[str, Any] = {"type": "web_search_call", "id": item_id, "status": "in_progress"}
    yield event("response.output_item.added", item=item)
    yield event("response.web_search_call.in_progress", item_id=item_id)
    yield event("response.web_search_call.searching", item_id=item_id)
    if part.status == "completed":
        yield event("response.web_search_call.completed", item_id=item_id)
    sources = [{"type": "url", "url": url} for url in part.sources]
    action = {"type": "search", "query": part.query, "sources": sources}
    done = {**item, "status": part.status, "action": action}
    yield event("response.output_item.done", item=done)
    return done


def _file_search_events(
    part: FileSearch, item_id: str, event: Callable[..., dict[str, Any]]
) -> Generator[dict[str, Any], None, dict[str, Any]]:
    # The queries and results come with the finished item only (the results only when the
    # request asked for ``file_search_call.results``).
    item: dict[str, Any] = {
        "type": "file_search_call", "id": item_id, "status": "in_progress", "queries": [],
        "results": None,
    }  # fmt: skip
    yield event("response.output_item.added", item=item)
    yield event("response.file_search_call.in_progress", item_id=item_id)
    yield event("response.file_search_call.searching", item_id=item_id)
    if part.status == "completed":
        yield event("response.file_search_call.completed", item_id=item_id)
    done = {**item, "status": part.status, "queries": part.queries, "results": part.results}
    yield event("response.output_item.done", item=done)
    return done


def _image_events(
    part: ImageGeneration, item_id: str, event: Callable[..., dict[str, Any]]
) -> Generator[dict[str, Any], None, dict[str, Any]]:
    item: dict[str, Any] = {
        "type": "image_generation_call", "id": item_id, "status": "in_progress", "result": None,
    }  # fmt: skip
    yield event("response.output_item.added", item=item)
    yield event("response.image_generation_call.in_progress", item_id=item_id)
    yield event("response.image_generation_call.generating", item_id=item_id)
    for index, partial in enumerate(part.partials):
        yield event(
            "response.image_generation_call.partial_image",
            item_id=item_id, partial_image_index=index, partial_image_b64=partial,
        )  # fmt: skip
    if part.status == "completed":
        yield event("response.image_generation_call.completed", item_id=item_id)
    done = {**item, "status": part.status, "result": part.result}
    if part.result is not None:
        done["output_format"] = "png"
    yield event("response.output_item.done", item=done)
    return done
