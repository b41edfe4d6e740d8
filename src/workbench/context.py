"""Who is asking: the request context every store call is scoped by."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestContext:
    user_id: str

    def __post_init__(self) -> None:
        if not self.user_id:
            raise ValueError("RequestContext needs a non-empty user_id")
