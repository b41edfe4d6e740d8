"""``workbench serve | migrate``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from workbench.config import Settings, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="bind address (default: WORKBENCH_HOST)")
    serve.add_argument("--port", type=int, help="port (default: WORKBENCH_PORT)")

    commands.add_parser("migrate", help="apply pending database migrations and exit")

    args = parser.parse_args(argv)
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "serve":
        return _serve(settings, args.host, args.port)
    return asyncio.run(_migrate(settings))


def _serve(settings: Settings, host: str | None, port: int | None) -> int:
    import uvicorn

    from workbench.app import create_app

    settings = settings.model_copy(
        update={"host": host or settings.host, "port": settings.port if port is None else port}
    )
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level
    )
    return 0


async def _migrate(settings: Settings) -> int:
    from workbench.store import open_database
    from workbench.store.migrations import apply_migrations

    async with open_database(settings, migrate=False) as database:
        applied = await apply_migrations(database.url)
    logging.getLogger("workbench").info(
        "migrations applied: %s", ", ".join(applied) if applied else "none pending"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
