"""``image_generation``: the OpenAI provider's hosted image tool, its images kept out of Postgres.

The user sees ChatKit's generated-image item: each partial image fills it in as it streams
(a data URL in a ``thread.item.updated``, which ChatKit sends but never saves, with progress),
and the final image finishes it behind an absolute signed link,
``/files/attachments/<id>?inline=1``, renewed on read like every other link.

Invariants:

* An image's bytes live in the blob store (local or S3) and, for ``execute_python``, in the
  workspace as ``/workspace/images/<id>.png``. Postgres holds an attachment row (so the
  download route serves the image and deleting the thread deletes it) and links, never
  base64: the thread item gets the link, and the model transcript keeps the call without its
  ``result``, which is read back from the blob store when the transcript is replayed, so a
  follow-up ("make it darker") shows the model its image again.
* The image id derives from the thread and the provider's call id: the transcript finds its
  image again without keeping anything of ours, and another thread never finds it.
* The final image is stored before ChatKit finishes the item (``call_written`` sees the
  ``output_item.done`` first). A failed call, or an image that cannot be stored, takes the
  item away again and says why in a task; the turn goes on.
* Stop: a half-drawn image item is never saved, and an image stored for an item that was not
  saved is deleted again (blob, row and workspace copy).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agents import ImageGenerationTool
from chatkit.agents import ResponseStreamConverter
from chatkit.icons import IconName
from chatkit.store import NotFoundError
from chatkit.types import (
    CustomSummary,
    CustomTask,
    FileAttachment,
    GeneratedImageItem,
    ThreadItem,
    ThreadItemDoneEvent,
    ThreadItemRemovedEvent,
    Workflow,
    WorkflowItem,
)

from workbench.config import Settings
from workbench.files.attachments import attachment_url
from workbench.files.blobs import BlobNotFoundError, BlobStore
from workbench.files.signing import UrlSigner
from workbench.plugins import ConverterWrapper, ToolPlugin, TurnContext
from workbench.sandbox import workspace_fs
from workbench.sandbox.workspace_fs import create_new_file, file_parts
from workbench.sandbox.workspaces import Workspaces
from workbench.tools.services import ToolServices

logger = logging.getLogger(__name__)

TOOL_ID = "image_generation"
IMAGES_DIR = "images"
_PNG = b"\x89PNG\r\n\x1a\n"
_ICON: IconName = "square-image"
# Discards scheduled by a Stop, held so they are not collected before they finish.
_discarding: set[asyncio.Task[None]] = set()


class ImageRefusedError(ValueError):
    """The provider's image cannot be kept; the message says why, for the user."""


@dataclass(frozen=True)
class StoredImage:
    image_id: str  # attachment id and blob key
    url: str  # the signed link handed out when it was stored
    workspace_path: str | None  # relative to the workspace; None when it could not be copied


@dataclass
class _TurnImages:
    stored: dict[str, StoredImage] = field(default_factory=dict)  # by provider call id
    item_of: dict[str, str] = field(default_factory=dict)  # provider call id -> ChatKit item id
    delivered: set[str] = field(default_factory=set)  # calls whose item ChatKit finished
    stopped: bool = False


def plugins(services: ToolServices) -> list[ToolPlugin]:
    if services.provider != "openai" or not services.settings.openai_image_generation:
        return []
    return [
        ImageGenerationPlugin(
            services.settings, services.blobs, services.signer, services.workspaces
        )
    ]


def image_id_for(thread_id: str, call_id: str) -> str:
    """The id (attachment id, blob key, workspace file stem) of a call's image."""
    digest = hashlib.sha256(f"{thread_id}\0{call_id}".encode()).hexdigest()
    return f"img_{digest[:40]}"


