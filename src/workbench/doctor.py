"""``workbench doctor``: check what the server depends on, and say what to fix."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TextIO

from psycopg_pool import AsyncConnectionPool

from workbench.agent.models import ModelCatalog
from workbench.config import Settings
from workbench.documents.embeddings import (
    FULL_TEXT_ALONE,
    EmbeddingsClient,
    EmbeddingsError,
    backlog,
    vector_support,
)
from workbench.sandbox.bubblewrap import sandbox_problem
from workbench.sandbox.cgroups import CgroupFactory
from workbench.store import open_database
from workbench.store.migrations import pending_migrations
from workbench.tools import search_web
from workbench.tools.searxng import SearxngClient, SearxngError


async def _check_sandbox(
    settings: Settings, report: Callable[[bool, str, str], None], out: TextIO
) -> None:
    if settings.sandbox == "none":
        out.write(
            "[WARNING] sandbox: WORKBENCH_SANDBOX=none — model-written code runs UNSANDBOXED "
            "with the server's rights\n          fix: install bubblewrap and unset "
            "WORKBENCH_SANDBOX\n"
        )
        return
    problem = await asyncio.to_thread(sandbox_problem)
    report(problem is None, f"sandbox: {problem}" if problem else "sandbox: bubblewrap works",
           "install bubblewrap (apt-get install bubblewrap) and allow user namespaces; or set "
           "WORKBENCH_SANDBOX=none on a trusted single-user machine")  # fmt: skip
    cgroups = CgroupFactory()
    if cgroups.available:
        report(True, "sandbox: per-kernel pids cgroups available", "")
    else:
        out.write(
            "[WARNING] sandbox: no writable cgroup hierarchy — the per-kernel process limit is "
            "an rlimit, which does not hold when the server runs as root\n"
        )
    cgroups.close()


async def _check_searxng(settings: Settings, report: Callable[[bool, str, str], None]) -> None:
    if settings.searxng_url is None:
        return
    if not search_web.offered(settings, settings.resolved_provider):
        report(True, "search_web: not offered (the OpenAI provider searches the web itself; "
               "WORKBENCH_OPENAI_WEB_SEARCH=false to use SearXNG)", "")  # fmt: skip
        return
    client = SearxngClient.for_settings(settings)
    try:
        await client.search("workbench", 1)
        report(True, f"search_web: SearXNG at {settings.searxng_url} answers JSON", "")
    except SearxngError as error:
        report(False, f"search_web: {error.args[0]}",
               error.fix or "check WORKBENCH_SEARXNG_URL and SearXNG's log")  # fmt: skip
    finally:
        await client.aclose()


async def _check_document_search(
    settings: Settings, pool: AsyncConnectionPool, report: Callable[[bool, str, str], None],
    out: TextIO,
) -> None:  # fmt: skip
    if settings.file_search != "postgres":
        return
    client = EmbeddingsClient.configured(settings)
    if client is None:
        report(True, "document search: full-text (set WORKBENCH_EMBEDDINGS_MODEL to rank by "
               "meaning too)", "")  # fmt: skip
        return
    try:
        [vector] = await client.embed(["workbench"], within=10)
        report(True, f"embeddings: {client.where} answers ({len(vector)} dimensions)", "")
    except EmbeddingsError as error:
        report(False, f"embeddings: {error}",
               "check WORKBENCH_EMBEDDINGS_MODEL and WORKBENCH_EMBEDDINGS_BASE_URL / "
               "WORKBENCH_EMBEDDINGS_API_KEY (or the provider's)")  # fmt: skip
    async with pool.connection() as conn:
        support = await vector_support(conn)
        waiting, passages = await backlog(conn, client) if support == "ready" else (0, 0)
    await client.aclose()
    if support == "missing":
        out.write(
            f"[WARNING] {FULL_TEXT_ALONE}\n          fix: install pgvector on the Postgres "
            "server (Debian: postgresql-NN-pgvector), or unset DATABASE_URL to use the "
            "embedded Postgres, which has it\n"
        )
        return
    note = (f"; {waiting} of {passages} passages still to embed" if support == "ready"
            else " (the server creates its table as it starts)")  # fmt: skip
    report(True, f"document search: full-text and semantic ranking (pgvector){note}", "")


async def doctor(settings: Settings, out: TextIO = sys.stdout) -> int:
    problems = 0

    def report(ok: bool, what: str, fix: str = "") -> None:
        nonlocal problems
        problems += 0 if ok else 1
        out.write(f"[{'ok' if ok else 'PROBLEM'}] {what}\n")
        if not ok and fix:
            out.write(f"          fix: {fix}\n")

    where = "DATABASE_URL" if settings.database_url else f"embedded in {settings.data_dir}"
    try:
        async with open_database(settings, migrate=False) as database:
            async with database.pool.connection() as conn:
                await conn.execute("SELECT 1")
            pending = await pending_migrations(database.url)
            report(True, f"database reachable ({where})")
            migrations = f"migrations pending: {pending}" if pending else "migrations applied"
            fix = "run `workbench migrate` (the server also applies them at start-up)"
            report(not pending, migrations, fix)
            await _check_document_search(settings, database.pool, report, out)
    except Exception as error:
        report(False, f"database ({where}): {error}",
               "check DATABASE_URL, or unset it to use the embedded Postgres")  # fmt: skip

    catalog = ModelCatalog(settings)
    if catalog.provider == "demo":
        report(True, "model provider: " + catalog.describe())
    else:
        assert catalog.client is not None
        try:
            await catalog.client.with_options(timeout=10, max_retries=0).models.list()
            report(True, f"model provider reachable: {catalog.describe()}")
        except Exception as error:
            where = f"{catalog.provider} at {catalog.client.base_url}"
            fix = "check OPENAI_API_KEY / OPENAI_BASE_URL or WORKBENCH_CHAT_COMPLETIONS_*"
            report(False, f"model provider ({where}): {type(error).__name__}: {error}", fix)

    await _check_sandbox(settings, report, out)
    await _check_searxng(settings, report)

    if settings.auth == "none":
        report(True, "auth: none (one local user; loopback only unless forced)")
    else:
        report(True, f"auth: {settings.auth}")
    out.write("all good\n" if problems == 0 else f"{problems} problem(s)\n")
    return 0 if problems == 0 else 1
