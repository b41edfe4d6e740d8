"""A scripted stand-in for SearXNG on a real loopback socket.

``GET /search?q=…&format=…`` answers like SearXNG does: 403 for a format not in its
``search.formats``, else the next scripted ``Answer`` (JSON results by default; or a status,
a raw body, a delay). Every request's query parameters are recorded.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.live import _ThreadedUvicorn


def result(n: int, topic: str = "python") -> dict[str, Any]:
    """A SearXNG result with the fields SearXNG gives (and some we ignore)."""
    return {
        "url": f"https://example.org/{topic}/{n}", "title": f"{topic.title()} page {n}",
        "content": f"Snippet {n} about {topic}.", "engine": "duckduckgo",
        "engines": ["duckduckgo"], "score": 1.0 / n, "category": "general",
    }  # fmt: skip


def results_body(results: list[dict[str, Any]], query: str = "") -> bytes:
    return json.dumps({
        "query": query, "number_of_results": len(results), "results": results, "answers": [],
        "corrections": [], "infoboxes": [], "suggestions": [], "unresponsive_engines": [],
    }).encode()  # fmt: skip


@dataclass
class Answer:
    status: int = 200
    body: bytes | None = None  # None: results_body(results)
    results: list[dict[str, Any]] = field(default_factory=lambda: [result(1), result(2)])
    delay: float = 0.0
    content_type: str = "application/json"


class ScriptedSearxng(_ThreadedUvicorn):
    def __init__(self, formats: tuple[str, ...] = ("html", "json")) -> None:
        self.formats = formats
        self.answers: list[Answer] = []
        self.requests: list[dict[str, str]] = []
        super().__init__(Starlette(routes=[Route("/search", self._search, methods=["GET"])]))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def queries(self) -> list[str]:
        return [params.get("q", "") for params in self.requests]

    def script(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    async def _search(self, request: Request) -> Response:
        params = dict(request.query_params)
        self.requests.append(params)
        if params.get("format", "html") not in self.formats:
            return Response("<h1>403 Forbidden</h1>", 403, media_type="text/html")
        answer = self.answers.pop(0) if self.answers else Answer()
        if answer.delay:
            await asyncio.sleep(answer.delay)
        body = answer.body if answer.body is not None else results_body(answer.results)
        return Response(body, answer.status, media_type=answer.content_type)
