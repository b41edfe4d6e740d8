"""``web_search``: OpenAI's hosted web search, offered on the OpenAI (Responses) provider only.

OpenAI runs the search; this plug-in configures it from the settings (on or off, how much
context it reads, the users' approximate location) and shows it. Each ``web_search_call``
output item is one ``SearchTask`` in the response's workflow, so several searches in one
answer are several tasks:

* ``output_item.added`` (no query yet): "Starting a web search", loading;
* ``response.web_search_call.searching``: "Searching the web", loading;
* ``response.web_search_call.completed``: "Reading the results", loading;
* ``output_item.done``: the finished item is the only event that carries the query, and the
  sources only because ``response_include`` asks for ``web_search_call.action.sources``:
  the task shows the query and its pages, complete (or that the search failed).

The answer cites pages as ``url_citation`` annotations, which the assistant message carries
itself (sources under the message); they are not numbered into ``TurnContext.citable``, as
the model never sees numbers for them.

A saved thread never holds a spinning search: ``TurnContext`` marks open tasks stopped on a
Stop. Provider strings are cleaned (``workbench.text``) before they are shown: a lone
surrogate cannot be streamed, let alone stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from agents import WebSearchTool
from chatkit.types import SearchTask, URLSource
from openai.types.responses.web_search_tool_param import UserLocation

from workbench.config import Settings
from workbench.plugins import ToolPlugin, TurnContext, field_of
from workbench.text import storable
from workbench.tools.services import ToolServices

TOOL_ID = "web_search"
SOURCES_INCLUDE = "web_search_call.action.sources"
_STARTING = "Starting a web search"
_PROGRESS = {
    "response.web_search_call.in_progress": _STARTING,
    "response.web_search_call.searching": "Searching the web",
    "response.web_search_call.completed": "Reading the results",
}
STOPPED = "Web search stopped"
_UNFINISHED = {"failed": "The web search failed", "incomplete": "The web search did not finish"}


@dataclass
class _Searches:
    open: dict[str, SearchTask] = field(default_factory=dict)  # by provider item id


def plugins(services: ToolServices) -> list[ToolPlugin]:
    if services.provider != "openai" or not services.settings.openai_web_search:
        return []
    return [WebSearchPlugin(services.settings)]


def user_location(settings: Settings) -> UserLocation | None:
    """The users' approximate location from the settings, or None when none is set."""
    location = UserLocation(type="approximate")
    if settings.web_search_country:
        location["country"] = settings.web_search_country
    if settings.web_search_city:
        location["city"] = settings.web_search_city
    if settings.web_search_region:
        location["region"] = settings.web_search_region
    if settings.web_search_timezone:
        location["timezone"] = settings.web_search_timezone
    return location if len(location) > 1 else None


class WebSearchPlugin(ToolPlugin):
    id = TOOL_ID
    item_type = "web_search_call"
    response_include = (SOURCES_INCLUDE,)

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def tool(self) -> WebSearchTool:
        return WebSearchTool(
            user_location=user_location(self._settings),
            search_context_size=self._settings.web_search_context_size,
        )

    async def call_started(self, turn: TurnContext, item: Any) -> None:
        task = SearchTask(title=_STARTING, status_indicator="loading")
        await turn.show_task(task, stopped_title=STOPPED)
        _searches(turn).open[str(item.id)] = task

    async def call_event(self, turn: TurnContext, event: Any) -> None:
        task = _searches(turn).open.get(str(event.item_id))
        title = _PROGRESS.get(str(event.type))
        if task is not None and title is not None:
            await turn.update_task(task, title=title)

    async def call_written(self, turn: TurnContext, item: Any) -> None:
        task = _searches(turn).open.pop(str(item.id), None)
        if task is None:
            return
        _finish(task, item)
        await turn.refresh_task(task)


def _searches(turn: TurnContext) -> _Searches:
    return turn.state(TOOL_ID, _Searches)


def _finish(task: SearchTask, item: Any) -> None:
    """Show the finished ``web_search_call`` item: its query and pages, or why it failed."""
    action = field_of(item, "action")
    kind = field_of(action, "type")
    query = _text(field_of(action, "query")) or _text(field_of(action, "pattern"))
    queries = [text for q in _list(field_of(action, "queries")) if (text := _text(q))]
    urls = [field_of(source, "url") for source in _list(field_of(action, "sources"))]
    if kind in {"open_page", "find_in_page"}:
        urls = [field_of(action, "url")]
    task.title = {"open_page": "Opened a page", "find_in_page": "Searched a page"}.get(
        str(kind), "Searched the web"
    )
    task.title_query = query or (queries[0] if queries else None)
    task.queries = queries or ([query] if query else [])
    task.sources = _sources(urls)
    status = str(field_of(item, "status") or "completed")
    task.status_indicator = "none" if status in _UNFINISHED else "complete"
    if status in _UNFINISHED:
        task.title = _UNFINISHED[status]


def _sources(urls: list[Any]) -> list[URLSource]:
    seen: dict[str, URLSource] = {}
    for url in urls:
        if (clean := _text(url)) and clean not in seen:
            seen[clean] = URLSource(url=clean, title=_site(clean))
    return list(seen.values())


def _site(url: str) -> str:
    """What a page without a title is called: its host, without ``www.``."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    return host.removeprefix("www.") or url


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    """A provider string as it can be streamed: a lone surrogate has no UTF-8 form, so the
    event carrying it could not even be sent (NUL goes too, as the store would clean it)."""
    return storable(value) if isinstance(value, str) else ""
