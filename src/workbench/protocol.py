"""What a ``/chatkit`` request must satisfy before the SDK sees it.

The SDK validates late: a bad body is a pydantic error (a 500 if left alone), and an unknown
thread on a streaming op is only noticed after the 200 headers went out. Everything that can
be decided up front is decided here, so the client gets a 4xx JSON error naming the problem.
"""

from __future__ import annotations

import base64
import binascii
import json
import typing
from typing import Any

from chatkit.store import NotFoundError
from chatkit.types import (
    AttachmentsCreateReq,
    AttachmentsDeleteReq,
    ChatKitReq,
    ClientToolCallItem,
    InputTranscribeReq,
    ItemsFeedbackReq,
    ItemsListReq,
    StreamingReq,
    StructuredInputItem,
    ThreadsAddClientToolOutputReq,
    ThreadsAddStructuredInputReq,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsCustomActionReq,
    ThreadsListReq,
    ThreadsRetryAfterItemReq,
    ThreadsSyncCustomActionReq,
    UserMessageInput,
    UserMessageItem,
    WidgetItem,
)
from pydantic import TypeAdapter, ValidationError

from workbench.context import RequestContext
from workbench.errors import ApiError, describe_validation_error
from workbench.server import WorkbenchServer

_REQUEST = TypeAdapter[ChatKitReq](ChatKitReq)
# Far beyond any real request, and well within what pydantic serializes: deeper values (a
# client tool result, an action payload) would otherwise fail only after streaming began.
MAX_NESTING = 100
KNOWN_OPS: tuple[str, ...] = tuple(
    member.model_fields["type"].default
    for member in typing.get_args(typing.get_args(ChatKitReq)[0])
)


def parse_request(body: bytes) -> ChatKitReq:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        detail = "the body is empty" if not body.strip() else str(error)
        raise ApiError(
            400, "invalid_json", f"The request body is not valid JSON: {detail}."
        ) from None
    except RecursionError:
        # The decoder recurses once per level: a body of brackets would otherwise be a 500.
        raise _too_deep() from None
    _check_values(data)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object.")
    op = data.get("type")
    if op is None:
        raise ApiError(400, "invalid_request", f"type: missing; one of {', '.join(KNOWN_OPS)}.")
    if op not in KNOWN_OPS:
        raise ApiError(
            400, "unknown_op", f"type: unknown op {str(op)[:100]!r}; one of {', '.join(KNOWN_OPS)}."
        )
    _default_tag_data(data)
    try:
        return _REQUEST.validate_python(data)
    except ValidationError as error:
        raise ApiError(400, "invalid_request", describe_validation_error(error)) from None


def _check_values(data: object) -> None:
    """One walk over the decoded body, level by level (no recursion to exhaust).

    Nothing deeper than ``MAX_NESTING``, and no lone surrogate (what a JSON ``\\ud800``
    escape decodes to): no database column nor the SSE stream can hold one, so the turn
    would fail half-way.
    """
    level: list[Any] = [data]
    depth = 0
    while level:
        children: list[Any] = []
        for node in level:
            if isinstance(node, str):
                _check_text(node)
            elif isinstance(node, dict):
                for key in node:
                    _check_text(key)
                children.extend(node.values())
            elif isinstance(node, list):
                children.extend(node)
        depth += 1
        if depth >= MAX_NESTING and any(isinstance(child, dict | list) for child in children):
            raise _too_deep()
        level = children


