"""OpenAI's Files and Vector Stores endpoints, in memory, for ``ScriptedOpenAI(routes=...)``.

Only what Workbench's hosted file search calls: upload and delete a file; create, retrieve and
delete a vector store; attach a file to a store and look at its indexing. Bodies have the
shapes the real ``openai`` client parses (``FileObject``, ``VectorStore``,
``VectorStoreFile``, the ``*.deleted`` answers, ``{"error": {...}}``), and the documented
rules hold: deleting a file removes it from every store, a store's files go with it.

Switches: ``failing`` makes every one of these endpoints fail (``"unreachable"``: the
connection drops mid-answer, as a network failure looks to the client; ``"error"``: a 500);
``expire(store)`` expires a store; ``refused`` names files whose indexing fails;
``rejected`` names files that attaching to a store refuses with a 400 (their format);
``polls_to_index`` is how many looks at a file its indexing takes.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

Handler = Callable[[Request], Awaitable[Response]]


class _Dropped(Response):
    """Headers promising a body that never comes: the client sees the connection drop."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"1000")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"id": ', "more_body": True})


def _not_found(what: str, openai_id: str) -> JSONResponse:
    error = {"message": f"No {what} found with id '{openai_id}'.",
             "type": "invalid_request_error", "param": None, "code": None}  # fmt: skip
    return JSONResponse({"error": error}, status_code=404)


class OpenAIFiles:
    def __init__(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}  # FileObject by id
        self.contents: dict[str, bytes] = {}
        self.stores: dict[str, dict[str, Any]] = {}  # VectorStore by id
        self.attached: dict[str, dict[str, dict[str, Any]]] = {}  # store -> VectorStoreFile
        self.created_stores: list[dict[str, Any]] = []  # the bodies stores were created with
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.failing: Literal["unreachable", "error"] | None = None
        self.refused: dict[str, str] = {}  # file name -> why its indexing fails
        self.rejected: dict[str, str] = {}  # file name -> why attaching it is a 400
        self.attach_requests = 0
        self.polls_to_index = 1
        self._looks: dict[tuple[str, str], int] = {}
        self._ids = itertools.count(1)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/files", self._guarded(self._upload), methods=["POST"]),
            Route("/v1/files/{file_id}", self._guarded(self._delete_file), methods=["DELETE"]),
            Route("/v1/vector_stores", self._guarded(self._create_store), methods=["POST"]),
            Route("/v1/vector_stores/{store_id}", self._guarded(self._store),
                  methods=["GET", "DELETE"]),
            Route("/v1/vector_stores/{store_id}/files", self._guarded(self._attach),
                  methods=["POST"]),
            Route("/v1/vector_stores/{store_id}/files/{file_id}",
                  self._guarded(self._attached_file), methods=["GET"]),
        ]  # fmt: skip

    def expire(self, store_id: str) -> None:
        self.stores[store_id]["status"] = "expired"

    def files_in(self, store_id: str) -> list[str]:
        return list(self.attached.get(store_id, {}))

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            self.requests.append((request.method, request.url.path))
            if self.failing == "unreachable":
                return _Dropped()
            if self.failing == "error":
                error = {"message": "The server had an error.", "type": "server_error"}
                return JSONResponse({"error": error}, status_code=500)
            return await handler(request)

        return guarded

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}{time.time_ns() % 10**6:06d}"

    # -- files -------------------------------------------------------------------------------

    async def _upload(self, request: Request) -> Response:
        form = await request.form()
        upload = form["file"]
        assert not isinstance(upload, str)
        data = await upload.read()
        file_id = self._new_id("file-")
        self.files[file_id] = {
            "id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
            "filename": upload.filename, "purpose": str(form["purpose"]), "status": "processed",
            "expires_at": None, "status_details": None,
        }  # fmt: skip
        self.contents[file_id] = data
        return JSONResponse(self.files[file_id])

    async def _delete_file(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        if self.files.pop(file_id, None) is None:
            return _not_found("file", file_id)
        self.contents.pop(file_id, None)
        for files in self.attached.values():  # "Delete a file and remove it from all stores"
            files.pop(file_id, None)
        return JSONResponse({"id": file_id, "object": "file", "deleted": True})

    # -- vector stores -------------------------------------------------------------------------

    async def _create_store(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.created_stores.append(body)
        store_id = self._new_id("vs_")
        now = int(time.time())
        expires = body.get("expires_after")
        self.stores[store_id] = {
            "id": store_id, "object": "vector_store", "created_at": now,
            "name": body.get("name", ""), "usage_bytes": 0, "status": "completed",
            "file_counts": {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0,
                            "total": 0},
            "expires_after": expires, "last_active_at": now,
            "expires_at": now + expires["days"] * 86400 if expires else None,
            "metadata": body.get("metadata") or {},
        }  # fmt: skip
        self.attached[store_id] = {}
        return JSONResponse(self.stores[store_id])

    async def _store(self, request: Request) -> Response:
        store_id = request.path_params["store_id"]
        store = self.stores.get(store_id)
        if store is None:
            return _not_found("vector store", store_id)
        if request.method == "GET":
            return JSONResponse(store)
        del self.stores[store_id]
        self.attached.pop(store_id, None)
        return JSONResponse({"id": store_id, "object": "vector_store.deleted", "deleted": True})

    async def _attach(self, request: Request) -> Response:
        store_id = request.path_params["store_id"]
        file_id = json.loads(await request.body())["file_id"]
        if store_id not in self.stores:
            return _not_found("vector store", store_id)
        if file_id not in self.files:
            return _not_found("file", file_id)
        self.attach_requests += 1
        why = self.rejected.get(self.files[file_id]["filename"])
        if why is not None:
            error = {"message": why, "type": "invalid_request_error", "param": "file_id",
                     "code": "unsupported_file"}  # fmt: skip
            return JSONResponse({"error": error}, status_code=400)
        self.attached[store_id][file_id] = {
            "id": file_id, "object": "vector_store.file", "created_at": int(time.time()),
            "usage_bytes": 0, "vector_store_id": store_id, "status": "in_progress",
            "last_error": None, "attributes": {},
            "chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 800,
                                                               "chunk_overlap_tokens": 400}},
        }  # fmt: skip
        return JSONResponse(self.attached[store_id][file_id])

    async def _attached_file(self, request: Request) -> Response:
        store_id, file_id = request.path_params["store_id"], request.path_params["file_id"]
        attached = self.attached.get(store_id, {}).get(file_id)
        if attached is None:
            return _not_found("vector store file", file_id)
        looks = self._looks[store_id, file_id] = self._looks.get((store_id, file_id), 0) + 1
        if attached["status"] == "in_progress" and looks >= self.polls_to_index:
            reason = self.refused.get(self.files[file_id]["filename"])
            attached["status"] = "failed" if reason else "completed"
            if reason:
                attached["last_error"] = {"code": "unsupported_file", "message": reason}
            else:
                attached["usage_bytes"] = len(self.contents[file_id])
        return JSONResponse(attached)
