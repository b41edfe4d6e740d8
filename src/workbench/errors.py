"""Errors the HTTP layer answers with ``{"error": {"code", "message"}}``."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import ValidationError


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        return error_response(self.status, self.code, self.message, headers)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, each naming the field by its path in the request body."""
    lines = []
    for problem in error.errors(include_url=False)[:5]:
        path = _field_path(problem)
        message = problem["msg"]
        lines.append(f"{path}: {message}" if path else message)
    more = error.error_count() - len(lines)
    if more > 0:
        lines.append(f"... and {more} more")
    return "; ".join(lines)


def _field_path(problem: Any) -> str:
    parts: list[str] = []
    location = list(problem.get("loc", ()))
    # The first element of a tagged-union location is the tag (the op or content type)
    # rather than a field: `threads.create.params.input` reads as `params.input`.
    if location and isinstance(location[0], str) and "." in location[0]:
        location = location[1:]
    for part in location:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif part in {"input_text", "input_tag", "file", "image"} and parts:
            continue  # union tag inside a list: the index already names the element
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts)
