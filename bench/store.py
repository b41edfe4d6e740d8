"""Store benchmark: page latency must not grow with history, and appends must stay cheap.

Prints, from one run against one throwaway database:
* ``load_thread_items`` p50 for a thread of 100,000 items / a thread of 100 items (target <= 2),
  for the newest page and for a page deep in the history reached by cursor;
* ``load_threads`` p50 for a user with 10,000 threads / a user with 10 (target <= 2);
* ``add_thread_item`` p50 (target <= 2 ms).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chatkit.types import (
    InferenceOptions,
    ThreadMetadata,
    UserMessageItem,
    UserMessageTextContent,
)
from psycopg.types.json import Jsonb
from tests.postgres_server import admin_server, throwaway_database

from workbench.config import Settings
from workbench.context import RequestContext
from workbench.store import PostgresStore, open_pool
from workbench.store.migrations import apply_migrations

BIG_THREAD, SMALL_THREAD = 100_000, 100
MANY_THREADS, FEW_THREADS = 10_000, 10
PAGE = 20
ROUNDS = 300
START = datetime(2026, 1, 1, tzinfo=UTC)


def item_json(thread_id: str, n: int) -> dict[str, Any]:
    return UserMessageItem(
        id=f"msg_{thread_id}_{n:07d}",
        thread_id=thread_id,
        created_at=START + timedelta(seconds=n),
        content=[UserMessageTextContent(text=f"message number {n} " + "lorem ipsum " * 20)],
        inference_options=InferenceOptions(),
    ).model_dump(mode="json")


async def seed(store: PostgresStore, pool: Any) -> None:
    """Bulk-load with COPY; the store itself is what we time, not the loading."""
    big_user, small_user = RequestContext("big"), RequestContext("small")
    for user, thread_id in ((big_user, "thr_big"), (small_user, "thr_small")):
        await store.save_thread(ThreadMetadata(id=thread_id, created_at=START), user)
    async with pool.connection() as conn:
        async with (
            conn.cursor() as cursor,
            cursor.copy(
                "COPY thread_items (thread_id, id, owner, type, created_at, data) FROM STDIN"
            ) as copy,
        ):
            for thread_id, owner, count in (
                ("thr_big", "big", BIG_THREAD),
                ("thr_small", "small", SMALL_THREAD),
            ):
                for n in range(count):
                    data = item_json(thread_id, n)
                    await copy.write_row(
                        (
                            thread_id,
                            data["id"],
                            owner,
                            "user_message",
                            START + timedelta(seconds=n),
                            Jsonb(data),
                        )
                    )
        async with (
            conn.cursor() as cursor,
            cursor.copy("COPY threads (id, owner, created_at, data) FROM STDIN") as copy,
        ):
            for owner, count in (("many", MANY_THREADS), ("few", FEW_THREADS)):
                for n in range(count):
                    thread = ThreadMetadata(
                        id=f"thr_{owner}_{n:06d}",
                        title=f"thread {n}",
                        created_at=START + timedelta(seconds=n),
                    )
                    await copy.write_row(
                        (thread.id, owner, thread.created_at, Jsonb(thread.model_dump(mode="json")))
                    )
        await conn.execute("ANALYZE")


async def cursor_at(
    store: PostgresStore, thread_id: str, position: int, user: RequestContext
) -> str | None:
    """The cursor after the first `position` items, reached by paging as a client would."""
    after, seen = None, 0
    while seen < position:
        page = await store.load_thread_items(
            thread_id, after, min(1000, position - seen), "asc", user
        )
        after, seen = page.after, seen + len(page.data)
    return after


async def p50(call: Callable[[], Awaitable[Any]], rounds: int = ROUNDS) -> float:
    for _ in range(20):  # warm the pool, prepared statements and caches
        await call()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


async def paired(
    big: Callable[[], Awaitable[Any]], small: Callable[[], Awaitable[Any]]
) -> tuple[float, float]:
    # Interleave the two so drift in machine load affects both equally.
    big_times, small_times = [], []
    for _ in range(3):
        big_times.append(await p50(big, ROUNDS // 3))
        small_times.append(await p50(small, ROUNDS // 3))
    return statistics.median(big_times), statistics.median(small_times)


async def main() -> int:
    with admin_server() as admin_url, throwaway_database(admin_url, "workbench_bench") as url:
        await apply_migrations(url)
        async with open_pool(url, Settings(database_url=url, db_pool_min_size=2)) as pool:
            store = PostgresStore(pool)
            started = time.perf_counter()
            await seed(store, pool)
            print(
                f"seeded {BIG_THREAD + SMALL_THREAD:,} items and "
                f"{MANY_THREADS + FEW_THREADS:,} threads in {time.perf_counter() - started:.1f} s"
            )
            big, small = RequestContext("big"), RequestContext("small")
            many, few = RequestContext("many"), RequestContext("few")

            newest = await paired(
                lambda: store.load_thread_items("thr_big", None, PAGE, "desc", big),
                lambda: store.load_thread_items("thr_small", None, PAGE, "desc", small),
            )
            big_deep = await cursor_at(store, "thr_big", BIG_THREAD // 2, big)
            small_deep = await cursor_at(store, "thr_small", SMALL_THREAD // 2, small)
            deep = await paired(
                lambda: store.load_thread_items("thr_big", big_deep, PAGE, "asc", big),
                lambda: store.load_thread_items("thr_small", small_deep, PAGE, "asc", small),
            )
            threads = await paired(
                lambda: store.load_threads(PAGE, None, "desc", many),
                lambda: store.load_threads(PAGE, None, "desc", few),
            )

            target = ThreadMetadata(id="thr_small", created_at=START)
            counter = iter(range(10**9))

            async def append() -> None:
                item = UserMessageItem(
                    id=store.generate_item_id("message", target, small),
                    thread_id="thr_small",
                    created_at=datetime.now(),
                    content=[UserMessageTextContent(text=f"appended {next(counter)}")],
                    inference_options=InferenceOptions(),
                )
                await store.add_thread_item("thr_small", item, small)

            add_p50 = await p50(append, 1000)

    ok = True
    for label, (big_t, small_t) in (
        (f"load_thread_items newest page, {BIG_THREAD:,} vs {SMALL_THREAD} items", newest),
        (f"load_thread_items page by cursor mid-history, {BIG_THREAD:,} vs {SMALL_THREAD}", deep),
        (f"load_threads newest page, {MANY_THREADS:,} vs {FEW_THREADS} threads", threads),
    ):
        ratio = big_t / small_t
        ok &= ratio <= 2.0
        print(
            f"{label}: {big_t * 1e3:.3f} ms / {small_t * 1e3:.3f} ms = ratio {ratio:.2f} "
            f"(target <= 2) {'OK' if ratio <= 2.0 else 'MISSED'}"
        )
    ok &= add_p50 <= 0.002
    print(
        f"add_thread_item p50: {add_p50 * 1e3:.3f} ms (target <= 2 ms) "
        f"{'OK' if add_p50 <= 0.002 else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
