"""Malformed and forbidden requests get a clear 4xx JSON error, and the server stays healthy.

One live server serves every malformed request in this module, so a request that broke it
(a crash, a leaked connection, a wedged pool) shows up in the requests that follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from chatkit.types import InferenceOptions, ThreadMetadata, UserMessageItem, UserMessageTextContent

from tests.live import (
    LiveServer,
    add_message,
    create_thread,
    peak_rss,
    peak_rss_reset,
    started,
    stream_events,
    user_input,
)
from workbench.config import Settings
from workbench.context import RequestContext
from workbench.protocol import MAX_NESTING
from workbench.store import PostgresStore

LIMIT = 1_000_000  # the default WORKBENCH_MAX_REQUEST_BYTES


@dataclass(frozen=True)
class Bad:
    """A malformed request and what the answer must say."""

    name: str
    body: bytes
    status: int = 400
    code: str = "invalid_request"
    # Fragments the message must contain: the offending field, where there is one.
    mentions: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def create(**input_fields: Any) -> bytes:
    """threads.create with the given user input fields (None drops a field)."""
    message: dict[str, Any] = {**user_input("hi"), **input_fields}
    message = {key: value for key, value in message.items() if value is not None}
    return js({"type": "threads.create", "params": {"input": message}})


def op(op_type: str, /, **params: Any) -> bytes:
    return js({"type": op_type, "params": params})


def nested(depth: int) -> bytes:
    return b'{"type": "threads.list", "params": {"x": ' + b"[" * depth + b"]" * depth + b"}}"


# fmt: off
CASES = [
    Bad("invalid json", b'{"type": "threads.list", ', code="invalid_json", mentions=("JSON",)),
    Bad("empty body", b"", code="invalid_json", mentions=("empty",)),
    Bad("whitespace body", b"  \n ", code="invalid_json", mentions=("empty",)),
    Bad("not utf-8", b'{"type": "\xff\xfe"}', code="invalid_json"),
    Bad("lone surrogate in a message",
        b'{"type": "threads.create", "params": {"input": {"content": [{"type": "input_text", '
        b'"text": "hi \\ud800"}], "attachments": [], "inference_options": {}}}}',
        mentions=("surrogate",)),
    Bad("json array", js([{"type": "threads.list"}]), mentions=("JSON object",)),
    Bad("json string", js("threads.list"), mentions=("JSON object",)),
    Bad("json null", b"null", mentions=("JSON object",)),
    Bad("missing type", js({"params": {}}), mentions=("type",)),
    Bad("null type", js({"type": None, "params": {}}), mentions=("type",)),
    Bad("unknown op", op("threads.explode"), code="unknown_op",
        mentions=("type", "threads.explode")),
    Bad("op the sdk does not know", op("threads.cancel", thread_id="thr_1"), code="unknown_op",
        mentions=("type", "threads.cancel")),
    Bad("op of wrong type", js({"type": 7, "params": {}}), code="unknown_op", mentions=("type",)),
    Bad("op as list", js({"type": ["threads.list"], "params": {}}), code="unknown_op",
        mentions=("type",)),
    Bad("missing params", js({"type": "threads.list"}), mentions=("params",)),
    Bad("params not an object", js({"type": "threads.list", "params": [1]}),
        mentions=("params",)),
    Bad("metadata not an object", js({"type": "threads.list", "params": {}, "metadata": "x"}),
        mentions=("metadata",)),
    Bad("create without input", op("threads.create"), mentions=("params.input",)),
    Bad("input without content", create(content=None), mentions=("params.input.content",)),
    Bad("input without attachments", create(attachments=None),
        mentions=("params.input.attachments",)),
    Bad("input without inference_options", create(inference_options=None),
        mentions=("params.input.inference_options",)),
    Bad("content not a list", create(content="hello"), mentions=("params.input.content",)),
    Bad("unknown content part", create(content=[{"type": "input_image", "url": "x"}]),
        mentions=("params.input.content[0]",)),
    Bad("text part without text", create(content=[{"type": "input_text"}]),
        mentions=("params.input.content[0].text",)),
    Bad("text of wrong type", create(content=[{"type": "input_text", "text": 42}]),
        mentions=("params.input.content[0].text",)),
    Bad("tag without text", create(content=[{"type": "input_tag", "id": "t1"}]),
        mentions=("params.input.content[0].text",)),
    Bad("attachment id of wrong type", create(attachments=[17]),
        mentions=("params.input.attachments[0]",)),
    Bad("unknown attachment", create(attachments=["atc_missing"]), status=404,
        code="not_found", mentions=("params.input.attachments", "atc_missing")),
    Bad("tool_choice not an object", create(inference_options={"tool_choice": "python"}),
        mentions=("params.input.inference_options.tool_choice",)),
    Bad("model of wrong type", create(inference_options={"model": ["gpt"]}),
        mentions=("params.input.inference_options.model",)),
    Bad("quoted_text of wrong type", create(quoted_text={"a": 1}),
        mentions=("params.input.quoted_text",)),
    Bad("missing thread_id", op("threads.get_by_id"), mentions=("params.thread_id",)),
    Bad("null thread_id", op("threads.get_by_id", thread_id=None), mentions=("params.thread_id",)),
    Bad("thread_id of wrong type", op("items.list", thread_id=12),
        mentions=("params.thread_id",)),
    Bad("add message without thread", js({"type": "threads.add_user_message",
                                          "params": {"input": user_input("x")}}),
        mentions=("params.thread_id",)),
    Bad("wrong order", op("threads.list", order="sideways"), mentions=("params.order",)),
    Bad("wrong items order", op("items.list", thread_id="thr_x", order="newest"),
        mentions=("params.order",)),
    Bad("negative limit", op("threads.list", limit=-1), mentions=("params.limit",)),
    Bad("zero limit", op("threads.list", limit=0), mentions=("params.limit",)),
    Bad("limit of wrong type", op("threads.list", limit="ten"), mentions=("params.limit",)),
    Bad("fractional limit", op("threads.list", limit=2.5), mentions=("params.limit",)),
    Bad("after of wrong type", op("threads.list", after=5), mentions=("params.after",)),
    Bad("after not a cursor", op("threads.list", after="cur_nonsense"), mentions=("after",)),
    Bad("update without title", op("threads.update", thread_id="thr_x"),
        mentions=("params.title",)),
    Bad("null title", op("threads.update", thread_id="thr_x", title=None),
        mentions=("params.title",)),
    Bad("feedback kind", op("items.feedback", thread_id="thr_x", item_ids=["m"], kind="meh"),
        mentions=("params.kind",)),
    Bad("feedback ids not a list", op("items.feedback", thread_id="thr_x", item_ids="m",
                                      kind="positive"), mentions=("params.item_ids",)),
    Bad("retry without item_id", op("threads.retry_after_item", thread_id="thr_x"),
        mentions=("params.item_id",)),
    Bad("structured input status", op("threads.add_structured_input", thread_id="thr_x",
                                      item_id="m", input={"status": "maybe"}),
        mentions=("params.input.status",)),
    Bad("custom action without action", op("threads.custom_action", thread_id="thr_x"),
        mentions=("params.action",)),
    Bad("attachment size of wrong type",
        op("attachments.create", name="a", size="big", mime_type="text/plain"),
        mentions=("params.size",)),
    Bad("attachment without mime_type", op("attachments.create", name="a", size=1),
        mentions=("params.mime_type",)),
    Bad("transcribe without audio", op("input.transcribe", mime_type="audio/webm"),
        mentions=("params.audio_base64",)),
    Bad("transcribe bad base64", op("input.transcribe", audio_base64="@@@", mime_type="a/b"),
        mentions=("params.audio_base64",)),
    Bad("body over the limit", op("threads.create", input=user_input("x" * (LIMIT + 10))),
        status=413, code="request_too_large", mentions=(str(LIMIT),)),
    Bad("nesting past the depth limit", nested(150), mentions=(f"nested more than {MAX_NESTING}",)),
    Bad("extra-deep nesting", nested(20_000), mentions=(f"nested more than {MAX_NESTING}",)),
    Bad("extra-deep nesting over the size limit", nested(LIMIT // 2 + 1), status=413,
        code="request_too_large"),
    Bad("text/plain", op("threads.list"), status=415, code="unsupported_media_type",
        mentions=("text/plain",), headers={"Content-Type": "text/plain"}),
    Bad("form encoded", b"type=threads.list", status=415, code="unsupported_media_type",
        mentions=("application/x-www-form-urlencoded",),
        headers={"Content-Type": "application/x-www-form-urlencoded"}),
    Bad("multipart", b"--x\r\n\r\n--x--", status=415, code="unsupported_media_type",
        headers={"Content-Type": "multipart/form-data; boundary=x"}),
]
# fmt: on


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("errors"),
        local_user=f"errors_{secrets.token_hex(4)}",
        _env_file=None,
    )
    yield from started(LiveServer(settings))


@pytest.fixture
def user(server: LiveServer) -> RequestContext:
    return RequestContext(server.settings.local_user)


def assert_error(response: httpx.Response, status: int, code: str, *mentions: str) -> None:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message"}
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    assert error["code"] == code, error
    for fragment in mentions:
        assert fragment in error["message"], error


async def send(http: httpx.AsyncClient, server: LiveServer, bad: Bad) -> httpx.Response:
    return await http.post(server.url, content=bad.body, headers=bad.headers)


def test_enough_distinct_cases() -> None:
    assert len({case.name for case in CASES}) == len(CASES) >= 30
    assert len({case.body for case in CASES}) >= 30


@pytest.mark.parametrize("bad", CASES, ids=[case.name for case in CASES])
async def test_malformed_request(bad: Bad, server: LiveServer, http: httpx.AsyncClient) -> None:
    response = await send(http, server, bad)
    assert_error(response, bad.status, bad.code, *bad.mentions)
    health = await http.get(f"{server.base}/healthz")
    assert health.status_code == 200


async def test_healthy_after_every_malformed_request(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    for bad in CASES:
        assert (await send(http, server, bad)).status_code == bad.status, bad.name
    assert (await http.get(f"{server.base}/healthz")).status_code == 200
    assert (await http.get(f"{server.base}/readyz")).status_code == 200
    events = await stream_events(http, server.url, create_thread("still there?"))
    assert events[0].type == "thread.created"
    assert [e.item.type for e in events if e.type == "thread.item.done"] == [
        "user_message", "assistant_message",
    ]  # fmt: skip


async def test_nesting_up_to_the_limit_is_accepted(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    # The envelope and params are two levels; the limit counts them too.
    headers = {"Content-Type": "application/json"}
    response = await http.post(server.url, content=nested(MAX_NESTING - 2), headers=headers)
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["data"], list)
    response = await http.post(server.url, content=nested(MAX_NESTING - 1), headers=headers)
    assert_error(response, 400, "invalid_request", "nested")


# -- threads the caller cannot see, on streaming ops ------------------------------------------


async def someone_elses_thread(store: PostgresStore, owner: RequestContext) -> tuple[str, str]:
    """A thread with one user message, owned by a user the server never authenticates as."""
    thread = ThreadMetadata(id=store.generate_thread_id(owner), created_at=datetime.now())
    await store.save_thread(thread, owner)
    message = UserMessageItem(
        id=store.generate_item_id("message", thread, owner),
        thread_id=thread.id,
        created_at=datetime.now(),
        content=[UserMessageTextContent(text="private")],
        inference_options=InferenceOptions(),
    )
    await store.add_thread_item(thread.id, message, owner)
    return thread.id, message.id


async def assert_404_before_stream(
    http: httpx.AsyncClient, server: LiveServer, body: dict[str, Any], *mentions: str
) -> None:
    async with http.stream("POST", server.url, json=body) as response:
        raw = await response.aread()
    assert not response.headers["content-type"].startswith("text/event-stream")
    assert b"data:" not in raw
    assert_error(response, 404, "not_found", *mentions)


def streaming_bodies(thread_id: str, item_id: str) -> list[dict[str, Any]]:
    return [
        json.loads(js(add_message(thread_id, "let me in"))),
        {"type": "threads.retry_after_item",
         "params": {"thread_id": thread_id, "item_id": item_id}},
        {"type": "threads.add_client_tool_output",
         "params": {"thread_id": thread_id, "result": {"ok": True}}},
        {"type": "threads.add_structured_input",
         "params": {"thread_id": thread_id, "item_id": item_id, "input": {"answers": {}}}},
        {"type": "threads.custom_action",
         "params": {"thread_id": thread_id, "action": {"type": "x"}}},
    ]  # fmt: skip


async def test_unknown_thread_on_streaming_ops(server: LiveServer, http: httpx.AsyncClient) -> None:
    for body in streaming_bodies("thr_does_not_exist", "msg_does_not_exist"):
        await assert_404_before_stream(http, server, body, "thr_does_not_exist")


async def test_other_users_thread_on_streaming_ops(
    server: LiveServer, http: httpx.AsyncClient, store: PostgresStore
) -> None:
    owner = RequestContext(f"other_{secrets.token_hex(4)}")
    thread_id, item_id = await someone_elses_thread(store, owner)
    for body in streaming_bodies(thread_id, item_id):
        await assert_404_before_stream(http, server, body, thread_id)
    # Nothing was written to the other user's thread.
    page = await store.load_thread_items(thread_id, None, 10, "asc", owner)
    assert [item.id for item in page.data] == [item_id]


async def test_unknown_item_in_own_thread(server: LiveServer, http: httpx.AsyncClient) -> None:
    events = await stream_events(http, server.url, create_thread("mine"))
    thread_id = events[0].thread.id
    body = {"type": "threads.retry_after_item",
            "params": {"thread_id": thread_id, "item_id": "msg_nope"}}  # fmt: skip
    await assert_404_before_stream(http, server, body, "msg_nope")


# -- inference options ------------------------------------------------------------------------


async def test_model_not_allowed(server: LiveServer, http: httpx.AsyncClient) -> None:
    body = create_thread("hi", model="gpt-9-ultra")
    response = await http.post(server.url, json=body)
    assert_error(response, 400, "invalid_request", "inference_options", "gpt-9-ultra")
    listed = await http.post(server.url, json={"type": "threads.list", "params": {}})
    # The refused create made no thread.
    assert all(t["title"] != "hi" for t in listed.json()["data"])

    events = await stream_events(http, server.url, create_thread("allowed"))
    thread_id = events[0].thread.id
    response = await http.post(server.url, json=add_message(thread_id, "x", model="other"))
    assert_error(response, 400, "invalid_request", "inference_options", "other")


async def test_unknown_tool_choice(server: LiveServer, http: httpx.AsyncClient) -> None:
    body = create_thread("hi", tool_choice={"id": "launch_rockets"})
    response = await http.post(server.url, json=body)
    assert_error(response, 400, "invalid_request", "tool_choice", "launch_rockets")


async def test_tag_without_data_is_tolerated(
    server: LiveServer, http: httpx.AsyncClient, store: PostgresStore, user: RequestContext
) -> None:
    body = create_thread("x")
    body["params"]["input"]["content"] = [
        {"type": "input_text", "text": "Summarise "},
        {"type": "input_tag", "id": "doc_1", "text": "Quarterly report"},
    ]
    events = await stream_events(http, server.url, body)
    assert not [e for e in events if e.type == "error"], events
    [question] = [e.item for e in events
                  if e.type == "thread.item.done" and e.item.type == "user_message"]  # fmt: skip
    tag = question.content[1]
    assert (tag.type, tag.id, tag.data) == ("input_tag", "doc_1", {})
    saved = await store.load_item(question.thread_id, question.id, user)
    assert isinstance(saved, UserMessageItem)
    assert saved.content[1].type == "input_tag"


def _raw_request(server: LiveServer, start: bytes, pad: bytes, end: bytes) -> bytes:
    """Send ``start``, then ``pad`` over and over (64 MiB in all), then ``end``; the answer."""
    host, port = server.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(start)
        with contextlib.suppress(OSError):  # the server may hang up mid-send: that is fine
            for _ in range(64 * 1024 * 1024 // len(pad) if pad else 0):
                sock.sendall(pad)
            sock.sendall(end)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
        return answer


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ", id="header"),
        pytest.param(
            b"POST /chatkit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\n\r\n2\r\n{}\r\n0\r\nX-Trailer: ",
            id="chunked trailer",
        ),
    ],
)
async def test_an_endless_request_head_is_refused_without_being_held(
    server: LiveServer, start: bytes
) -> None:
    peak_rss_reset()
    before = peak_rss()

    answer = await asyncio.to_thread(_raw_request, server, start, b"a" * 65536, b"\r\n\r\n")

    assert peak_rss() - before < 16 * 1024 * 1024
    assert answer.startswith(b"HTTP/1.1 400 Bad Request"), answer[:200]
    assert b"Invalid HTTP request received." in answer, answer[:200]  # from h11, not from us


async def test_a_big_but_reasonable_request_head_is_fine(server: LiveServer) -> None:
    """Cookies and a long token: 40 KiB of headers, in one header and in many."""
    one = f"X-Pad: {'a' * 40 * 1024}\r\n".encode()
    many = b"".join(f"X-Pad-{i}: {'a' * 1000}\r\n".encode() for i in range(40))
    for headers in (one, many):
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers
        answer = await asyncio.to_thread(_raw_request, server, head, b"", b"\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:200]
