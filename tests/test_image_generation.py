"""Hosted image generation end to end: the real ``openai`` client against the scripted Responses
server, the live server, real Postgres and a real blob store (local disk, or S3 on moto).

Partial images stream into ChatKit's generated-image item; the final image lands in the blob
store behind a signed link; no base64 reaches Postgres; the next turn shows the model its
image again; Stop and failures keep nothing; deleting the thread deletes the image.
"""

from __future__ import annotations

import asyncio
import base64
import io
import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from chatkit.store import NotFoundError
from chatkit.types import CustomTask, GeneratedImageItem, ThreadMetadata, WorkflowItem
from openai.types.responses.response_output_item import ImageGenerationCall
from PIL import Image
from psycopg import sql

from tests.live import (
    LiveServer,
    ScriptedOpenAI,
    add_message,
    create_thread,
    list_items,
    provider_settings,
    responses_step,
    running,
    stream_events,
    title_step,
)
from tests.test_cancellation import eventually, read_until
from tests.test_s3 import Bucket, bucket, moto_url, s3_options  # noqa: F401  (fixtures)
from tests.test_tool_seam import toolset_ids
from workbench.agent.response_events import ImageGeneration, Text
from workbench.config import Settings
from workbench.context import RequestContext
from workbench.files.blobs import LocalBlobStore
from workbench.files.signing import UrlSigner
from workbench.plugins import TurnContext
from workbench.sandbox.workspaces import Workspaces
from workbench.store import PostgresStore
from workbench.tools.image_generation import (
    IMAGES_DIR,
    TOOL_ID,
    ImageGenerationPlugin,
    image_id_for,
)

IMAGE_SETTINGS: dict[str, Any] = {"image_size": "1024x1536", "image_quality": "low"}


def png(color: tuple[int, int, int], side: int = 96) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), color).save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


FINAL = png((200, 40, 40), side=256)
PARTIALS = [png((60, 60, 60)), png((140, 40, 40))]


def drawing(result: bytes | None = FINAL, **options: Any) -> ImageGeneration:
    return ImageGeneration(
        b64(result) if result is not None else None, [b64(p) for p in PARTIALS], **options
    )


@pytest.fixture
def imaging(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI
) -> Iterator[LiveServer]:
    settings = provider_settings(database_url, tmp_path / "data", scripted_openai, **IMAGE_SETTINGS)
    with running(LiveServer(settings)) as live:
        yield live


def generated(events: list[Any], kind: str) -> list[GeneratedImageItem]:
    return [e.item for e in events if e.type == kind and isinstance(e.item, GeneratedImageItem)]


def no_errors(events: list[Any]) -> None:
    assert [e for e in events if e.type == "error"] == []


def workspace_images(live: LiveServer, thread_id: str) -> dict[str, bytes]:
    folder = live.workbench.workspaces.path(live.settings.local_user, thread_id) / IMAGES_DIR
    return {path.name: path.read_bytes() for path in folder.glob("*")} if folder.exists() else {}


