"""The FastAPI application: lifespan (database, store, agent server) and HTTP routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from chatkit.server import StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import is_streaming_req
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from workbench.agent.models import ModelCatalog
from workbench.config import Settings, load_settings
from workbench.context import Authenticator
from workbench.documents.hosted_deletions import OpenAIDeletions
from workbench.errors import ApiError, error_response
from workbench.files import downloads, uploads
from workbench.files.attachments import WorkbenchAttachmentStore
from workbench.files.blobs import open_blob_store
from workbench.files.downloads import refresh_download_links
from workbench.files.signing import UrlSigner, load_or_create_secret
from workbench.protocol import busy_key, check_request, parse_request
from workbench.sandbox.manager import KernelManager
from workbench.sandbox.workspaces import Workspaces
from workbench.server import WorkbenchServer
from workbench.sse import EventStreamResponse, error_event
from workbench.store import DeletedThread, PostgresStore, open_database
from workbench.store.migrations import pending_migrations
from workbench.tools.registry import build_toolset
from workbench.tools.services import ToolServices

logger = logging.getLogger(__name__)

_JSON_TYPES = {"application/json", ""}


def create_app(settings: Settings | None = None, catalog: ModelCatalog | None = None) -> FastAPI:
    settings = settings or load_settings()
    authenticate = Authenticator(settings)
    busy_threads: set[str] = set()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        models = catalog or ModelCatalog(settings)
        log = logger.warning if models.provider == "demo" else logger.info
        log("model provider: %s", models.describe())
        async with open_database(settings) as database:
            store = PostgresStore(database.pool)
            workspaces = Workspaces(settings.data_dir / "workspaces")
            signer = UrlSigner(load_or_create_secret(settings), settings.download_url_ttl)
            blobs = open_blob_store(settings)
            attachments = WorkbenchAttachmentStore(store, blobs, signer, settings)
            kernels = KernelManager(settings, workspaces)
            await kernels.start()

            async def forget_thread(deleted: DeletedThread) -> None:
                await kernels.forget_thread(deleted.user_id, deleted.thread_id)
                await attachments.forget_thread(deleted)

            store.on_thread_deleted(forget_thread)
            # Only the OpenAI provider's client can pay what hosted file search owes OpenAI.
            openai = models.client if models.provider == "openai" else None
            deletions = None
            if openai is not None:
                deletions = OpenAIDeletions(database.pool, openai, settings.openai_delete_retry)
                deletions.start()
                store.on_thread_deleted(deletions.owed)
                store.on_attachment_deleted(deletions.owed)
            collector = asyncio.create_task(attachments.collect_stale_uploads())
            app.state.database = database
            app.state.authenticate = authenticate
            app.state.signer = signer
            app.state.workspaces = workspaces
            app.state.kernels = kernels
            app.state.attachments = attachments
            services = ToolServices(
                settings, models.provider, kernels, workspaces, signer, blobs, database.pool,
                openai=openai,
            )  # fmt: skip
            toolset = build_toolset(services)
            app.state.server = WorkbenchServer(
                store, settings, models, attachments, workspaces, toolset
            )
            try:
                yield
            finally:
                collector.cancel()
                await toolset.aclose()
                if deletions is not None:
                    await deletions.close()
                await kernels.close()
                await blobs.close()
                if catalog is None:  # ours: its HTTP client closes on this loop, not in a GC
                    await models.aclose()

    app = FastAPI(title="Workbench", lifespan=lifespan)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "PUT", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Accept-Language"],
        max_age=600,
    )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error.response()

    app.include_router(downloads.router)
    app.include_router(uploads.router)

    @app.post("/chatkit")
    async def chatkit(request: Request) -> Response:
        server: WorkbenchServer = request.app.state.server
        context = await authenticate(request)
        _check_content_type(request)
        parsed = parse_request(await _read_body(request, settings.max_request_bytes))
        await check_request(parsed, server, context)

        thread_id = busy_key(parsed) if is_streaming_req(parsed) else None
        if thread_id is not None and thread_id in busy_threads:
            return EventStreamResponse(_single(_busy_message(thread_id)), on_close=lambda: None)
        try:
            result = await server.process_request(parsed, context)
        except NotFoundError as error:
            raise ApiError(404, "not_found", f"{error}.") from None
        except ValueError as error:
            raise ApiError(400, "invalid_request", str(error)) from None
        if not isinstance(result, StreamingResult):
            # Saved items carry signed links (figures, file lists, previews): fresh ones.
            body = refresh_download_links(request.app.state.signer, result.json.decode(), context)
            return Response(body, media_type="application/json")
        if thread_id is not None:
            busy_threads.add(thread_id)
        return EventStreamResponse(result, on_close=lambda: busy_threads.discard(thread_id or ""))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        database = request.app.state.database
        try:
            async with database.pool.connection(timeout=2.0) as conn:
                await conn.execute("SELECT 1")
            pending = await pending_migrations(database.url)
        except Exception as error:
            return error_response(503, "not_ready", f"database unreachable: {error}")
        if pending:
            return error_response(503, "not_ready", f"migrations pending: {pending}")
        return JSONResponse({"status": "ready"})

    return app


def _check_content_type(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in _JSON_TYPES:
        raise ApiError(
            415, "unsupported_media_type",
            f"Send the request as JSON (Content-Type: application/json), not {media_type!r}.",
        )  # fmt: skip


async def _read_body(request: Request, limit: int) -> bytes:
    body = bytearray()
    try:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise ApiError(
                    413, "request_too_large", f"The request body is larger than {limit} bytes."
                )
    except ClientDisconnect:  # gone, or cut off by the HTTP layer: nobody to answer at length
        raise ApiError(400, "invalid_request", "The request body did not arrive whole.") from None
    return bytes(body)


def _busy_message(thread_id: str) -> bytes:
    return error_event(
        f"Thread {thread_id} is already answering another request. Wait for it to finish "
        "(or stop it), then send again.",
        allow_retry=True,
    )


async def _single(event: bytes) -> AsyncIterator[bytes]:
    yield event
