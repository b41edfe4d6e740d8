"""Failures during a run, turned into messages a person can act on."""

from __future__ import annotations

import openai
from agents import MaxTurnsExceeded, ModelBehaviorError
from chatkit.errors import CustomStreamError


def stream_error(error: BaseException, *, provider: str, max_turns: int) -> CustomStreamError:
    """The error event a user sees for ``error`` raised while the agent ran."""
    match error:
        case CustomStreamError():
            return error
        case openai.AuthenticationError() | openai.PermissionDeniedError():
            return CustomStreamError(
                f"The model provider ({provider}) rejected the API key. Check the key in the "
                "server's settings (OPENAI_API_KEY or WORKBENCH_CHAT_COMPLETIONS_API_KEY).",
            )
        case openai.RateLimitError():
            return CustomStreamError(
                f"The model provider ({provider}) is rate limiting requests or the account is "
                "out of quota (HTTP 429). Wait a moment, then retry.",
                allow_retry=True,
            )
        case openai.APITimeoutError():
            return CustomStreamError(
                f"The model provider ({provider}) did not answer in time. Retry, or raise "
                "WORKBENCH_MODEL_TIMEOUT.",
                allow_retry=True,
            )
        case openai.APIConnectionError():
            return CustomStreamError(
                f"Could not reach the model provider ({provider}). Check that it is running and "
                "that the server's base URL setting points at it.",
                allow_retry=True,
            )
        case openai.NotFoundError():
            return CustomStreamError(
                f"The model provider ({provider}) does not know the model that was asked for: "
                f"{_detail(error)}. Check WORKBENCH_MODEL / WORKBENCH_MODELS.",
            )
        case openai.BadRequestError():
            return CustomStreamError(
                f"The model provider ({provider}) refused the request: {_detail(error)}"
            )
        case openai.APIStatusError():
            return CustomStreamError(
                f"The model provider ({provider}) failed with HTTP {error.status_code}. "
                "This is usually temporary: retry in a moment.",
                allow_retry=True,
            )
        case MaxTurnsExceeded():
            return CustomStreamError(
                f"The agent stopped after {max_turns} steps without finishing. Ask again with a "
                "narrower request, or raise WORKBENCH_MAX_TURNS.",
                allow_retry=True,
            )
        case ModelBehaviorError():
            return CustomStreamError(
                f"The model produced output the agent could not use ({error}). Retry the message.",
                allow_retry=True,
            )
        case _:
            return CustomStreamError(
                f"The response failed unexpectedly ({type(error).__name__}). Retry the message; "
                "if it keeps failing, the server log has the details.",
                allow_retry=True,
            )


def _detail(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        message = body.get("message") or (body.get("error") or {}).get("message")
        if message:
            return str(message)
    return error.message
