"""The FastAPI application: lifespan (database, store) and HTTP routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from workbench.config import Settings, load_settings
from workbench.store import PostgresStore, open_database
from workbench.store.migrations import pending_migrations


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_database(settings) as database:
            app.state.database = database
            app.state.store = PostgresStore(database.pool)
            yield

    app = FastAPI(title="Workbench", lifespan=lifespan)

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
            return JSONResponse(
                {"status": "unavailable", "reason": f"database unreachable: {error}"}, 503
            )
        if pending:
            return JSONResponse(
                {"status": "unavailable", "reason": f"migrations pending: {pending}"}, 503
            )
        return JSONResponse({"status": "ready"})

    return app
