"""A first pass over the live server: a demo-model turn and a JSON op."""

from __future__ import annotations

import httpx

from tests.live import LiveServer, add_message, create_thread, stream_events


async def test_demo_turn_and_list(live: LiveServer, http: httpx.AsyncClient) -> None:
    events = await stream_events(http, live.url, create_thread("Hello there"))
    types = [e.type for e in events]
    assert types[0] == "thread.created"
    deltas = [e for e in events if e.type == "thread.item.updated"
              and e.update.type == "assistant_message.content_part.text_delta"]  # fmt: skip
    assert len(deltas) > 3
    done = [e.item for e in events if e.type == "thread.item.done"]
    assert done[-1].type == "assistant_message"
    assert "Demo model" in done[-1].content[0].text
    assert any(e.type == "thread.updated" and e.thread.title == "Hello there" for e in events)
    thread_id = events[0].thread.id

    events = await stream_events(http, live.url, add_message(thread_id, "again"))
    assert [e for e in events if e.type == "error"] == []

    response = await http.post(
        live.url, json={"type": "items.list", "params": {"thread_id": thread_id, "order": "asc"}}
    )
    assert response.status_code == 200
    assert [i["type"] for i in response.json()["data"]] == [
        "user_message", "assistant_message", "user_message", "assistant_message",
    ]  # fmt: skip