class ImageGenerationPlugin(ToolPlugin):
    id = TOOL_ID
    item_type = "image_generation_call"
    instructions = (
        f"Each image you generate is also saved as a PNG in /workspace/{IMAGES_DIR}/ (newest "
        "last by modification time), where code you run can open or edit it."
    )

    def __init__(
        self, settings: Settings, blobs: BlobStore, signer: UrlSigner, workspaces: Workspaces
    ) -> None:
        self._settings = settings
        self._blobs = blobs
        self._signer = signer
        self._workspaces = workspaces

    def tool(self) -> ImageGenerationTool:
        return ImageGenerationTool(
            tool_config={
                "type": "image_generation",
                "partial_images": self._settings.image_partials,
                "size": self._settings.image_size,
                "quality": self._settings.image_quality,
                "output_format": "png",  # what the workspace copy's name promises
            }
        )

    # -- streaming --------------------------------------------------------------------------

    async def call_started(self, turn: TurnContext, item: Any) -> None:
        return None  # ChatKit's generated-image item shows the call

    async def call_written(self, turn: TurnContext, item: Any) -> None:
        images = _images(turn)
        call_id = str(item.id)
        pending = turn.generated_image_item
        try:
            stored = await self._keep(turn, call_id, item)
        except ImageRefusedError as error:
            # Without a result ChatKit leaves the item unfinished; it goes, with the reason.
            item.result = None
            await _give_up(turn, str(error))
            return
        if images.stopped:  # the user pressed Stop while the image was being stored
            await self.discard(turn, stored)
            return
        images.stored[call_id] = stored
        if pending is not None:
            images.item_of[call_id] = pending.id

    def stream_converter(
        self, turn: TurnContext, inner: ResponseStreamConverter
    ) -> ResponseStreamConverter:
        return _ImageLinks(inner, _images(turn), self._settings.image_partials)

    def stopped(self, turn: TurnContext, items: list[ThreadItem]) -> list[ThreadItem]:
        images = _images(turn)
        images.stopped = True
        unsaved = {item.id for item in items if isinstance(item, GeneratedImageItem)}
        for call_id, stored in list(images.stored.items()):
            if call_id not in images.delivered or images.item_of.get(call_id) in unsaved:
                del images.stored[call_id]
                task = asyncio.get_running_loop().create_task(self.discard(turn, stored))
                _discarding.add(task)
                task.add_done_callback(_discarding.discard)
        return [item for item in items if not isinstance(item, GeneratedImageItem)]

    # -- the transcript ---------------------------------------------------------------------

    async def transcript_saving(self, turn: TurnContext, item: dict[str, Any]) -> dict[str, Any]:
        return item if item.get("result") is None else {**item, "result": None}

    async def transcript_replaying(self, turn: TurnContext, item: dict[str, Any]) -> dict[str, Any]:
        call_id = item.get("id")
        if item.get("result") is not None or not isinstance(call_id, str):
            return item
        image_id = image_id_for(turn.thread.id, call_id)
        try:
            # Owner-scoped, and of this thread: a transcript can only restore its own image.
            attachment = await turn.store.load_attachment(image_id, turn.request_context)
            if attachment.thread_id != turn.thread.id:
                return item
            data = b"".join([chunk async for chunk in self._blobs.read(image_id)])
        except (NotFoundError, BlobNotFoundError):
            return item  # never stored (failed, stopped), or deleted since
        except Exception:
            logger.exception("could not read generated image %s back", image_id)
            return item
        # Off the loop: megabytes per image, every turn the image is in the history.
        encoded = await asyncio.to_thread(base64.b64encode, data)
        return {**item, "result": encoded.decode("ascii")}

    # -- storing ----------------------------------------------------------------------------

    async def _keep(self, turn: TurnContext, call_id: str, item: Any) -> StoredImage:
        """Store the call's final image everywhere it goes, or nowhere; raises
        ImageRefusedError saying why not."""
        if getattr(item, "status", None) == "failed" or not item.result:
            error = getattr(item, "error", None)
            reason = getattr(error, "message", None) or "the provider made no image"
            raise ImageRefusedError(f"Image generation failed: {reason}.")
        data = await asyncio.to_thread(_decoded, str(item.result), self._settings.image_max_mb)
        context = turn.request_context
        image_id = image_id_for(turn.thread.id, call_id)
        url = attachment_url(self._signer, image_id, context.user_id, context.base_url, inline=True)
        stored = StoredImage(image_id, url, self._copy_to_workspace(turn, image_id, data))
        try:
            # At once: the image is on the user's critical path (nothing shows it until both
            # are done), and neither needs the other.
            async with asyncio.TaskGroup() as both:
                both.create_task(self._blobs.write(image_id, _once(data), "image/png"))
                attachment = _attachment(turn, image_id, len(data))
                both.create_task(turn.store.save_attachment(attachment, context))
        except BaseException as error:
            await asyncio.shield(self.discard(turn, stored))
            if isinstance(error, Exception):
                logger.exception("could not store generated image %s", image_id)
                raise ImageRefusedError("The image was made but could not be saved.") from error
            raise
        return stored

    def _copy_to_workspace(self, turn: TurnContext, image_id: str, data: bytes) -> str | None:
        # Written here, not in a worker thread: a cancelled worker write would finish unseen,
        # leaving a file nobody removes. A few MB into the page cache take a millisecond.
        try:
            workspace = self._workspaces.ensure(turn.request_context.user_id, turn.thread.id)
            relative, fd = create_new_file(workspace, IMAGES_DIR, f"{image_id}.png")
            with os.fdopen(fd, "wb") as file:
                file.write(data)
        except OSError as error:  # e.g. code in the sandbox made images/ a link
            logger.warning("generated image %s not copied to the workspace: %s", image_id, error)
            return None
        return relative

    async def discard(self, turn: TurnContext, stored: StoredImage) -> None:
        """Remove whatever of ``stored`` exists: its row, its blob, its workspace copy."""
        with contextlib.suppress(NotFoundError):
            await turn.store.delete_attachment(stored.image_id, turn.request_context)
        try:
            await self._blobs.delete(stored.image_id)
        except Exception:
            logger.exception("could not delete generated image %s", stored.image_id)
        if stored.workspace_path is not None:
            workspace = self._workspaces.path(turn.request_context.user_id, turn.thread.id)
            with contextlib.suppress(OSError):  # gone already, or its folder made a link
                workspace_fs.delete(workspace, file_parts(stored.workspace_path))


