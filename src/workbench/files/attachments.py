"""Attachments: metadata in Postgres (through the ChatKit ``Store``), bytes in a ``BlobStore``.

Two ways in, as ChatKit offers them:

* **two-phase** — ``attachments.create`` records a pending attachment and returns an upload
  descriptor: a signed URL on this server (POST multipart ``file`` or PUT raw body) for the
  local backend, a presigned PUT for S3; the bytes follow there;
* **direct** — the browser POSTs multipart ``file`` to ``/files/upload`` and gets the
  attachment back.

Limits hold while the bytes stream: the size (declared and ``WORKBENCH_UPLOAD_MAX_MB``) stops
the upload the moment it is exceeded, the first bytes must match the declared type, and
nothing of a refused upload is kept.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import mimetypes
import re
import unicodedata
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from chatkit.store import AttachmentStore
from chatkit.types import (
    Attachment,
    AttachmentCreateParams,
    AttachmentUploadDescriptor,
    FileAttachment,
    ImageAttachment,
)

from workbench.config import Settings
from workbench.context import RequestContext
from workbench.errors import ApiError
from workbench.files.blobs import BlobNotFoundError, BlobStore
from workbench.files.signing import UrlSigner
from workbench.store import DeletedThread, PostgresStore
from workbench.store.ids import time_ordered_id

logger = logging.getLogger(__name__)

UPLOADS_PREFIX = "/files/uploads"  # two-phase: the bytes of a created attachment
DIRECT_UPLOAD_PATH = "/files/upload"  # direct: create and upload in one request
ATTACHMENTS_PREFIX = "/files/attachments"  # downloads and image previews
UPLOAD_URL_TTL = 3600
_SNIFF_BYTES = 8192
_MAX_NAME = 200
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")
_JOINERS = frozenset("\u200c\u200d")  # format characters that scripts and emoji need

# Leading bytes of the binary types we accept, by MIME type.
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
    "application/pdf": (b"%PDF-",),
    "application/zip": (b"PK\x03\x04", b"PK\x05\x06"),
    "application/vnd.apache.parquet": (b"PAR1",),
}


class UploadRefusedError(ApiError):
    pass


def sanitize_name(name: str) -> str:
    """A file name safe anywhere: no path, no control or reserved characters, bounded."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    # C1 controls, bidi overrides (a "txt.exe" shown as "exe.txt"), line separators and lone
    # surrogates (which Postgres refuses in JSON) go the way of the ASCII controls.
    name = "".join("\x00" if _invisible(c) else c for c in name)
    name = _UNSAFE_NAME.sub("_", name).strip(" .")
    if len(name) > _MAX_NAME:
        stem, dot, extension = name.rpartition(".")
        keep = _MAX_NAME - len(extension) - 1 if dot and len(extension) < 16 else _MAX_NAME
        name = (stem[:keep] + "." + extension) if dot and len(extension) < 16 else name[:keep]
    return name or "upload"


def _invisible(char: str) -> bool:
    category = unicodedata.category(char)
    if category == "Cf":
        return char not in _JOINERS
    return category in {"Cc", "Cs", "Zl", "Zp"}


def attachment_url(
    signer: UrlSigner, attachment_id: str, owner: str, base_url: str, *, inline: bool
) -> str:
    """The absolute signed link serving an attachment's bytes (``inline`` for images)."""
    params = {"inline": "1"} if inline else None
    return signer.sign(base_url, f"{ATTACHMENTS_PREFIX}/{attachment_id}", owner, params=params)


