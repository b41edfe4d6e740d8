"""The model transcript of a thread, as an Agents SDK ``Session`` on our Postgres pool."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from agents.items import TResponseInputItem
from agents.memory import SessionSettings
from agents.models.fake_id import FAKE_RESPONSES_ID
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from workbench.text import storable_json

ItemHook = Callable[[Any], Awaitable[Any]]
"""Rewrites one transcript item on its way in or out (the tools' transcript hooks)."""


class TranscriptSession:
    """One turn's view of a thread's transcript.

    Items added through this session are tagged with ``turn`` (the id of the ChatKit user
    message being answered), which is what lets a retry rewind the transcript to just before
    that message. Reads return at most ``max_items`` of the newest items, starting at a user
    message so a tool output is never sent without the call it answers.

    Every item passes ``saving`` before it is stored and ``replaying`` when it is read back,
    so what must not live in Postgres (a generated image's bytes) can be kept elsewhere.
    """

    session_settings: SessionSettings | None = None

    def __init__(
        self,
        pool: AsyncConnectionPool,
        thread_id: str,
        owner: str,
        turn: str,
        max_items: int,
        refresh_links: Callable[[str], str] = lambda text: text,
        saving: ItemHook | None = None,
        replaying: ItemHook | None = None,
    ) -> None:
        self._pool = pool
        self._refresh_links = refresh_links
        self._saving = saving or _unchanged
        self._replaying = replaying or _unchanged
        self.session_id = thread_id
        self._owner = owner
        self._turn = turn
        self._max_items = max_items

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        budget = self._max_items if limit is None else min(limit, self._max_items)
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                """
                SELECT data::text FROM agent_transcript
                WHERE thread_id = %s AND owner = %s ORDER BY seq DESC LIMIT %s
                """,
                (self.session_id, self._owner, budget),
            )
            newest_first = [row[0] for row in await cursor.fetchall()]
        # Signed links in earlier turns (an image the model fetches, a file it was shown)
        # would expire; the model gets fresh ones.
        items = [json.loads(self._refresh_links(text)) for text in reversed(newest_first)]
        if len(items) == budget:
            items = _from_first_user_message(items)
        return [await self._replaying(item) for item in items]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        if not items:
            return
        rows = [
            (
                self.session_id,
                self._owner,
                self._turn,
                Jsonb(storable_json(_without_fake_id(saved))),
            )
            for saved in [await self._saving(item) for item in items]
        ]
        async with self._pool.connection() as conn, conn.cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO agent_transcript (thread_id, owner, turn, data)"
                " VALUES (%s, %s, %s, %s)",
                rows,
            )

    async def pop_item(self) -> TResponseInputItem | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                """
                DELETE FROM agent_transcript WHERE (thread_id, seq) = (
                    SELECT thread_id, seq FROM agent_transcript
                    WHERE thread_id = %s AND owner = %s ORDER BY seq DESC LIMIT 1
                ) RETURNING data
                """,
                (self.session_id, self._owner),
            )
            row = await cursor.fetchone()
        return None if row is None else await self._replaying(row[0])

    async def clear_session(self) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM agent_transcript WHERE thread_id = %s AND owner = %s",
                (self.session_id, self._owner),
            )

    async def has_turn(self) -> bool:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT 1 FROM agent_transcript WHERE thread_id = %s AND owner = %s AND turn = %s"
                " LIMIT 1",
                (self.session_id, self._owner, self._turn),
            )
            return await cursor.fetchone() is not None

    async def rewind(self) -> int:
        """Forget this turn and everything after it; return how many items went."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                """
                DELETE FROM agent_transcript
                WHERE thread_id = %(thread)s AND owner = %(owner)s AND seq >= (
                    SELECT min(seq) FROM agent_transcript
                    WHERE thread_id = %(thread)s AND owner = %(owner)s AND turn = %(turn)s
                )
                """,
                {"thread": self.session_id, "owner": self._owner, "turn": self._turn},
            )
            return cursor.rowcount


async def _unchanged(item: Any) -> Any:
    return item


def _from_first_user_message(items: list[Any]) -> list[Any]:
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("role") == "user":
            return items[index:]
    return []


def _without_fake_id(item: Any) -> Any:
    # Chat Completions items carry a placeholder id that the Responses API would reject.
    if not (isinstance(item, dict) and item.get("id") == FAKE_RESPONSES_ID):
        return item
    if item.get("type") == "message" and item.get("role") == "assistant":
        # Without its id the Chat Completions converter no longer recognises an output
        # message (UserError on the next turn); plain text reads back on every provider.
        parts = item.get("content") or []
        text = "".join(
            str(part.get("text") or part.get("refusal") or "")
            for part in parts
            if isinstance(part, dict)
        )
        return {"role": "assistant", "content": text}
    return {key: value for key, value in item.items() if key != "id"}