class _ImageLinks(ConverterWrapper):
    """Partial images stream as data URLs (never saved); the final one is the stored link."""

    def __init__(self, inner: ResponseStreamConverter, images: _TurnImages, partials: int) -> None:
        super().__init__(inner)
        self._images = images
        self.partial_images = partials

    async def base64_image_to_url(
        self, image_id: str, base64_image: str, partial_image_index: int | None = None
    ) -> str:
        if partial_image_index is not None:
            return await self.inner.base64_image_to_url(image_id, base64_image, partial_image_index)
        stored = self._images.stored.get(image_id)
        if stored is None:  # call_written stores every result ChatKit is left to finish
            raise LookupError(f"generated image {image_id} was not stored")
        self._images.delivered.add(image_id)
        return stored.url

    def partial_image_index_to_progress(self, partial_image_index: int) -> float:
        # The final image is the last step: n partials make n + 1 steps.
        return min(1.0, (partial_image_index + 1) / ((self.partial_images or 0) + 1))


def _images(turn: TurnContext) -> _TurnImages:
    return turn.state(f"{TOOL_ID}:images", _TurnImages)


async def _give_up(turn: TurnContext, message: str) -> None:
    """Take the unfinished image item away and say why, in a finished workflow of its own.

    One ``thread.item.done``, never an open workflow: the model's next item (its message) may
    reach ChatKit before a queued ``thread.item.added`` would, and ChatKit would then reopen
    a workflow it had already closed and saved.
    """
    pending = turn.generated_image_item
    if pending is not None:
        turn.generated_image_item = None
        await turn.stream(ThreadItemRemovedEvent(item_id=pending.id))
    task = CustomTask(title="No image", icon=_ICON, content=message, status_indicator="complete")
    workflow = Workflow(
        type="custom", tasks=[task], summary=CustomSummary(title="No image", icon=_ICON),
        expanded=True,
    )  # fmt: skip
    # Naive, like every item ChatKit makes: it subtracts datetime.now() from a workflow's.
    item = WorkflowItem(
        id=turn.generate_id("workflow"), thread_id=turn.thread.id, created_at=datetime.now(),
        workflow=workflow,
    )  # fmt: skip
    await turn.stream(ThreadItemDoneEvent(item=item))


def _decoded(result: str, max_mb: int) -> bytes:
    if len(result) * 3 // 4 > max_mb * 1024 * 1024:
        raise ImageRefusedError(f"The image is larger than this server keeps ({max_mb} MB).")
    try:
        data = base64.b64decode(result, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRefusedError("The provider sent an image that is not valid base64.") from None
    if not data.startswith(_PNG):
        raise ImageRefusedError("The provider sent an image that is not a PNG.")
    return data


def _attachment(turn: TurnContext, image_id: str, size: int) -> FileAttachment:
    return FileAttachment(
        id=image_id,
        name=f"{image_id}.png",
        mime_type="image/png",
        thread_id=turn.thread.id,
        metadata={
            "state": "uploaded", "size": size, "created": datetime.now(UTC).isoformat(),
            "source": TOOL_ID,
        },
    )  # fmt: skip


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
