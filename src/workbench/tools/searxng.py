"""A client of SearXNG's JSON search API: ``GET {url}/search?q=…&format=json``.

SearXNG answers JSON only when ``json`` is in its ``search.formats`` (else 403), and its
limiter may refuse a client it takes for a bot (429); both come back as errors that say what
to change on the SearXNG side.

Invariants:

* ``search`` raises nothing but ``SearxngError`` (and cancellation) whatever SearXNG does:
  unreachable, an HTTP error, a body that is not JSON or not SearXNG's shape, an answer larger
  than ``max_bytes`` or slower than ``timeout`` — in all, not per read, so a server that
  trickles bytes is cut off too. The error's text is a sentence a model can pass on.
* Results are clean: titles and snippets hold no U+0000 nor lone surrogates, their whitespace
  is collapsed and they are at most ``text_chars`` long; URLs are absolute http(s), without
  blanks, and each appears once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from workbench.config import Settings
from workbench.text import is_storable, storable

_MAX_URL = 4096  # longer is no link anyone clicks: a result carrying one is dropped
_JSON_FIX = "add `json` to `search.formats` in SearXNG's settings.yml and restart it"


class SearxngError(Exception):
    """A search that failed; ``fix`` says what would make it work."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.fix = fix

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message} (to fix: {self.fix})" if self.fix else message


@dataclass(frozen=True)
class SearchResult:
    title: str
    url: str
    snippet: str


@dataclass(frozen=True)
class SearchOutcome:
    results: list[SearchResult]
    failed_engines: list[str] = field(default_factory=list)  # "name (reason)"


class _Result(BaseModel):
    url: str
    title: str = ""
    content: str = ""


class _Answer(BaseModel):
    results: list[Any]
    unresponsive_engines: list[Any] = []


def clean_text(text: str, limit: int) -> str:
    """``text`` on one line, safe for Postgres, at most ``limit`` characters."""
    text = " ".join(storable(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class SearxngClient:
    def __init__(self, base_url: str, *, timeout: float, max_bytes: int, text_chars: int) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._text_chars = text_chars
        self._http = httpx.AsyncClient(
            timeout=timeout, follow_redirects=True, headers={"Accept": "application/json"}
        )

    @classmethod
    def for_settings(cls, settings: Settings) -> SearxngClient:
        """The client ``WORKBENCH_SEARXNG_*`` describe (``searxng_url`` must be set)."""
        assert settings.searxng_url is not None
        return cls(
            settings.searxng_url, timeout=settings.searxng_timeout,
            max_bytes=settings.searxng_max_kb * 1024, text_chars=settings.searxng_text_chars,
        )  # fmt: skip

    async def search(self, query: str, limit: int) -> SearchOutcome:
        """At most ``limit`` results for ``query``, in SearXNG's order."""
        return self._parse(await self._fetch(query), limit)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _fetch(self, query: str) -> bytes:
        where = f"SearXNG at {self.base_url}"
        try:
            async with asyncio.timeout(self._timeout):
                return await self._get(query)
        except (TimeoutError, httpx.TimeoutException):
            raise SearxngError(f"{where} did not answer within {self._timeout:g} s") from None
        except httpx.ConnectError as error:
            raise SearxngError(
                f"{where} is unreachable ({error or 'connection refused'})",
                "start SearXNG, or point WORKBENCH_SEARXNG_URL at a running instance",
            ) from None
        except httpx.HTTPError as error:
            raise SearxngError(f"the request to {where} failed: {type(error).__name__}") from None

    async def _get(self, query: str) -> bytes:
        params = {"q": query, "format": "json"}
        async with self._http.stream("GET", f"{self.base_url}/search", params=params) as response:
            status = response.status_code
            if status == 403:
                raise SearxngError("SearXNG refused to answer in JSON (HTTP 403)", _JSON_FIX)
            if status == 429:
                raise SearxngError(
                    "SearXNG's limiter refused the request (HTTP 429)",
                    "set `server.limiter: false` in SearXNG's settings.yml, or let this "
                    "server's address through its bot detection (pass_ip)",
                )
            if status != 200:
                raise SearxngError(f"SearXNG answered HTTP {status} {response.reason_phrase}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self._max_bytes:
                    raise SearxngError(
                        f"SearXNG's answer is larger than {self._max_bytes // 1024} KiB",
                        "raise WORKBENCH_SEARXNG_MAX_KB",
                    )
            return bytes(body)

    def _parse(self, body: bytes, limit: int) -> SearchOutcome:
        try:
            answer = _Answer.model_validate_json(body)
        except ValidationError as error:
            if any(problem["type"] == "json_invalid" for problem in error.errors()):
                raise SearxngError("SearXNG answered something that is not JSON") from None
            raise SearxngError(
                "SearXNG's answer is not a list of search results (is the URL SearXNG's?)"
            ) from None
        results: dict[str, SearchResult] = {}
        for raw in answer.results:
            result = self._result(raw)
            if result is not None and result.url not in results:
                results[result.url] = result
            if len(results) == limit:
                break
        failed = [self._engine(raw) for raw in answer.unresponsive_engines]
        return SearchOutcome(list(results.values()), [name for name in failed if name])

    def _result(self, raw: Any) -> SearchResult | None:
        try:
            result = _Result.model_validate(raw)
        except ValidationError:
            return None
        url = result.url.strip()
        if not _is_web_url(url):
            return None
        title = clean_text(result.title, self._text_chars) or clean_text(url, self._text_chars)
        return SearchResult(title, url, clean_text(result.content, self._text_chars))

    def _engine(self, raw: Any) -> str:
        # SearXNG lists each engine that failed as [name, reason].
        if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
            return ""
        name = clean_text(raw[0], self._text_chars)
        return f"{name} ({clean_text(raw[1], self._text_chars)})" if len(raw) > 1 else name


def _is_web_url(url: str) -> bool:
    if len(url) > _MAX_URL or not is_storable(url) or any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in {"http", "https"} and bool(parts.netloc)
