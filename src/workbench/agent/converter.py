"""ChatKit thread items -> model input: fills the hooks the SDK leaves unimplemented."""

from __future__ import annotations

import json

from agents.items import TResponseInputItem
from chatkit.agents import ThreadItemConverter
from chatkit.types import AssistantMessageItem, Attachment, UserMessageTagContent
from openai.types.responses import EasyInputMessageParam, ResponseInputTextParam
from openai.types.responses.response_input_content_param import ResponseInputContentParam


class WorkbenchConverter(ThreadItemConverter):
    async def attachment_to_message_content(
        self, attachment: Attachment
    ) -> ResponseInputContentParam:
        # Until the blob store hands the model the bytes, name the file so the model can
        # say what it cannot see instead of failing the whole turn.
        return ResponseInputTextParam(
            type="input_text",
            text=f"[The user attached {attachment.name!r} ({attachment.mime_type}).]",
        )

    async def tag_to_message_content(self, tag: UserMessageTagContent) -> ResponseInputContentParam:
        details = json.dumps(tag.data, ensure_ascii=False, default=str) if tag.data else "{}"
        return ResponseInputTextParam(type="input_text", text=f"@{tag.text} refers to: {details}")

    async def assistant_message_to_input(
        self, item: AssistantMessageItem
    ) -> TResponseInputItem | list[TResponseInputItem] | None:
        # Plain text works for every provider; `output_text` parts break Chat Completions.
        text = "".join(part.text for part in item.content)
        return EasyInputMessageParam(type="message", role="assistant", content=text)
