"""``GET /files/workspaces/{thread_id}/{path}``: a workspace file, through a signed URL.

The URL is all the authority there is (an ``<img src>`` or a click on a link sends no
``Authorization`` header), so it is checked strictly, in this order:

1. ``exp`` and ``sig`` present, each once, else 403;
2. the thread exists, else 404, and its owner, from the database, is who the MAC must name;
3. the MAC covers this thread, path, owner, expiry and ``inline``, else 403; expired, 403;
4. the path names a regular file in that owner's workspace for the thread, reached without
   following a link, else 404.

Workspaces are written by sandboxed code, which may plant symlinks or swap a directory for
one at any moment. So the file is opened like every host access to a workspace
(``sandbox.workspace_fs``: one component at a time, never through a link, only a regular
file), and the response streams that open descriptor, never the path again.
"""

from __future__ import annotations

import mimetypes
import os
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import anyio.to_thread
from fastapi import APIRouter, Request
from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send

from workbench.context import RequestContext
from workbench.errors import ApiError
from workbench.files.attachments import ATTACHMENTS_PREFIX
from workbench.files.signing import RESERVED_PARAMS, SignatureStatus, UrlSigner
from workbench.sandbox.workspace_fs import file_parts, open_file
from workbench.sandbox.workspaces import PathOutsideWorkspaceError, Workspaces
from workbench.store import PostgresStore

WORKSPACE_FILES_PREFIX = "/files/workspaces"

router = APIRouter()

# Served to a top-level navigation (someone opens the link), this keeps an HTML or SVG file
# written in the workspace from running script with this origin's cookies and storage.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
    "sandbox",
    "Cache-Control": "private, no-store",
    "Referrer-Policy": "no-referrer",
}
_NOT_FOUND = "No such file: it may have been deleted, or its thread removed."


def workspace_file_path(thread_id: str, relative: str) -> str:
    """The URL path (unencoded) of a file in a thread's workspace."""
    return f"{WORKSPACE_FILES_PREFIX}/{thread_id}/{relative}"


def workspace_file_url(
    signer: UrlSigner,
    base_url: str,
    owner: str,
    thread_id: str,
    relative: str,
    *,
    inline: bool = False,
) -> str:
    """An absolute signed URL downloading ``relative`` from the thread's workspace.

    ``inline`` asks for ``Content-Disposition: inline`` (honoured for images only): for image
    previews opened directly rather than embedded.
    """
    params = {"inline": "1"} if inline else None
    return signer.sign(base_url, workspace_file_path(thread_id, relative), owner, params=params)


def refresh_download_links(signer: UrlSigner, json_text: str, context: RequestContext) -> str:
    """``json_text`` with the download links signed for the context's user renewed as needed.

    Saved items (figures, file lists, image previews) and the model's transcript keep links
    that would otherwise expire: each read hands out fresh ones, while what is stored stays.
    """
    prefixes = (f"{ATTACHMENTS_PREFIX}/", f"{WORKSPACE_FILES_PREFIX}/")
    return signer.refresh_links(json_text, context.user_id, context.base_url, prefixes)


@router.api_route(WORKSPACE_FILES_PREFIX + "/{thread_id}/{path:path}", methods=["GET", "HEAD"])
async def download_workspace_file(request: Request, thread_id: str, path: str) -> FileResponse:
    state = request.app.state
    signer: UrlSigner = state.signer
    store: PostgresStore = state.server.store
    workspaces: Workspaces = state.workspaces

    exp, sig, params = _signature_params(request)
    # Postgres text cannot hold NUL: such an id is no thread, not a database error.
    owner = None if "\0" in thread_id else await store.owner_of_thread(thread_id)
    if owner is None:
        raise ApiError(404, "not_found", _NOT_FOUND)
    match signer.check(workspace_file_path(thread_id, path), owner, exp, sig, params):
        case SignatureStatus.INVALID:
            raise _forbidden(
                "invalid_signature",
                "This download link is not valid for this file (it was changed or signed for "
                "another file); ask for a new link.",
            )
        case SignatureStatus.EXPIRED:
            expired_at = datetime.fromtimestamp(int(exp), UTC).isoformat(timespec="seconds")
            raise _forbidden(
                "link_expired", f"This download link expired at {expired_at}; ask for a new one."
            )

    try:
        workspace = workspaces.path(owner, thread_id)
        fd = await anyio.to_thread.run_sync(open_file, workspace, file_parts(path))
    except (PathOutsideWorkspaceError, OSError):  # WorkspaceError included: refused as absent
        raise ApiError(404, "not_found", _NOT_FOUND) from None
    name = _file_name(path)
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    inline = params.get("inline") == "1" and media_type.startswith("image/")
    headers = {
        **SECURITY_HEADERS,
        "Content-Disposition": content_disposition(name, inline=inline),
    }
    return _OpenFileResponse(fd, media_type=media_type, headers=headers)


def content_disposition(filename: str, *, inline: bool = False) -> str:
    """RFC 6266 with an ASCII fallback for old clients and the exact UTF-8 name for the rest."""
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\%' else "_" for c in filename)
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _file_name(path: str) -> str:
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or "download"


def _signature_params(request: Request) -> tuple[str, str, dict[str, str]]:
    items = request.query_params.multi_items()
    keys = [key for key, _ in items]
    if len(set(keys)) != len(keys):
        # Which of two values a parser picks is not something a signature should hinge on.
        raise _forbidden("invalid_signature", "A query parameter appears twice in this link.")
    query = dict(items)
    exp, sig = query.get("exp"), query.get("sig")
    if not exp or not sig:
        raise _forbidden(
            "invalid_signature",
            "This download link is not signed (it needs exp and sig); ask for a new link.",
        )
    return exp, sig, {k: v for k, v in query.items() if k not in RESERVED_PARAMS}


def _forbidden(code: str, message: str) -> ApiError:
    return ApiError(403, code, message)


class _OpenFileResponse(FileResponse):
    """``FileResponse`` (ranges, HEAD, ETag) over a descriptor we already opened safely.

    ``/proc/self/fd/N`` reopens the very inode behind the descriptor, whatever happens to
    its path in the workspace afterwards.
    """

    def __init__(self, fd: int, *, media_type: str, headers: dict[str, str]) -> None:
        self._fd = fd
        super().__init__(
            Path(f"/proc/self/fd/{fd}"),
            media_type=media_type,
            headers=headers,
            stat_result=os.fstat(fd),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            os.close(self._fd)