async def rows(database_url: str, table: str, thread_id: str) -> list[str]:
    """Every row of ``table`` for the thread, as the JSON text Postgres holds."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        query = sql.SQL("SELECT data::text FROM {} WHERE thread_id = %s").format(
            sql.Identifier(table)
        )
        cursor = await conn.execute(query, (thread_id,))
        return [row[0] for row in await cursor.fetchall()]


async def assert_no_base64_in_postgres(database_url: str, thread_id: str) -> None:
    for table in ("thread_items", "agent_transcript", "attachments"):
        for text in await rows(database_url, table, thread_id):
            assert ";base64," not in text, (table, text[:200])
            for image in (FINAL, *PARTIALS):
                assert b64(image)[:64] not in text, table


def image_calls(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry for entry in body["input"] if entry.get("type") == "image_generation_call"]


async def test_partials_stream_then_the_final_image_is_a_signed_blob_link(
    imaging: LiveServer,
    scripted_openai: ScriptedOpenAI,
    http: httpx.AsyncClient,
    database_url: str,
) -> None:
    scripted_openai.script(
        responses_step([drawing(), Text("Here is your red square.")]), title_step("Square")
    )

    events = await stream_events(http, imaging.url, create_thread("Draw a red square"))

    no_errors(events)
    [added] = generated(events, "thread.item.added")
    assert added.image is None
    updates = [e.update for e in events if e.type == "thread.item.updated"]
    updates = [u for u in updates if u.type == "generated_image.updated"]
    assert [u.image.url for u in updates] == [f"data:image/png;base64,{b64(p)}" for p in PARTIALS]
    assert [u.progress for u in updates] == [pytest.approx(1 / 3), pytest.approx(2 / 3)]
    [done] = generated(events, "thread.item.done")
    assert done.id == added.id and done.image is not None
    url = done.image.url
    assert url.startswith(f"{imaging.base}/files/attachments/img_")
    assert "inline=1" in url and "sig=" in url and "exp=" in url
    fetched = await http.get(url)
    assert fetched.status_code == 200, fetched.text
    assert fetched.content == FINAL
    assert fetched.headers["content-type"] == "image/png"
    assert fetched.headers["content-disposition"].startswith("inline")

    thread_id = events[0].thread.id
    saved = [i for i in await list_items(http, imaging.url, thread_id)]
    assert [i.type for i in saved] == ["user_message", "generated_image", "assistant_message"]
    assert isinstance(saved[1], GeneratedImageItem) and saved[1].image is not None
    assert saved[1].image.url.split("?")[0] == url.split("?")[0]
    assert (await http.get(saved[1].image.url)).content == FINAL
    image_id = url.split("?")[0].rsplit("/", 1)[1]
    assert workspace_images(imaging, thread_id) == {f"{image_id}.png": FINAL}
    assert (imaging.settings.data_dir / "blobs" / image_id).read_bytes() == FINAL
    await assert_no_base64_in_postgres(database_url, thread_id)
    [call] = [
        t for t in await rows(database_url, "agent_transcript", thread_id) if "image_gen" in t
    ]
    assert '"result": null' in call

    [tool] = [t for t in scripted_openai.streamed[0]["tools"] if t["type"] == TOOL_ID]
    assert tool == {
        "type": "image_generation", "partial_images": 2, "size": "1024x1536",
        "quality": "low", "output_format": "png",
    }  # fmt: skip


async def test_a_follow_up_shows_the_model_its_image_again(
    imaging: LiveServer,
    scripted_openai: ScriptedOpenAI,
    http: httpx.AsyncClient,
    database_url: str,
) -> None:
    darker = png((90, 10, 10), side=256)
    scripted_openai.script(
        responses_step([drawing(), Text("Here it is.")]),
        title_step("Square"),
        responses_step([drawing(darker), Text("Darker now.")]),
    )
    first = await stream_events(http, imaging.url, create_thread("Draw a red square"))
    thread_id = first[0].thread.id

    second = await stream_events(http, imaging.url, add_message(thread_id, "Make it darker"))

    no_errors(second)
    [earlier] = image_calls(scripted_openai.streamed[1])
    assert earlier["result"] == b64(FINAL)
    assert earlier["status"] == "completed"
    [done] = generated(second, "thread.item.done")
    assert done.image is not None
    assert (await http.get(done.image.url)).content == darker
    assert sorted(workspace_images(imaging, thread_id).values()) == sorted([FINAL, darker])
    await assert_no_base64_in_postgres(database_url, thread_id)


async def test_deleting_the_thread_deletes_its_images(
    imaging: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    scripted_openai.script(responses_step([drawing(), Text("Done.")]), title_step("Square"))
    events = await stream_events(http, imaging.url, create_thread("Draw a red square"))
    thread_id = events[0].thread.id
    [done] = generated(events, "thread.item.done")
    assert done.image is not None
    url = done.image.url
    image_id = url.split("?")[0].rsplit("/", 1)[1]
    blob = imaging.settings.data_dir / "blobs" / image_id
    assert blob.exists() and workspace_images(imaging, thread_id)

    deleted = await http.post(
        imaging.url, json={"type": "threads.delete", "params": {"thread_id": thread_id}}
    )

    assert deleted.status_code == 200, deleted.text
    assert not blob.exists()
    assert (await http.get(url)).status_code == 404
    assert workspace_images(imaging, thread_id) == {}


async def test_stop_mid_generation_keeps_nothing(
    imaging: LiveServer,
    scripted_openai: ScriptedOpenAI,
    http: httpx.AsyncClient,
    database_url: str,
) -> None:
    step = responses_step([drawing(), Text("Here it is.")], delay=0.2)
    scripted_openai.script(step, title_step("Square"))

    def first_partial(events: list[Any]) -> bool:
        return any(
            e.type == "thread.item.updated" and e.update.type == "generated_image.updated"
            for e in events
        )

    events = await read_until(http, imaging.url, create_thread("Draw"), first_partial)

    thread_id = events[0].thread.id
    # The provider's stream was cut off: the final image never arrived.
    await eventually(lambda: scripted_openai.finished[0] is False)
    await asyncio.sleep(0.5)  # for anything still on its way to land
    items = await list_items(http, imaging.url, thread_id)
    assert "generated_image" not in [item.type for item in items]
    assert await rows(database_url, "attachments", thread_id) == []
    assert list((imaging.settings.data_dir / "blobs").glob("img_*")) == []
    assert workspace_images(imaging, thread_id) == {}
    await assert_no_base64_in_postgres(database_url, thread_id)


async def test_stop_after_the_image_keeps_the_image(
    imaging: LiveServer, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    slow = Text("A long caption, streamed slowly enough to be stopped half way through it.")
    scripted_openai.script(responses_step([drawing(), slow], delay=0.1), title_step("Square"))

    events = await read_until(
        http,
        imaging.url,
        create_thread("Draw"),
        lambda seen: bool(generated(seen, "thread.item.done")),
    )

    await eventually(lambda: scripted_openai.finished[0] is False)
    [done] = generated(events, "thread.item.done")
    assert done.image is not None
    items = await list_items(http, imaging.url, events[0].thread.id)
    assert [item.id for item in items if isinstance(item, GeneratedImageItem)] == [done.id]
    assert (await http.get(done.image.url)).content == FINAL


@pytest.fixture
async def turn(store: PostgresStore, alice: RequestContext) -> TurnContext:
    thread = ThreadMetadata(id=f"thr_{secrets.token_hex(8)}", created_at=datetime.now())
    await store.save_thread(thread, alice)
    turn = TurnContext(thread=thread, store=store, request_context=alice)
    turn.generated_image_item = GeneratedImageItem(
        id=f"msg_{secrets.token_hex(8)}", thread_id=thread.id, created_at=datetime.now()
    )
    return turn


def plug_in(tmp_path: Path) -> tuple[ImageGenerationPlugin, Workspaces]:
    settings = Settings(_env_file=None, data_dir=tmp_path)
    workspaces = Workspaces(tmp_path / "workspaces")
    blobs = LocalBlobStore(tmp_path / "blobs")
    return ImageGenerationPlugin(
        settings, blobs, UrlSigner(secrets.token_bytes(32), 60), workspaces
    ), workspaces


@pytest.mark.parametrize("stop_first", [False, True])
async def test_an_image_stored_for_an_item_a_stop_dropped_goes_again(
    tmp_path: Path, turn: TurnContext, stop_first: bool
) -> None:
    plugin, workspaces = plug_in(tmp_path)
    pending = turn.generated_image_item
    assert pending is not None
    call = ImageGenerationCall(
        id="ig_1", type="image_generation_call", status="completed", result=b64(FINAL)
    )
    image_id = image_id_for(turn.thread.id, call.id)
    blob = tmp_path / "blobs" / image_id
    images = workspaces.path(turn.request_context.user_id, turn.thread.id) / IMAGES_DIR

    if stop_first:  # Stop lands while the image is still being stored
        assert plugin.stopped(turn, [pending]) == []
        await plugin.call_written(turn, call)
    else:
        await plugin.call_written(turn, call)
        assert blob.read_bytes() == FINAL and len(list(images.iterdir())) == 1
        assert plugin.stopped(turn, [pending]) == []

    await eventually(lambda: not blob.exists())
    assert list(images.iterdir()) == []
    with pytest.raises(NotFoundError):
        await turn.store.load_attachment(image_id, turn.request_context)


@pytest.mark.parametrize(
    ("part", "reason"),
    [
        (drawing(None, status="failed"), "Image generation failed"),
        (ImageGeneration("not base64 at all!", []), "not valid base64"),
        (ImageGeneration(b64(b"GIF89a" + bytes(64)), []), "not a PNG"),
    ],
)
async def test_a_failed_or_broken_image_is_explained_and_nothing_is_kept(
    imaging: LiveServer,
    scripted_openai: ScriptedOpenAI,
    http: httpx.AsyncClient,
    database_url: str,
    part: ImageGeneration,
    reason: str,
) -> None:
    scripted_openai.script(responses_step([part, Text("Sorry about that.")]), title_step("Square"))

    events = await stream_events(http, imaging.url, create_thread("Draw a red square"))

    no_errors(events)
    [added] = generated(events, "thread.item.added")
    assert added.id in [e.item_id for e in events if e.type == "thread.item.removed"]
    thread_id = events[0].thread.id
    items = await list_items(http, imaging.url, thread_id)
    assert "generated_image" not in [item.type for item in items]
    [workflow] = [item for item in items if isinstance(item, WorkflowItem)]
    [task] = workflow.workflow.tasks
    assert isinstance(task, CustomTask) and reason in (task.content or "")
    assert items[-1].type == "assistant_message"
    assert await rows(database_url, "attachments", thread_id) == []
    assert list((imaging.settings.data_dir / "blobs").glob("img_*")) == []
    await assert_no_base64_in_postgres(database_url, thread_id)


async def test_offered_only_on_openai_and_only_when_on(tmp_path: Path) -> None:
    assert TOOL_ID in await toolset_ids(tmp_path, "openai")
    assert TOOL_ID not in await toolset_ids(tmp_path, "chat_completions")
    assert TOOL_ID not in await toolset_ids(tmp_path, "demo")
    assert TOOL_ID not in await toolset_ids(tmp_path, "openai", openai_image_generation=False)


async def test_on_s3_the_image_is_an_object_in_the_bucket(
    database_url: str,
    tmp_path: Path,
    bucket: Bucket,  # noqa: F811
    scripted_openai: ScriptedOpenAI,
    http: httpx.AsyncClient,
) -> None:
    settings = provider_settings(
        database_url, tmp_path / "data", scripted_openai, **s3_options(bucket)
    )
    scripted_openai.script(
        responses_step([drawing(), Text("Here.")]),
        title_step("Square"),
        responses_step([Text("It is red.")]),
    )
    with running(LiveServer(settings)) as live:
        events = await stream_events(http, live.url, create_thread("Draw a red square"))
        no_errors(events)
        thread_id = events[0].thread.id
        [done] = generated(events, "thread.item.done")
        assert done.image is not None
        image_id = done.image.url.split("?")[0].rsplit("/", 1)[1]
        assert await bucket.keys() == [f"uploads/{image_id}"]
        assert await bucket.get(f"uploads/{image_id}") == FINAL
        assert (await http.get(done.image.url)).content == FINAL

        await stream_events(http, live.url, add_message(thread_id, "What colour is it?"))
        [earlier] = image_calls(scripted_openai.streamed[1])
        assert earlier["result"] == b64(FINAL)
        await assert_no_base64_in_postgres(database_url, thread_id)

        body = {"type": "threads.delete", "params": {"thread_id": thread_id}}
        assert (await http.post(live.url, json=body)).status_code == 200
        assert await bucket.keys() == []
    assert not (tmp_path / "data" / "blobs").exists()
