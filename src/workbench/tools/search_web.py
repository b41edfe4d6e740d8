"""``search_web(query)``: web search through a self-hosted SearXNG, shown as a search task.

Invariants:

* Offered iff ``WORKBENCH_SEARXNG_URL`` is set and the provider does not search the web
  itself (OpenAI with ``WORKBENCH_OPENAI_WEB_SEARCH`` on): the model never sees a search that
  cannot work, nor two of them. Not called ``web_search``: the Responses converter maps that
  name to the hosted tool.
* Results are numbered with ``TurnContext.cite``, so the numbers run on across every search
  of a turn and the answer's ``[n]`` become the message's sources (``workbench.citations``).
* Whatever SearXNG does — down, an error, garbage, too slow — the model gets a sentence it
  can explain and the turn goes on; each failure is logged once, as a warning.
* Each call is one ``SearchTask`` in the workflow: "Searching the web…" from the moment the
  model starts writing the call, with the query once it is written, then complete with the
  query and the sources; a Stop saves it as stopped, not as still searching.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from agents import FunctionTool, function_tool
from agents.tool_context import ToolContext
from chatkit.types import SearchTask, URLSource

from workbench.config import Settings
from workbench.plugins import ToolPlugin, TurnContext
from workbench.tools.searxng import SearchOutcome, SearxngClient, SearxngError, clean_text
from workbench.tools.services import ToolServices

logger = logging.getLogger(__name__)

TOOL_NAME = "search_web"
DEMO_PREFIX = "web: "
_DESCRIPTION = """Search the web and return the top results: numbered, each with its title,
URL and a snippet. Use it for anything recent or that you are unsure of; search again with
other words if the results miss."""
_INSTRUCTIONS = (
    "When your answer uses search_web results, cite each claim with its result's number in "
    "square brackets right after it, e.g. [1] or [2][5]; cite no number search_web did not give."
)


@dataclass
class _Search:
    """One ``search_web`` call of this turn: its task, and what it found."""

    task: SearchTask
    query: str = ""
    sources: list[URLSource] = field(default_factory=list)
    error: str | None = None


def offered(settings: Settings, provider: str) -> bool:
    """SearXNG is configured, and the provider does not search the web itself."""
    hosted = provider == "openai" and settings.openai_web_search
    return settings.searxng_url is not None and not hosted


def plugins(services: ToolServices) -> list[ToolPlugin]:
    if not offered(services.settings, services.provider):
        return []
    return [SearchWebTool(services.settings)]


class SearchWebTool(ToolPlugin):
    id = TOOL_NAME
    instructions = _INSTRUCTIONS

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._searxng = SearxngClient.for_settings(settings)

    def tool(self) -> FunctionTool:
        @function_tool(name_override=TOOL_NAME, description_override=_DESCRIPTION)
        async def search_web(context: ToolContext[TurnContext], query: str) -> str:
            """
            Args:
                query: What to search for, as you would type it into a search engine.
            """
            return await self.search(context.context, context.tool_call_id, query)

        return search_web

    def demo_trigger(self, text: str) -> str | None:
        query = text[len(DEMO_PREFIX) :].strip() if text.startswith(DEMO_PREFIX) else ""
        return json.dumps({"query": query}) if query else None

    async def aclose(self) -> None:
        await self._searxng.aclose()

    # -- the task ---------------------------------------------------------------------------

    async def call_started(self, turn: TurnContext, item: Any) -> None:
        await self._open(turn, str(item.call_id))

    async def call_written(self, turn: TurnContext, item: Any) -> None:
        search = _searches(turn).get(str(getattr(item, "call_id", "")))
        if search is not None:
            await self._searching(turn, search, _query_argument(getattr(item, "arguments", "")))

    async def call_output(self, turn: TurnContext, call_id: str, output: Any) -> None:
        search = _searches(turn).pop(call_id, None)
        if search is None:
            return
        task = search.task
        task.title = "Web search failed" if search.error else "Searched the web"
        task.title_query = search.query or None
        task.queries = [search.query] if search.query else []
        task.sources = search.sources
        task.status_indicator = "complete"
        await turn.refresh_task(task)

    async def _open(self, turn: TurnContext, call_id: str) -> _Search:
        search = _Search(SearchTask(title="Searching the web…", status_indicator="loading"))
        _searches(turn)[call_id] = search
        await turn.show_task(search.task, stopped_title="Web search stopped")
        return search

    async def _searching(self, turn: TurnContext, search: _Search, query: str) -> None:
        query = clean_text(query, self._settings.searxng_text_chars)
        if not query or query == search.query:
            return
        search.query = query
        search.task.title = f"Searching the web for “{query}”"
        await turn.refresh_task(search.task)

    # -- the search -------------------------------------------------------------------------

    async def search(self, turn: TurnContext, call_id: str, query: str) -> str:
        """What the model reads back for ``query``: numbered results, or why there are none."""
        search = _searches(turn).get(call_id) or await self._open(turn, call_id)
        await self._searching(turn, search, query)
        if not search.query:
            search.error = "empty query"
            return "The search query was empty: call search_web with the words to search for."
        try:
            outcome = await self._searxng.search(search.query, self._settings.searxng_results)
        except SearxngError as error:
            logger.warning("search_web: %s", error)
            search.error = str(error)
            return (
                f"The web search failed: {error}. Tell the user the search is unavailable and "
                "why; answer from what you know if you can, and say it is not from the web."
            )
        search.sources = [
            URLSource(url=result.url, title=result.title, description=result.snippet or None)
            for result in outcome.results
        ]
        numbers = turn.cite(search.sources)
        return _listing(search.query, outcome, numbers)


def _listing(query: str, outcome: SearchOutcome, numbers: list[int]) -> str:
    failed = ""
    if outcome.failed_engines:
        failed = " Search engines that failed: " + ", ".join(outcome.failed_engines) + "."
    if not outcome.results:
        return f"No web results for “{query}”.{failed} Try other words."
    entries = [
        "\n".join(filter(None, [f"[{number}] {result.title}", result.url, result.snippet]))
        for number, result in zip(numbers, outcome.results, strict=True)
    ]
    head = f"Web results for “{query}” (cite a result as [n] after the claim it supports):"
    return "\n\n".join([head + failed, *entries])


def _searches(turn: TurnContext) -> dict[str, _Search]:
    return turn.state(TOOL_NAME, dict)


def _query_argument(arguments: str) -> str:
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return ""
    query = parsed.get("query") if isinstance(parsed, dict) else None
    return query if isinstance(query, str) else ""
