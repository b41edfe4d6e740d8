"""HTTP routes for attachment bytes: two-phase and direct uploads, and signed downloads.

Bodies stream straight into the blob store (multipart parsed as it arrives), so an upload
never sits whole in memory and a limit stops it mid-stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from chatkit.store import NotFoundError
from chatkit.types import Attachment
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from workbench.context import RequestContext
from workbench.errors import ApiError
from workbench.files.attachments import (
    ATTACHMENTS_PREFIX,
    DIRECT_UPLOAD_PATH,
    UPLOADS_PREFIX,
    WorkbenchAttachmentStore,
)
from workbench.files.blobs import BlobNotFoundError
from workbench.files.downloads import SECURITY_HEADERS, content_disposition
from workbench.files.signing import SignatureStatus

router = APIRouter()
_NOT_FOUND = "No such attachment: it may have been deleted."


@router.api_route(UPLOADS_PREFIX + "/{attachment_id}", methods=["POST", "PUT"])
async def upload_attachment_bytes(request: Request, attachment_id: str) -> Response:
    """The second phase of a two-phase upload: the bytes of an attachment created earlier."""
    attachments: WorkbenchAttachmentStore = request.app.state.attachments
    owner = await _signed_owner(request, attachment_id, f"{UPLOADS_PREFIX}/{attachment_id}")
    context = RequestContext(owner, request.app.state.authenticate.base_url(request))
    attachment = await attachments.store.load_attachment(attachment_id, context)
    chunks: AsyncIterator[bytes]
    if request.method == "PUT":
        chunks = request.stream()
    else:
        _, _, chunks = await multipart_file(request)
    uploaded = await attachments.receive(attachment, chunks, context)
    return _attachment_json(uploaded)


@router.post(DIRECT_UPLOAD_PATH)
async def direct_upload(request: Request) -> Response:
    """Direct upload: multipart field ``file``, answered with the new attachment."""
    attachments: WorkbenchAttachmentStore = request.app.state.attachments
    context: RequestContext = await request.app.state.authenticate(request)
    name, mime_type, chunks = await multipart_file(request)
    attachment = await attachments.direct_upload(name, mime_type, chunks, context)
    return _attachment_json(attachment)


@router.get(ATTACHMENTS_PREFIX + "/{attachment_id}")
async def download_attachment(request: Request, attachment_id: str) -> Response:
    attachments: WorkbenchAttachmentStore = request.app.state.attachments
    owner = await _signed_owner(request, attachment_id, f"{ATTACHMENTS_PREFIX}/{attachment_id}")
    context = RequestContext(owner, request.app.state.authenticate.base_url(request))
    try:
        attachment = await attachments.store.load_attachment(attachment_id, context)
    except NotFoundError:
        raise ApiError(404, "not_found", _NOT_FOUND) from None
    if (attachment.metadata or {}).get("state") != "uploaded":
        raise ApiError(404, "not_found", "This attachment has not been uploaded yet.")
    body = attachments.blobs.read(attachment_id)
    try:
        first = await anext(body)
    except StopAsyncIteration:
        first = b""
    except BlobNotFoundError:
        raise ApiError(404, "not_found", _NOT_FOUND) from None
    inline = request.query_params.get("inline") == "1" and attachment.mime_type.startswith("image/")
    headers = {
        **SECURITY_HEADERS,
        "Content-Disposition": content_disposition(attachment.name, inline=inline),
    }
    size = (attachment.metadata or {}).get("size")
    if isinstance(size, int):
        headers["Content-Length"] = str(size)
    return StreamingResponse(
        _prepend(first, body), media_type=attachment.mime_type, headers=headers
    )


async def _signed_owner(request: Request, attachment_id: str, path: str) -> str:
    store = request.app.state.attachments.store
    owner = None if "\0" in attachment_id else await store.owner_of_attachment(attachment_id)
    if owner is None:
        raise ApiError(404, "not_found", _NOT_FOUND)
    params = {k: v for k, v in request.query_params.items() if k not in {"exp", "sig"}}
    exp, sig = request.query_params.get("exp"), request.query_params.get("sig")
    match request.app.state.signer.check(path, owner, exp, sig, params):
        case SignatureStatus.INVALID:
            raise ApiError(403, "invalid_signature", "This link is not valid; ask for a new one.")
        case SignatureStatus.EXPIRED:
            expired = datetime.fromtimestamp(int(exp or 0), UTC).isoformat(timespec="seconds")
            raise ApiError(
                403, "link_expired", f"This link expired at {expired}; ask for a new one."
            )
    return str(owner)


def _attachment_json(attachment: Attachment) -> Response:
    body = attachment.model_dump_json(exclude_none=True, context={"exclude_metadata": True})
    return Response(body, media_type="application/json")


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


async def multipart_file(request: Request) -> tuple[str, str, AsyncIterator[bytes]]:
    """The name, type and bytes of the multipart field ``file``, parsed as the body arrives.

    Returns once that part's headers are in; its bytes then stream through the iterator.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise ApiError(
            415, "unsupported_media_type",
            "Send the file as multipart/form-data with a field named 'file'.",
        )  # fmt: skip
    reader = _FilePartReader(boundary, request.stream())
    await reader.read_headers()
    return reader.filename, reader.content_type, reader.chunks()


class _FilePartReader:
    def __init__(self, boundary: bytes, body: AsyncIterator[bytes]) -> None:
        self._body = body
        self._pending: list[bytes] = []
        self._header_field = b""
        self._headers: dict[bytes, bytes] = {}
        self._in_file = False
        self._file_done = False
        self._file_started = False
        self.filename = "upload"
        self.content_type = "application/octet-stream"
        callbacks: Any = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }
        self._parser = MultipartParser(boundary, callbacks)

    def _part_begin(self) -> None:
        self._headers = {}
        self._header_field = b""

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field = data[start:end].lower()

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._headers[self._header_field] = (
            self._headers.get(self._header_field, b"") + data[start:end]
        )

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if options.get(b"name") == b"file" and not self._file_started:
            self._in_file = self._file_started = True
            self.filename = (options.get(b"filename") or b"upload").decode("utf-8", "replace")
            self.content_type = self._headers.get(b"content-type", b"").decode("latin-1").strip()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(data[start:end])

    def _part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self._file_done = True

    def _feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except MultipartParseError as error:  # malformed, or a part's headers too long
            raise ApiError(
                400, "invalid_request", f"file: not a valid multipart/form-data body ({error})."
            ) from None

    async def read_headers(self) -> None:
        async for chunk in self._body:
            self._feed(chunk)
            if self._file_started:
                return
        raise ApiError(400, "invalid_request", "file: the multipart body has no field 'file'.")

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            while self._pending:
                yield self._pending.pop(0)
            if self._file_done:
                return
            chunk = await anext(self._body, None)
            if chunk is None:
                if not self._file_done:
                    raise ApiError(400, "invalid_request", "file: the upload ended early.")
                return
            self._feed(chunk)
