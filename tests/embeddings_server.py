"""A scripted ``POST /v1/embeddings`` (served by ``tests.live.ScriptedOpenAI``).

Deterministic embeddings, bags of concepts: each word of ``SYNONYMS`` counts in its group's
dimension, every other word in one of ``_OTHER_WORDS`` dimensions by its hash; so texts with
words or synonyms in common are near, and a paraphrase sharing no word with a passage can
still be nearest to it. Shortened to the ``dimensions`` asked for and normalised, as OpenAI's
text-embedding-3 models do. ``failures`` are HTTP statuses answered, one per request, before
any success; a request with a text containing one of ``refused`` gets a 400; ``delay`` holds
every answer back; every request body is kept in ``calls``.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

SYNONYMS = [
    {"car", "cars", "automobile", "automobiles", "vehicle"},
    {"repair", "repairs", "maintenance", "servicing"},
    {"duration", "hours", "minutes", "takes"},
    {"bread", "baked", "bakery", "loaf"},
    {"invoices", "payable", "payment", "bill"},
]
_CONCEPTS = {word: index for index, words in enumerate(SYNONYMS) for word in words}
_OTHER_WORDS = 48
DIMENSIONS = 16 + _OTHER_WORDS
_WORD = re.compile(r"\w+")


def concepts(text: str) -> list[float]:
    vector = [0.0] * DIMENSIONS
    for word in _WORD.findall(text.lower()):
        index = _CONCEPTS.get(word)
        vector[index if index is not None else 16 + zlib.crc32(word.encode()) % _OTHER_WORDS] += 1
    return vector


def normalised(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else [0.0] * (len(vector) - 1) + [1.0]


@dataclass
class EmbeddingsEndpoint:
    failures: list[int] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)
    delay: float = 0.0
    calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        """Every text asked for (embedded or not), in order."""
        return [text for call in self.calls for text in call["input"]]

    async def serve(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.calls.append(body)
        await asyncio.sleep(self.delay)
        if self.failures:
            status = self.failures.pop(0)
            error = {"message": f"scripted failure {status}", "type": "server_error"}
            # The openai client honours retry-after-ms: its retries come at once.
            return JSONResponse({"error": error}, status, headers={"retry-after-ms": "5"})
        if any(word in text for text in body["input"] for word in self.refused):
            error = {"message": "this input is refused", "type": "invalid_request_error"}
            return JSONResponse({"error": error}, 400)
        assert body.get("encoding_format") == "float", body  # what Workbench asks for
        data = [
            {"object": "embedding", "index": index,
             "embedding": normalised(concepts(text)[: body.get("dimensions") or DIMENSIONS])}
            for index, text in enumerate(body["input"])
        ]  # fmt: skip
        usage = {"prompt_tokens": 0, "total_tokens": 0}
        return JSONResponse({"object": "list", "data": data, "model": body["model"],
                             "usage": usage})  # fmt: skip