def _check_text(text: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ApiError(
            400, "invalid_request",
            "The request contains invalid Unicode (an unpaired surrogate escape such as "
            "\\ud800); send UTF-8 text.",
        ) from None  # fmt: skip


def _too_deep() -> ApiError:
    return ApiError(
        400, "invalid_request", f"The request body is nested more than {MAX_NESTING} levels deep."
    )


def _default_tag_data(data: dict[str, Any]) -> None:
    """Tags sent without ``data`` (some ChatKit UI builds do) are accepted with ``{}``."""
    params = data.get("params")
    message = params.get("input") if isinstance(params, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict) and part.get("type") == "input_tag" and "data" not in part:
            part["data"] = {}


async def check_request(
    request: ChatKitReq, server: WorkbenchServer, context: RequestContext
) -> None:
    """Raise ApiError for anything the SDK would only discover after streaming began."""
    store = server.store
    thread_id = getattr(request.params, "thread_id", None)
    try:
        if thread_id is not None:
            await store.load_thread(thread_id, context)
        match request:
            case ThreadsCreateReq() | ThreadsAddUserMessageReq():
                await _check_user_input(request.params.input, server, context)
            case ThreadsRetryAfterItemReq():
                item = await store.load_item(
                    request.params.thread_id, request.params.item_id, context
                )
                if not isinstance(item, UserMessageItem):
                    raise ApiError(400, "invalid_request", "params.item_id: not a user message.")
            case ThreadsAddStructuredInputReq():
                item = await store.load_item(
                    request.params.thread_id, request.params.item_id, context
                )
                if not isinstance(item, StructuredInputItem) or item.status != "pending":
                    raise ApiError(
                        400, "invalid_request",
                        "params.item_id: not a structured input waiting for an answer.",
                    )  # fmt: skip
            case ThreadsAddClientToolOutputReq():
                page = await store.load_thread_items(
                    request.params.thread_id, None, 1, "desc", context
                )
                last = page.data[0] if page.data else None
                if not (isinstance(last, ClientToolCallItem) and last.status == "pending"):
                    raise ApiError(
                        400, "invalid_request",
                        "The thread is not waiting for a client tool output.",
                    )  # fmt: skip
            case ThreadsCustomActionReq() | ThreadsSyncCustomActionReq():
                if request.params.item_id is not None:
                    item = await store.load_item(
                        request.params.thread_id, request.params.item_id, context
                    )
                    if not isinstance(item, WidgetItem):
                        raise ApiError(400, "invalid_request", "params.item_id: not a widget.")
                raise ApiError(
                    400, "unknown_action",
                    f"params.action.type: this server defines no action "
                    f"{request.params.action.type!r}.",
                )  # fmt: skip
            case ItemsFeedbackReq():
                for item_id in request.params.item_ids:
                    await store.load_item(request.params.thread_id, item_id, context)
            case AttachmentsDeleteReq():
                await store.load_attachment(request.params.attachment_id, context)
            case AttachmentsCreateReq():
                server.attachments.checked_type(request.params.mime_type, request.params.name)
                server.attachments.check_size(request.params.size)
            case ThreadsListReq() | ItemsListReq():
                # The SDK reads a limit of 0 as "the default page size".
                if request.params.limit is not None and request.params.limit < 1:
                    raise ApiError(400, "invalid_request", "params.limit: must be at least 1.")
            case InputTranscribeReq():
                _check_audio(request)
                if server.catalog.provider != "openai":
                    raise ApiError(
                        400, "transcription_unavailable",
                        "Dictation needs the OpenAI audio API: set OPENAI_API_KEY on the server.",
                    )  # fmt: skip
    except NotFoundError as error:
        raise ApiError(404, "not_found", f"{error}.") from None


async def _check_user_input(
    message: UserMessageInput, server: WorkbenchServer, context: RequestContext
) -> None:
    for attachment_id in message.attachments:
        try:
            attachment = await server.store.load_attachment(attachment_id, context)
        except NotFoundError:
            raise ApiError(
                404, "not_found", f"params.input.attachments: attachment {attachment_id} not found."
            ) from None
        await server.attachments.confirm_uploaded(attachment, context)
    try:
        server.check_inference_options(message.inference_options)
    except ValueError as error:
        raise ApiError(400, "invalid_request", f"params.input.inference_options: {error}") from None


def _check_audio(request: InputTranscribeReq) -> None:
    try:
        base64.b64decode(request.params.audio_base64, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_request", "params.audio_base64: not valid base64.") from None


def busy_key(request: StreamingReq) -> str | None:
    """The thread a streaming request runs a response in (None: a thread not yet created)."""
    return getattr(request.params, "thread_id", None)