class WorkbenchAttachmentStore(AttachmentStore[RequestContext]):
    def __init__(
        self, store: PostgresStore, blobs: BlobStore, signer: UrlSigner, settings: Settings
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.signer = signer
        self.settings = settings
        self._receiving: set[str] = set()  # two-phase uploads under way in this process

    # -- the SDK's AttachmentStore ------------------------------------------------------------

    def generate_attachment_id(self, mime_type: str, context: RequestContext) -> str:
        return time_ordered_id("atc")

    async def create_attachment(
        self, input: AttachmentCreateParams, context: RequestContext
    ) -> Attachment:
        mime_type = self.checked_type(input.mime_type, input.name)
        self.check_size(input.size)
        attachment_id = self.generate_attachment_id(mime_type, context)
        name = sanitize_name(input.name)
        url, method, headers = await self._upload_target(
            attachment_id, mime_type, input.size, context
        )
        return self._attachment(
            attachment_id, name, mime_type, context,
            upload=AttachmentUploadDescriptor(url=url, method=method, headers=headers),  # type: ignore[arg-type]
            metadata={"state": "pending", "size": input.size, "created": _now()},
        )  # fmt: skip

    async def delete_attachment(self, attachment_id: str, context: RequestContext) -> None:
        await self.store.load_attachment(attachment_id, context)  # foreign: NotFoundError
        await self.blobs.delete(attachment_id)

    # -- lifecycle ----------------------------------------------------------------------------

    async def forget_thread(self, deleted: DeletedThread) -> None:
        """The thread is gone, and its attachments' metadata with it: drop their bytes."""
        for attachment_id in deleted.attachment_ids:
            await self.blobs.delete(attachment_id)

    async def collect_stale_uploads(self) -> None:
        """Forever: drop uploads never attached to a message within WORKBENCH_UPLOAD_TTL_HOURS."""
        age = timedelta(hours=self.settings.upload_ttl_hours)
        while True:
            try:
                for attachment_id in await self.store.delete_stale_uploads(age):
                    await self.blobs.delete(attachment_id)
            except Exception:
                logger.exception("collecting stale uploads failed; will try again")
            await asyncio.sleep(min(3600.0, age.total_seconds() / 4))

    # -- receiving bytes ----------------------------------------------------------------------

    async def receive(
        self, attachment: Attachment, chunks: AsyncIterator[bytes], context: RequestContext
    ) -> Attachment:
        """Store the bytes of a pending two-phase attachment; returns it, now uploaded."""
        if attachment.id in self._receiving:
            raise UploadRefusedError(
                409, "upload_in_progress", "This attachment's bytes are being uploaded already."
            )
        self._receiving.add(attachment.id)
        try:
            # Read again now that no other upload of it can start: one may just have finished.
            attachment = await self.store.load_attachment(attachment.id, context)
            metadata = attachment.metadata or {}
            if metadata.get("state") != "pending":
                raise UploadRefusedError(
                    409, "already_uploaded", "This attachment already has its bytes."
                )
            declared = int(metadata.get("size") or 0)
            size = await self._store_bytes(attachment.id, attachment.mime_type, chunks, declared)
            return await self._mark_uploaded(attachment, size, context)
        finally:
            self._receiving.discard(attachment.id)

    async def direct_upload(
        self, name: str, mime_type: str, chunks: AsyncIterator[bytes], context: RequestContext
    ) -> Attachment:
        mime_type = self.checked_type(mime_type, name)
        attachment_id = self.generate_attachment_id(mime_type, context)
        size = await self._store_bytes(attachment_id, mime_type, chunks, declared=None)
        attachment = self._attachment(
            attachment_id, sanitize_name(name), mime_type, context,
            upload=None, metadata={"state": "uploaded", "size": size, "created": _now()},
        )  # fmt: skip
        try:
            await self.store.save_attachment(attachment, context)
        except BaseException:
            await self.blobs.delete(attachment_id)
            raise
        return attachment

    async def confirm_uploaded(self, attachment: Attachment, context: RequestContext) -> Attachment:
        """A message names the attachment: make sure its bytes arrived (S3 uploads bypass us)."""
        metadata = attachment.metadata or {}
        if metadata.get("state") != "pending":
            return attachment
        try:
            # Out of the presigned URL's reach first: what is checked is what stays.
            await self.blobs.promote(attachment.id)
        except BlobNotFoundError:
            raise UploadRefusedError(
                400,
                "upload_incomplete",
                f"params.input.attachments: {attachment.name!r} was never uploaded; upload it "
                "(or remove it from the message) and send again.",
            ) from None
        size = await self.blobs.size(attachment.id) or 0
        if size != metadata.get("size"):
            await self.blobs.delete(attachment.id)
            raise _size_mismatch(size, int(metadata.get("size") or 0))
        try:
            _check_content(await self._head(attachment.id), attachment.mime_type)
        except UploadRefusedError:
            await self.blobs.delete(attachment.id)
            raise
        return await self._mark_uploaded(attachment, size, context)

    # -- checks -------------------------------------------------------------------------------

    def checked_type(self, mime_type: str, name: str) -> str:
        mime_type = (mime_type or "").split(";")[0].strip().lower()
        if not mime_type or mime_type == "application/octet-stream":
            mime_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if not any(fnmatch.fnmatchcase(mime_type, p) for p in self.settings.upload_mime_types):
            raise UploadRefusedError(
                415, "unsupported_file_type",
                f"Files of type {mime_type!r} are not accepted here; accepted: "
                + ", ".join(self.settings.upload_mime_types),
            )  # fmt: skip
        return mime_type

    def check_size(self, size: int) -> None:
        if size < 0:
            raise UploadRefusedError(400, "invalid_request", "params.size: must not be negative.")
        if size > self.max_bytes:
            raise _too_large(self.settings.upload_max_mb)

    @property
    def max_bytes(self) -> int:
        return self.settings.upload_max_mb * 1024 * 1024

    # -- helpers ------------------------------------------------------------------------------

    async def _store_bytes(
        self, key: str, mime_type: str, chunks: AsyncIterator[bytes], declared: int | None
    ) -> int:
        guarded = _checked_stream(chunks, self.settings.upload_max_mb, mime_type, declared)
        size = await self.blobs.write(key, guarded, mime_type)
        if declared is not None and size != declared:
            await self.blobs.delete(key)
            raise _size_mismatch(size, declared)
        return size

    async def _head(self, key: str) -> bytes:
        """The first bytes of a stored blob, for the content check."""
        head = b""
        body = self.blobs.read(key)
        try:
            async for chunk in body:
                head += chunk
                if len(head) >= _SNIFF_BYTES:
                    break
        finally:
            await body.aclose()
        return head[:_SNIFF_BYTES]

    async def _mark_uploaded(
        self, attachment: Attachment, size: int, context: RequestContext
    ) -> Attachment:
        metadata = {**(attachment.metadata or {}), "state": "uploaded", "size": size}
        uploaded = attachment.model_copy(update={"upload_descriptor": None, "metadata": metadata})
        await self.store.save_attachment(uploaded, context)
        return uploaded

    async def _upload_target(
        self, attachment_id: str, mime_type: str, size: int, context: RequestContext
    ) -> tuple[str, str, dict[str, str]]:
        presigned = await self.blobs.presigned_put(attachment_id, mime_type, size, UPLOAD_URL_TTL)
        if presigned is not None:
            return presigned[0], "PUT", presigned[1]
        url = self.signer.sign(
            context.base_url, f"{UPLOADS_PREFIX}/{attachment_id}", context.user_id,
            ttl_seconds=UPLOAD_URL_TTL,
        )  # fmt: skip
        return url, "POST", {}

    def download_url(self, attachment_id: str, owner: str, base_url: str, *, inline: bool) -> str:
        return attachment_url(self.signer, attachment_id, owner, base_url, inline=inline)

    def _attachment(
        self,
        attachment_id: str,
        name: str,
        mime_type: str,
        context: RequestContext,
        *,
        upload: AttachmentUploadDescriptor | None,
        metadata: dict[str, Any],
    ) -> Attachment:
        if mime_type.startswith("image/"):
            preview = self.download_url(
                attachment_id, context.user_id, context.base_url, inline=True
            )
            return ImageAttachment(
                id=attachment_id, name=name, mime_type=mime_type, upload_descriptor=upload,
                preview_url=preview, metadata=metadata,  # type: ignore[arg-type]
            )  # fmt: skip
        return FileAttachment(
            id=attachment_id, name=name, mime_type=mime_type, upload_descriptor=upload,
            metadata=metadata,
        )  # fmt: skip


async def _checked_stream(
    chunks: AsyncIterator[bytes], max_mb: int, mime_type: str, declared: int | None
) -> AsyncIterator[bytes]:
    """Pass the bytes through, stopping the moment a limit or the declared size is passed,
    or when the first bytes do not match the declared type."""
    size = 0
    head = b""
    async for chunk in chunks:
        size += len(chunk)
        if size > max_mb * 1024 * 1024:
            raise _too_large(max_mb)
        if declared is not None and size > declared:
            raise _size_mismatch(size, declared)
        if len(head) < _SNIFF_BYTES:
            head += chunk[: _SNIFF_BYTES - len(head)]
            if len(head) >= _SNIFF_BYTES:
                _check_content(head, mime_type)
        yield chunk
    if len(head) < _SNIFF_BYTES:
        _check_content(head, mime_type)


def _check_content(head: bytes, mime_type: str) -> None:
    """The first bytes must be what the declared type says."""
    magic = _MAGIC.get(mime_type)
    looks_binary = b"\x00" in head
    if magic is not None and not head.startswith(magic):  # an empty file is no PNG either
        raise UploadRefusedError(
            400, "content_mismatch",
            f"The file's bytes are not {mime_type}: it looks like something else. Check the "
            "file and upload it again.",
        )  # fmt: skip
    textual = mime_type.startswith("text/") or mime_type in {"application/json", "application/xml"}
    if textual and looks_binary:
        raise UploadRefusedError(
            400, "content_mismatch",
            f"The file was declared {mime_type} but contains binary data.",
        )  # fmt: skip


def _too_large(max_mb: int) -> UploadRefusedError:
    return UploadRefusedError(
        413, "file_too_large", f"The file is larger than this server accepts ({max_mb} MB)."
    )


def _size_mismatch(actual: int, declared: int | None) -> UploadRefusedError:
    return UploadRefusedError(
        400, "size_mismatch",
        f"The upload sent {actual} bytes or more but {declared} were declared; nothing was kept.",
    )  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).isoformat()
