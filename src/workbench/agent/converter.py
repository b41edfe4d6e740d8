"""ChatKit thread items -> model input: fills the hooks the SDK leaves unimplemented.

Attachments reach the model as what it can read: images as ``input_image`` (inline bytes or
a signed URL, ``WORKBENCH_IMAGE_INPUT``), PDFs as ``input_file``, and everything else as a
copy in the thread's workspace under ``uploads/`` with a note saying where, so
``execute_python`` can open it. The converted input goes into the thread's transcript, so
later turns see the same.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

from agents.items import TResponseInputItem
from chatkit.agents import ThreadItemConverter
from chatkit.types import AssistantMessageItem, Attachment, UserMessageTagContent
from openai.types.responses import EasyInputMessageParam, ResponseInputTextParam
from openai.types.responses.response_input_content_param import ResponseInputContentParam

from workbench.context import RequestContext
from workbench.files.attachments import WorkbenchAttachmentStore
from workbench.files.blobs import BlobNotFoundError
from workbench.sandbox.workspace_fs import create_new_file, open_existing_file
from workbench.sandbox.workspaces import Workspaces
from workbench.widgets import format_size

UPLOADS_DIR = "uploads"
_INLINE_LIMIT = 20 * 1024 * 1024  # larger images and PDFs go to the workspace instead
_PREVIEW_BYTES = 2000


class WorkbenchConverter(ThreadItemConverter):
    def __init__(
        self,
        attachments: WorkbenchAttachmentStore,
        workspaces: Workspaces,
        context: RequestContext,
        thread_id: str,
    ) -> None:
        self._attachments = attachments
        self._workspaces = workspaces
        self._context = context
        self._thread_id = thread_id

    async def attachment_to_message_content(
        self, attachment: Attachment
    ) -> ResponseInputContentParam:
        size = int((attachment.metadata or {}).get("size") or 0)
        try:
            if attachment.mime_type.startswith("image/") and size <= _INLINE_LIMIT:
                return await self._image(attachment)
            if attachment.mime_type == "application/pdf" and size <= _INLINE_LIMIT:
                data = base64.b64encode(await self._bytes(attachment)).decode()
                return {
                    "type": "input_file",
                    "filename": attachment.name,
                    "file_data": f"data:application/pdf;base64,{data}",
                }
            return await self._workspace_copy(attachment, size)
        except BlobNotFoundError:
            return _text(f"[The user attached {attachment.name!r}, but its upload is missing.]")
        except OSError as error:  # e.g. code in the sandbox made uploads/ a link
            return _text(
                f"[The user attached {attachment.name!r}, but it could not be placed in the "
                f"workspace ({error.strerror}).]"
            )

    async def tag_to_message_content(self, tag: UserMessageTagContent) -> ResponseInputContentParam:
        details = json.dumps(tag.data, ensure_ascii=False, default=str) if tag.data else "{}"
        return _text(f"@{tag.text} refers to: {details}")

    async def assistant_message_to_input(
        self, item: AssistantMessageItem
    ) -> TResponseInputItem | list[TResponseInputItem] | None:
        # Plain text works for every provider; `output_text` parts break Chat Completions.
        text = "".join(part.text for part in item.content)
        return EasyInputMessageParam(type="message", role="assistant", content=text)

    async def _image(self, attachment: Attachment) -> ResponseInputContentParam:
        if self._attachments.settings.image_input == "url":
            url = self._attachments.download_url(
                attachment.id, self._context.user_id, self._context.base_url, inline=True
            )
        else:
            data = base64.b64encode(await self._bytes(attachment)).decode()
            url = f"data:{attachment.mime_type};base64,{data}"
        return {"type": "input_image", "detail": "auto", "image_url": url}

    async def _bytes(self, attachment: Attachment) -> bytes:
        return b"".join([chunk async for chunk in self._attachments.blobs.read(attachment.id)])

    async def _workspace_copy(self, attachment: Attachment, size: int) -> ResponseInputContentParam:
        workspace = self._workspaces.ensure(self._context.user_id, self._thread_id)
        name, head = await self._copy_into(workspace, attachment)
        note = (
            f"[The user attached {attachment.name!r} ({attachment.mime_type}, "
            f"{format_size(size)}). It is saved at /workspace/{UPLOADS_DIR}/{name}: read it "
            "with execute_python."
        )
        if _looks_textual(attachment.mime_type, head):
            preview = head.decode("utf-8", errors="replace")
            if size > len(head):  # cut off: drop the partial last line
                preview = preview.rsplit("\n", 1)[0]
            note += f" Its first lines:\n{preview.rstrip()}"
        return _text(note + "]")

    async def _copy_into(self, workspace: Path, attachment: Attachment) -> tuple[str, bytes]:
        """Write the attachment into ``uploads/``; its name there and its first bytes.

        A file already there under its name with the same bytes (the message is being
        retried, or the file was sent again) is used as it is, not copied again.
        """
        head = await self._same_bytes_at(workspace, attachment)
        if head is not None:
            return attachment.name, head
        relative, fd = create_new_file(workspace, UPLOADS_DIR, attachment.name)
        head = b""
        with os.fdopen(fd, "wb") as file:
            async for chunk in self._attachments.blobs.read(attachment.id):
                await asyncio.to_thread(file.write, chunk)  # the loop serves others meanwhile
                if len(head) < _PREVIEW_BYTES:
                    head += chunk[: _PREVIEW_BYTES - len(head)]
        return relative.removeprefix(f"{UPLOADS_DIR}/"), head

    async def _same_bytes_at(self, workspace: Path, attachment: Attachment) -> bytes | None:
        """The first bytes of ``uploads/<name>`` if it holds exactly the attachment's bytes."""
        fd = open_existing_file(workspace, UPLOADS_DIR, attachment.name)
        if fd is None:
            return None
        with os.fdopen(fd, "rb") as file:
            if os.fstat(fd).st_size != (attachment.metadata or {}).get("size"):
                return None
            head = b""
            blob = self._attachments.blobs.read(attachment.id)
            try:
                async for chunk in blob:
                    if await asyncio.to_thread(file.read, len(chunk)) != chunk:
                        return None
                    head += chunk[: _PREVIEW_BYTES - len(head)]
            finally:
                await blob.aclose()
            return head


def _looks_textual(mime_type: str, head: bytes) -> bool:
    textual = mime_type.startswith("text/") or mime_type in {"application/json", "application/xml"}
    return textual and b"\x00" not in head


def _text(text: str) -> ResponseInputContentParam:
    return ResponseInputTextParam(type="input_text", text=text)
