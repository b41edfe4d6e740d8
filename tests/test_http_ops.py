"""Every op of openai-chatkit 1.6.5 through the live server, plus SSE headers, probes and CORS.

Items a ChatKit server only creates through the model (a pending client tool call, a form
waiting for answers, hidden context) are written with a ``PostgresStore`` on the same
database the live server uses, as the request context the server gives its one local user.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from chatkit.store import NotFoundError
from chatkit.types import (
    AssistantMessageItem,
    ClientToolCallItem,
    HiddenContextItem,
    StructuredInputFreeform,
    StructuredInputItem,
    StructuredInputMultipleChoice,
    StructuredInputMultipleChoiceOption,
    ThreadMetadata,
)

from tests.live import LiveServer, add_message, create_thread, stream_events
from workbench.config import Settings
from workbench.context import RequestContext
from workbench.protocol import KNOWN_OPS
from workbench.store import PostgresStore

# The ops this file drives; compared against the SDK's list so a new op in an SDK upgrade
# fails here until it has a test.
COVERED_OPS = {
    "threads.create", "threads.add_user_message", "threads.add_client_tool_output",
    "threads.add_structured_input", "threads.retry_after_item", "threads.custom_action",
    "threads.sync_custom_action", "threads.get_by_id", "threads.list", "threads.update",
    "threads.delete", "items.list", "items.feedback", "attachments.create",
    "attachments.delete", "input.transcribe",
}  # fmt: skip


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # Each test is its own local user, so listings see only the threads the test made even
    # though every test shares the session's database.
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        local_user=f"ops_{secrets.token_hex(4)}",
        _env_file=None,
    )


@pytest.fixture
def user(live: LiveServer) -> RequestContext:
    return RequestContext(live.settings.local_user)


async def post(http: httpx.AsyncClient, live: LiveServer, body: dict[str, Any]) -> httpx.Response:
    return await http.post(live.url, json=body)


def assert_error(response: httpx.Response, status: int, code: str, *fragments: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    for fragment in fragments:
        assert fragment in error["message"], error


async def new_thread(http: httpx.AsyncClient, live: LiveServer, text: str = "Hello") -> str:
    events = await stream_events(http, live.url, create_thread(text))
    assert not [e for e in events if e.type == "error"], events
    thread_id: str = events[0].thread.id
    return thread_id


async def list_items(
    http: httpx.AsyncClient, live: LiveServer, thread_id: str, **params: Any
) -> dict[str, Any]:
    response = await post(
        http, live, {"type": "items.list", "params": {"thread_id": thread_id, **params}}
    )
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def done_items(events: list[Any], item_type: str) -> list[Any]:
    return [e.item for e in events if e.type == "thread.item.done" and e.item.type == item_type]


def answer_text(events: list[Any]) -> str:
    answers = done_items(events, "assistant_message")
    assert len(answers) == 1, events
    return "".join(part.text for part in answers[0].content)


def test_every_known_op_is_covered() -> None:
    assert set(KNOWN_OPS) == COVERED_OPS
    assert len(KNOWN_OPS) == 16


# -- streaming ops ----------------------------------------------------------------------------


async def test_threads_create(
    live: LiveServer, http: httpx.AsyncClient, store: PostgresStore, user: RequestContext
) -> None:
    events = await stream_events(http, live.url, create_thread("What is a monad?"))
    assert events[0].type == "thread.created"
    thread_id = events[0].thread.id
    [question] = done_items(events, "user_message")
    assert question.thread_id == thread_id
    assert question.content[0].text == "What is a monad?"
    assert "You said: What is a monad?" in answer_text(events)
    assert not [e for e in events if e.type == "error"]

    # Everything streamed was persisted, in order, for the server's user.
    stored = await store.load_thread_items(thread_id, None, 10, "asc", user)
    assert [item.id for item in stored.data] == [
        question.id, done_items(events, "assistant_message")[0].id,
    ]  # fmt: skip
    assert (await store.load_thread(thread_id, user)).title == "What is a monad?"


async def test_threads_add_user_message(
    live: LiveServer, http: httpx.AsyncClient, user: RequestContext
) -> None:
    thread_id = await new_thread(http, live, "first")
    events = await stream_events(http, live.url, add_message(thread_id, "second question"))
    assert not [e for e in events if e.type in {"error", "thread.created"}]
    [question] = done_items(events, "user_message")
    assert question.thread_id == thread_id
    assert "You said: second question" in answer_text(events)

    page = await list_items(http, live, thread_id, order="asc")
    assert [i["type"] for i in page["data"]] == [
        "user_message", "assistant_message", "user_message", "assistant_message",
    ]  # fmt: skip
    assert page["data"][2]["id"] == question.id


async def test_threads_add_client_tool_output(
    live: LiveServer, http: httpx.AsyncClient, store: PostgresStore, user: RequestContext
) -> None:
    thread_id = await new_thread(http, live, "Where am I?")
    thread = await store.load_thread(thread_id, user)
    call = ClientToolCallItem(
        id=store.generate_item_id("tool_call", thread, user),
        thread_id=thread_id,
        created_at=datetime.now(),
        call_id=f"call_{secrets.token_hex(4)}",
        name="get_location",
        arguments={"precise": True},
    )
    await store.add_thread_item(thread_id, call, user)

    body = {
        "type": "threads.add_client_tool_output",
        "params": {"thread_id": thread_id, "result": {"city": "Lisbon-7731"}},
    }
    events = await stream_events(http, live.url, body)
    assert not [e for e in events if e.type == "error"], events
    # The demo model quotes the function output it was given: the result reached the model.
    assert "Lisbon-7731" in answer_text(events)

    saved = await store.load_item(thread_id, call.id, user)
    assert isinstance(saved, ClientToolCallItem)
    assert saved.status == "completed"
    assert saved.output == {"city": "Lisbon-7731"}

    # Nothing is pending any more: a second output is refused before streaming.
    response = await post(http, live, body)
    assert_error(response, 400, "invalid_request", "client tool output")


async def test_threads_add_structured_input(
    live: LiveServer, http: httpx.AsyncClient, store: PostgresStore, user: RequestContext
) -> None:
    thread_id = await new_thread(http, live, "Help me pick")
    thread = await store.load_thread(thread_id, user)
    form = StructuredInputItem(
        id=store.generate_item_id("message", thread, user),
        thread_id=thread_id,
        created_at=datetime.now(),
        inputs=[
            StructuredInputMultipleChoice(
                id="colour",
                question="Favourite colour?",
                options=[
                    StructuredInputMultipleChoiceOption(value="teal"),
                    StructuredInputMultipleChoiceOption(value="ochre"),
                ],
            ),
            StructuredInputFreeform(id="name", question="Your name?"),
            StructuredInputFreeform(id="age", question="Your age?"),
        ],
    )
    await store.add_thread_item(thread_id, form, user)

    body = {
        "type": "threads.add_structured_input",
        "params": {
            "thread_id": thread_id,
            "item_id": form.id,
            "input": {
                "status": "answered",
                # Two values for a single-choice question: only the first is kept.
                "answers": {"colour": {"values": ["ochre", "teal"]}, "name": {"values": ["Ada"]}},
            },
        },
    }
    events = await stream_events(http, live.url, body)
    assert not [e for e in events if e.type == "error"], events
    [replaced] = [e.item for e in events if e.type == "thread.item.replaced"]
    assert replaced.id == form.id
    assert replaced.status == "answered"
    answers = {question.id: question.answer for question in replaced.inputs}
    assert answers["colour"].values == ["ochre"]
    assert answers["name"].values == ["Ada"]
    assert answers["age"].skipped
    # The follow-up response comes after the replacement and sees the answers.
    types = [e.type for e in events]
    assert types.index("thread.item.replaced") < types.index("thread.item.done")
    text = answer_text(events)
    assert "Your name?: Ada" in text and "Favourite colour?: ochre" in text

    saved = await store.load_item(thread_id, form.id, user)
    assert isinstance(saved, StructuredInputItem)
    assert saved.status == "answered"

    response = await post(http, live, body)
    assert_error(response, 400, "invalid_request", "params.item_id")


async def test_threads_retry_after_item(
    live: LiveServer, http: httpx.AsyncClient, store: PostgresStore, user: RequestContext
) -> None:
    first = await stream_events(http, live.url, create_thread("first question"))
    thread_id = first[0].thread.id
    [question] = done_items(first, "user_message")
    second = await stream_events(http, live.url, add_message(thread_id, "second question"))
    thread = await store.load_thread(thread_id, user)
    hidden = HiddenContextItem(
        id=store.generate_item_id("sdk_hidden_context", thread, user),
        thread_id=thread_id,
        created_at=datetime.now(),
        content="never shown to the client",
    )
    await store.add_thread_item(thread_id, hidden, user)
    visible_after = [item.id for item in done_items(first, "assistant_message")] + [
        e.item.id for e in second if e.type == "thread.item.done"
    ]
    assert len(visible_after) == 3  # the first answer, the second question and its answer

    body: dict[str, Any] = {
        "type": "threads.retry_after_item",
        "params": {"thread_id": thread_id, "item_id": question.id},
    }
    events = await stream_events(http, live.url, body)
    assert not [e for e in events if e.type == "error"], events
    removed = [e.item_id for e in events if e.type == "thread.item.removed"]
    # Each item the client shows after the question is removed from its view exactly once;
    # hidden context was never shown, so it is not announced (but it is deleted).
    assert sorted(removed) == sorted(visible_after)
    assert hidden.id not in removed
    first_new = next(i for i, e in enumerate(events) if e.type != "thread.item.removed")
    assert all(e.type != "thread.item.removed" for e in events[first_new:])
    assert "You said: first question" in answer_text(events)
    [new_answer] = done_items(events, "assistant_message")
    assert new_answer.id not in visible_after

    stored = await store.load_thread_items(thread_id, None, 20, "asc", user)
    assert [item.id for item in stored.data] == [question.id, new_answer.id]

    # Retrying after something that is not a user message is refused up front.
    body["params"]["item_id"] = new_answer.id
    assert_error(await post(http, live, body), 400, "invalid_request", "params.item_id")


@pytest.mark.parametrize("op", ["threads.custom_action", "threads.sync_custom_action"])
async def test_custom_actions_are_unknown(
    op: str, live: LiveServer, http: httpx.AsyncClient, store: PostgresStore, user: RequestContext
) -> None:
    thread_id = await new_thread(http, live)
    action = {"type": "cart.add", "payload": {"sku": "A1"}}
    response = await post(
        http, live, {"type": op, "params": {"thread_id": thread_id, "action": action}}
    )
    assert_error(response, 400, "unknown_action", "params.action.type", "cart.add")

    [answer] = [i for i in (await list_items(http, live, thread_id))["data"]
                if i["type"] == "assistant_message"]  # fmt: skip
    response = await post(
        http, live,
        {"type": op, "params": {"thread_id": thread_id, "item_id": answer["id"], "action": action}},
    )  # fmt: skip
    assert_error(response, 400, "invalid_request", "params.item_id", "not a widget")

    response = await post(
        http, live, {"type": op, "params": {"thread_id": "thr_missing", "action": action}}
    )
    assert_error(response, 404, "not_found", "thr_missing")


# -- JSON ops ---------------------------------------------------------------------------------


async def test_threads_get_by_id(live: LiveServer, http: httpx.AsyncClient) -> None:
    events = await stream_events(http, live.url, create_thread("Tell me a joke"))
    thread_id = events[0].thread.id
    streamed = [e.item.id for e in events if e.type == "thread.item.done"]

    response = await post(http, live, {"type": "threads.get_by_id",
                                       "params": {"thread_id": thread_id}})  # fmt: skip
    assert response.status_code == 200, response.text
    thread = response.json()
    assert thread["id"] == thread_id
    assert thread["title"] == "Tell me a joke"
    assert thread["status"] == {"type": "active"}
    assert [item["id"] for item in thread["items"]["data"]] == streamed

    response = await post(http, live, {"type": "threads.get_by_id",
                                       "params": {"thread_id": "thr_nope"}})  # fmt: skip
    assert_error(response, 404, "not_found", "thr_nope")


async def test_threads_list_pages(live: LiveServer, http: httpx.AsyncClient) -> None:
    created = [await new_thread(http, live, f"thread {n}") for n in range(3)]

    async def page(**params: Any) -> dict[str, Any]:
        response = await post(http, live, {"type": "threads.list", "params": params})
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    everything = await page()
    assert [t["id"] for t in everything["data"]] == created[::-1]  # newest first by default
    assert everything["has_more"] is False
    assert [t["title"] for t in everything["data"]] == ["thread 2", "thread 1", "thread 0"]

    first = await page(limit=2, order="desc")
    assert [t["id"] for t in first["data"]] == [created[2], created[1]]
    assert first["has_more"] is True
    rest = await page(limit=2, order="desc", after=first["after"])
    assert [t["id"] for t in rest["data"]] == [created[0]]
    assert rest["has_more"] is False

    ascending = await page(limit=1, order="asc")
    assert [t["id"] for t in ascending["data"]] == [created[0]]
    following = await page(limit=5, order="asc", after=ascending["after"])
    assert [t["id"] for t in following["data"]] == created[1:]
    # A thread id works as a cursor too.
    assert [t["id"] for t in (await page(order="asc", after=created[0]))["data"]] == created[1:]


async def test_threads_update(live: LiveServer, http: httpx.AsyncClient) -> None:
    thread_id = await new_thread(http, live, "old title")
    rename = {"thread_id": thread_id, "title": "Renamed ✓"}
    response = await post(http, live, {"type": "threads.update", "params": rename})
    assert response.status_code == 200, response.text
    assert response.json()["title"] == "Renamed ✓"

    response = await post(http, live, {"type": "threads.get_by_id",
                                       "params": {"thread_id": thread_id}})  # fmt: skip
    assert response.json()["title"] == "Renamed ✓"

    rename = {"thread_id": "thr_nope", "title": "x"}
    response = await post(http, live, {"type": "threads.update", "params": rename})
    assert_error(response, 404, "not_found", "thr_nope")


async def test_threads_delete(live: LiveServer, http: httpx.AsyncClient) -> None:
    thread_id = await new_thread(http, live)
    keep = await new_thread(http, live)
    delete = {"type": "threads.delete", "params": {"thread_id": thread_id}}
    response = await post(http, live, delete)
    assert response.status_code == 200, response.text
    assert response.json() == {}

    for body in (
        {"type": "threads.get_by_id", "params": {"thread_id": thread_id}},
        {"type": "items.list", "params": {"thread_id": thread_id}},
        delete,
    ):
        assert_error(await post(http, live, body), 404, "not_found", thread_id)
    listed = await post(http, live, {"type": "threads.list", "params": {}})
    assert [t["id"] for t in listed.json()["data"]] == [keep]


async def test_items_list(
    live: LiveServer, http: httpx.AsyncClient, store: PostgresStore, user: RequestContext
) -> None:
    thread_id = await new_thread(http, live, "one")
    await stream_events(http, live.url, add_message(thread_id, "two"))
    thread = await store.load_thread(thread_id, user)
    await store.add_thread_item(
        thread_id,
        HiddenContextItem(id=store.generate_item_id("sdk_hidden_context", thread, user),
                          thread_id=thread_id, created_at=datetime.now(), content="secret"),
        user,
    )  # fmt: skip
    stored = [item.id for item in (await store.load_thread_items(
        thread_id, None, 20, "asc", user)).data]  # fmt: skip
    visible = stored[:4]

    everything = await list_items(http, live, thread_id, order="asc")
    assert [i["id"] for i in everything["data"]] == visible  # hidden context never leaves
    assert [i["id"] for i in (await list_items(http, live, thread_id))["data"]] == visible[::-1]

    seen: list[str] = []
    after = None
    for _ in range(10):
        page = await list_items(http, live, thread_id, order="asc", limit=2, after=after)
        seen += [i["id"] for i in page["data"]]
        after = page["after"]
        if not page["has_more"]:
            break
    assert seen == visible

    assert_error(
        await post(http, live, {"type": "items.list", "params": {"thread_id": "thr_nope"}}),
        404, "not_found", "thr_nope",
    )  # fmt: skip


async def test_items_feedback(
    live: LiveServer, http: httpx.AsyncClient, store: PostgresStore, user: RequestContext
) -> None:
    events = await stream_events(http, live.url, create_thread("rate me"))
    thread_id = events[0].thread.id
    [answer] = done_items(events, "assistant_message")

    def feedback(kind: str, item_ids: list[str]) -> dict[str, Any]:
        return {"type": "items.feedback",
                "params": {"thread_id": thread_id, "item_ids": item_ids, "kind": kind}}  # fmt: skip

    response = await post(http, live, feedback("positive", [answer.id]))
    assert response.status_code == 200, response.text
    assert response.json() == {}
    assert await store.load_feedback(thread_id, user) == {answer.id: "positive"}

    await post(http, live, feedback("negative", [answer.id]))
    assert await store.load_feedback(thread_id, user) == {answer.id: "negative"}

    response = await post(http, live, feedback("positive", [answer.id, "msg_unknown"]))
    assert_error(response, 404, "not_found", "msg_unknown")
    assert await store.load_feedback(thread_id, user) == {answer.id: "negative"}


async def test_attachments_create_and_delete(
    live: LiveServer, http: httpx.AsyncClient, store: PostgresStore, user: RequestContext
) -> None:
    response = await post(http, live, {"type": "attachments.create", "params": {
        "name": "notes.txt", "size": 12, "mime_type": "text/plain"}})  # fmt: skip
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["type"] == "file" and created["name"] == "notes.txt"
    descriptor = created["upload_descriptor"]
    assert descriptor["method"] == "POST" and descriptor["url"].startswith(live.base + "/files/")
    assert "metadata" not in created

    response = await post(http, live, {"type": "attachments.delete",
                                       "params": {"attachment_id": "atc_nope"}})  # fmt: skip
    assert_error(response, 404, "not_found", "atc_nope")

    response = await post(http, live, {"type": "attachments.delete",
                                       "params": {"attachment_id": created["id"]}})  # fmt: skip
    assert response.status_code == 200, response.text
    with pytest.raises(NotFoundError):
        await store.load_attachment(created["id"], user)


async def test_input_transcribe(live: LiveServer, http: httpx.AsyncClient) -> None:
    audio = base64.b64encode(b"RIFF....WAVEfmt ").decode()
    response = await post(http, live, {"type": "input.transcribe", "params": {
        "audio_base64": audio, "mime_type": "audio/wav"}})  # fmt: skip
    assert_error(response, 400, "transcription_unavailable", "OPENAI_API_KEY")

    response = await post(http, live, {"type": "input.transcribe", "params": {
        "audio_base64": "not base64!!", "mime_type": "audio/webm;codecs=opus"}})  # fmt: skip
    assert_error(response, 400, "invalid_request", "params.audio_base64")


# -- HTTP details -----------------------------------------------------------------------------


async def test_sse_headers(live: LiveServer, http: httpx.AsyncClient) -> None:
    # A long message makes a body big enough that a compressing middleware would kick in.
    text = "compress me " * 200
    headers = {"Accept-Encoding": "gzip, deflate, br"}
    async with http.stream("POST", live.url, json=create_thread(text), headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in r.headers
        assert "content-length" not in r.headers
        raw = b"".join([chunk async for chunk in r.aiter_raw()])
    # The raw bytes on the wire are the events themselves, one `data:` line each.
    chunks = raw.split(b"\n\n")
    assert chunks[-1] == b""
    assert all(chunk.startswith(b"data: {") for chunk in chunks[:-1])
    assert len(chunks) > 5


async def test_health_probes(live: LiveServer, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{live.base}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    response = await http.get(f"{live.base}/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_cors_preflight_allowed_origin(live: LiveServer, http: httpx.AsyncClient) -> None:
    origin = "http://localhost:5173"
    response = await http.options(live.url, headers={
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, accept-language",
    })  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == origin
    allowed_headers = response.headers["access-control-allow-headers"].split(",")
    allowed = {header.strip().lower() for header in allowed_headers}
    assert {"authorization", "content-type", "accept-language"} <= allowed
    assert "POST" in response.headers["access-control-allow-methods"]

    response = await http.post(
        live.url, json={"type": "threads.list", "params": {}}, headers={"Origin": origin}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin


async def test_cors_disallowed_origin(live: LiveServer, http: httpx.AsyncClient) -> None:
    origin = "http://evil.example"
    response = await http.options(live.url, headers={
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    })  # fmt: skip
    assert response.status_code >= 400
    assert "access-control-allow-origin" not in response.headers

    response = await http.post(
        live.url, json={"type": "threads.list", "params": {}}, headers={"Origin": origin}
    )
    assert "access-control-allow-origin" not in response.headers


async def test_json_ops_parse_as_sdk_types(live: LiveServer, http: httpx.AsyncClient) -> None:
    """What the JSON ops return parses with the SDK's own models (the UI's contract)."""
    thread_id = await new_thread(http, live, "typed")
    response = await post(http, live, {"type": "threads.get_by_id",
                                       "params": {"thread_id": thread_id}})  # fmt: skip
    thread = ThreadMetadata.model_validate(response.json())
    assert thread.id == thread_id
    items = (await list_items(http, live, thread_id, order="asc"))["data"]
    assert AssistantMessageItem.model_validate(items[1]).thread_id == thread_id
