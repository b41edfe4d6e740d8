"""The offline demo model: deterministic, labeled, and streaming like a real one.

Used when no model provider is configured, so the server runs (and the whole pipeline can be
tried) with no key and no network. It echoes what it was asked and says clearly that it is a
demo. Each tool plug-in supplies a trigger (a fenced ```python block for the Python tool, a
``calc:`` line for the calculator); when the user's message sets one off and the agent offers
that tool, the model calls it, streaming the arguments in chunks, then reports the result.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from agents import Model, ModelResponse, ModelSettings, ModelTracing, Tool, Usage
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import TResponseInputItem, TResponseStreamEvent
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.responses.response_prompt_param import ResponsePromptParam
from pydantic import TypeAdapter

from workbench.agent.response_events import FunctionCall, OutputPart, Text, response_events
from workbench.plugins import DemoAnswer, DemoTrigger

DEMO_MODEL_NAME = "workbench-demo"
DEMO_LABEL = "[Demo model — no model provider is configured]"

_EVENT = TypeAdapter[ResponseStreamEvent](ResponseStreamEvent)


class ScriptedReplyModel(Model):
    """A model whose reply is computed in-process and streamed like a real one.

    Subclasses say what to answer (``reply``); this turns it into Responses stream events,
    text and arguments in several deltas, for both the streamed and the plain call.
    """

    name = "scripted"
    chunk_size = 12

    def reply(
        self, input: str | list[TResponseInputItem], tool_names: set[str]
    ) -> list[OutputPart]:
        raise NotImplementedError

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        completed: Response | None = None
        for event in self._events(input, tools):
            if event.type == "response.completed":
                completed = event.response
        assert completed is not None
        return ModelResponse(output=completed.output, usage=Usage(), response_id=completed.id)

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        for event in self._events(input, tools):
            yield event

    def _events(
        self, input: str | list[TResponseInputItem], tools: list[Tool]
    ) -> Iterator[ResponseStreamEvent]:
        parts = self.reply(input, {tool.name for tool in tools})
        # A fresh response id each time: output item ids become ChatKit message ids.
        response_id = f"resp_{self.name}_{secrets.token_hex(6)}"
        for event in response_events(
            parts, model=self.name, response_id=response_id, chunk_size=self.chunk_size
        ):
            yield _EVENT.validate_python(event)


class DemoModel(ScriptedReplyModel):
    name = DEMO_MODEL_NAME

    def __init__(
        self,
        triggers: Mapping[str, DemoTrigger] | None = None,
        answers: Mapping[str, DemoAnswer] | None = None,
    ) -> None:
        self._triggers = dict(triggers or {})
        self._answers = dict(answers or {})

    def reply(
        self, input: str | list[TResponseInputItem], tool_names: set[str]
    ) -> list[OutputPart]:
        offered = {name: self._triggers[name] for name in tool_names if name in self._triggers}
        return demo_reply(input, offered, self._answers)


def demo_reply(
    input: str | list[TResponseInputItem],
    triggers: Mapping[str, DemoTrigger],
    answers: Mapping[str, DemoAnswer] | None = None,
) -> list[OutputPart]:
    """What the demo model says to this input: deterministic, no randomness in the text."""
    items: list[Any] = [{"role": "user", "content": input}] if isinstance(input, str) else input
    last = items[-1] if items else {}
    if last.get("type") == "function_call_output":
        output = _text_of(last.get("output"))
        name = _called(items, last.get("call_id"))
        answer = (answers or {}).get(name)
        answered = answer(output) if answer is not None else None
        if answered is not None:
            return [Text(f"{DEMO_LABEL} {answered}")]
        return [Text(f"{DEMO_LABEL} `{name}` returned:\n\n{output}")]

    text = _last_user_text(items)
    for name, trigger in triggers.items():
        arguments = trigger(text)
        if arguments is not None:
            return [FunctionCall(name, arguments, call_id=f"call_demo_{len(items)}")]

    echo = text.strip() or "(an empty message)"
    return [
        Text(
            f"{DEMO_LABEL} You said: {echo}\n\nThis reply comes from Workbench's offline demo "
            "model. Set OPENAI_API_KEY (or WORKBENCH_CHAT_COMPLETIONS_BASE_URL) to talk to a "
            "real model."
        )
    ]


def _called(items: list[Any], call_id: Any) -> str:
    for item in reversed(items):
        is_call = isinstance(item, dict) and item.get("type") == "function_call"
        if is_call and item.get("call_id") == call_id:
            return str(item.get("name"))
    return "the tool"


def _last_user_text(items: list[Any]) -> str:
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            return _text_of(item.get("content"))
    return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # One part a line: an attachment's note (a part of its own) must not run on into the
        # words the user typed.
        return "\n".join(
            part.get("text", "") for part in content
            if isinstance(part, dict) and part.get("type") in {"input_text", "output_text", "text"}
        )  # fmt: skip
    return "" if content is None else str(content)
