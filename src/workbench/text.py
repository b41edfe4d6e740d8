"""Text as Postgres stores it: no U+0000 and no lone surrogates, which text and JSONB refuse.

Client input carrying either is refused at the edge (``protocol.py``); everything produced
on the server side — model output, tool output, file names, provider strings — is cleaned
here, the one place that knows the rule, on its way into the database.
"""

from __future__ import annotations

import re
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", text)


def is_storable(text: str) -> bool:
    return _UNSTORABLE.search(text) is None


def storable_json(value: Any) -> Any:
    """``value`` (JSON-ready: dicts, lists, strings, numbers) with every string storable."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(key)): storable_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(item) for item in value]
    return value
