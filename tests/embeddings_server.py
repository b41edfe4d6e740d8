"""A scripted ``POST /v1/embeddings`` (served by ``tests.live.ScriptedOpenAI``).

Deterministic embeddings from ``embed`` (by default a hashed bag of words: texts sharing
words are near, others far), optionally shortened to the ``dimensions`` asked for and
normalised again, as OpenAI's text-embedding-3 models do. ``failures`` are HTTP statuses
answered, one per request, before any success; a request with a text containing one of
``refused`` gets a 400; every request body is kept in ``calls``.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

DIMENSIONS = 64
WORD = re.compile(r"\w+")


def hashed_words(text: str) -> list[float]:
    vector = [0.0] * DIMENSIONS
    for word in WORD.findall(text.lower()):
        vector[zlib.crc32(word.encode()) % DIMENSIONS] += 1.0
    return vector


def normalised(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else [0.0] * (len(vector) - 1) + [1.0]


@dataclass
class EmbeddingsEndpoint:
    embed: Callable[[str], list[float]] = hashed_words
    failures: list[int] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)
    calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        """Every text embedded successfully or not, in the order asked."""
        return [text for call in self.calls for text in _inputs(call)]

    async def serve(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.calls.append(body)
        if self.failures:
            status = self.failures.pop(0)
            error = {"message": f"scripted failure {status}", "type": "server_error"}
            # The openai client honours retry-after-ms: its retries come at once.
            return JSONResponse({"error": error}, status, headers={"retry-after-ms": "5"})
        if any(word in text for text in _inputs(body) for word in self.refused):
            error = {"message": "this input is refused", "type": "invalid_request_error"}
            return JSONResponse({"error": error}, 400)
        data = []
        for index, text in enumerate(_inputs(body)):
            vector = self.embed(text)
            if body.get("dimensions"):
                vector = vector[: body["dimensions"]]
            vector = normalised(vector)
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        usage = {"prompt_tokens": 0, "total_tokens": 0}
        return JSONResponse({"object": "list", "data": data, "model": body["model"],
                             "usage": usage})  # fmt: skip


def _inputs(body: dict[str, Any]) -> list[str]:
    inputs = body["input"]
    return [inputs] if isinstance(inputs, str) else list(inputs)
