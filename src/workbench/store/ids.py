"""Identifiers that sort by creation time.

The SDK's default ids are 8 random hex characters: easy to collide in a large deployment and
useless for eyeballing order. Ours keep the SDK's prefixes (``thr_``, ``msg_``, ...) and add
48 bits of milliseconds since the epoch plus 64 random bits, all lowercase hex.
"""

from __future__ import annotations

import secrets
import time


def time_ordered_id(prefix: str) -> str:
    millis = time.time_ns() // 1_000_000
    return f"{prefix}_{millis:012x}{secrets.token_hex(8)}"
