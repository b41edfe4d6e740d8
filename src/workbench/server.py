"""The ``ChatKitServer`` subclass: runs the agent for a thread and streams it as ChatKit events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime

from agents import (
    Agent,
    ModelRefusalError,
    ModelSettings,
    RunConfig,
    RunErrorHandlerInput,
    RunErrorHandlerResult,
    Runner,
)
from agents.items import TResponseInputItem
from chatkit.agents import stream_agent_response
from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.types import (
    AssistantMessageItem,
    AudioInput,
    ChatKitReq,
    FeedbackKind,
    HiddenContextItem,
    InferenceOptions,
    ProgressUpdateEvent,
    SDKHiddenContextItem,
    StreamingReq,
    ThreadItem,
    ThreadItemDoneEvent,
    ThreadItemRemovedEvent,
    ThreadMetadata,
    ThreadsRetryAfterItemReq,
    ThreadStreamEvent,
    TranscriptionResult,
    UserMessageItem,
    UserMessageTextContent,
    WidgetItem,
    WorkflowItem,
    is_streaming_req,
)
from openai.types.shared import Reasoning

from workbench.agent.activity import ToolActivity
from workbench.agent.converter import WorkbenchConverter
from workbench.agent.errors import stream_error
from workbench.agent.models import ModelCatalog
from workbench.agent.session import TranscriptSession
from workbench.agent.stream import AdaptedRun
from workbench.agent.titles import make_title
from workbench.citations import annotate_message
from workbench.config import Settings
from workbench.context import RequestContext
from workbench.files.attachments import WorkbenchAttachmentStore
from workbench.files.downloads import refresh_download_links
from workbench.plugins import Toolset, TurnContext
from workbench.sandbox.workspaces import Workspaces
from workbench.store import PostgresStore

logger = logging.getLogger(__name__)

INSTRUCTIONS = """You are Workbench, a helpful assistant in a chat app.
Answer clearly and concisely. Use Markdown when it helps."""

CANCELLED_NOTE = "The user stopped the previous response before it finished."


class TranscriptionUnavailableError(ValueError):
    pass


class UnknownToolError(ValueError):
    pass


@dataclass
class _ActiveRun:
    session: TranscriptSession
    input: list[TResponseInputItem]
    context: TurnContext
    toolset: Toolset


class WorkbenchServer(ChatKitServer[RequestContext]):
    store: PostgresStore

    def __init__(
        self,
        store: PostgresStore,
        settings: Settings,
        catalog: ModelCatalog,
        attachments: WorkbenchAttachmentStore,
        workspaces: Workspaces,
        toolset: Toolset | None = None,
    ) -> None:
        super().__init__(store, attachments)
        self.attachments = attachments
        self.settings = settings
        self.catalog = catalog
        self.workspaces = workspaces
        self.toolset = toolset or Toolset([])
        # One response runs per thread at a time (the HTTP layer enforces it), so the thread
        # id identifies the run that a cancellation belongs to.
        self._active: dict[str, _ActiveRun] = {}

    async def process_request(
        self, request: ChatKitReq, context: RequestContext
    ) -> StreamingResult | NonStreamingResult:
        """``process()`` for a request the HTTP layer has already parsed and checked."""
        if is_streaming_req(request):
            return StreamingResult(self._process_streaming(request, context))
        return NonStreamingResult(await self._process_non_streaming(request, context))

    def _process_streaming_impl(
        self, request: StreamingReq, context: RequestContext
    ) -> AsyncGenerator[ThreadStreamEvent, None]:
        if isinstance(request, ThreadsRetryAfterItemReq):
            return self._retry_after_item(request, context)
        # Every other op streams straight from the SDK, without another generator in between.
        return super()._process_streaming_impl(request, context)

    async def _retry_after_item(
        self, request: ThreadsRetryAfterItemReq, context: RequestContext
    ) -> AsyncGenerator[ThreadStreamEvent, None]:
        # The SDK deletes everything after the retried message but never tells the client,
        # which would keep showing the old answer above the new one.
        params = request.params
        for item_id in await self._visible_items_after(params.thread_id, params.item_id, context):
            yield ThreadItemRemovedEvent(item_id=item_id)
        events = super()._process_streaming_impl(request, context)
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()

    async def _visible_items_after(
        self, thread_id: str, item_id: str, context: RequestContext
    ) -> list[str]:
        """Ids of the items after ``item_id`` that the client shows (not hidden context)."""
        ids: list[str] = []
        after: str | None = item_id
        while after is not None:
            page = await self.store.load_thread_items(thread_id, after, 100, "asc", context)
            ids += [
                item.id
                for item in page.data
                if not isinstance(item, HiddenContextItem | SDKHiddenContextItem)
            ]
            after = page.after if page.has_more else None
        return ids

    # -- checks the HTTP layer makes before any byte is streamed ----------------------------

    def check_inference_options(self, options: InferenceOptions) -> None:
        """Raise ValueError for a model or tool this server does not offer."""
        self.catalog.resolve(options.model)
        if options.tool_choice is not None:
            names = self.toolset.ids
            if options.tool_choice.id not in names:
                available = ", ".join(names) or "none"
                raise UnknownToolError(
                    f"inference_options.tool_choice.id: unknown tool "
                    f"{options.tool_choice.id!r} (available: {available})"
                )

    # -- the agent run ----------------------------------------------------------------------

    async def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: RequestContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        message = input_user_message or await self._latest_item(thread, context)
        options = input_user_message.inference_options if input_user_message else None
        model_name = self.catalog.resolve(options.model if options else None)
        agent_context = TurnContext(thread=thread, store=self.store, request_context=context)
        toolset = self.toolset  # this turn's, whatever the server is given meanwhile
        session = TranscriptSession(
            self.store.pool, thread.id, context.user_id, turn=message.id if message else thread.id,
            max_items=self.settings.history_max_items,
            refresh_links=lambda text: refresh_download_links(
                self.attachments.signer, text, context
            ),
            saving=lambda item: toolset.transcript_saving(agent_context, item),
            replaying=lambda item: toolset.transcript_replaying(agent_context, item),
        )  # fmt: skip
        if input_user_message and await session.has_turn():
            await session.rewind()  # threads.retry_after_item: answer this message afresh
        converter = WorkbenchConverter(self.attachments, self.workspaces, context, thread.id)
        agent_input = await converter.to_agent_input(message) if message else []
        # Active from here: a Stop while the tools take in the message (documents being
        # indexed) is handled like one mid-answer.
        self._active[thread.id] = _ActiveRun(session, agent_input, agent_context, toolset)
        try:
            async with aclosing(
                agent_context.relaying(toolset.turn_started(agent_context, message))
            ) as shown:
                async for event in shown:
                    yield event
        except Exception:
            self._active.pop(thread.id, None)
            raise
        result = Runner.run_streamed(
            self._agent(
                toolset,
                agent_context,
                model_name,
                options.tool_choice.id if options and options.tool_choice else None,
            ),
            agent_input,
            context=agent_context,
            max_turns=self.settings.max_turns,
            session=session,
            run_config=RunConfig(workflow_name="Workbench chat", group_id=thread.id),
            error_handlers={"model_refusal": _keep_refusal},
        )
        adapted = AdaptedRun(
            result,
            lambda: self.store.generate_item_id("message", thread, context),
            ToolActivity(agent_context, toolset),
        )
        try:
            async for event in stream_agent_response(
                agent_context,
                adapted,  # type: ignore[arg-type]
                converter=toolset.stream_converter(agent_context),
            ):
                yield _with_citations(event, agent_context)
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away or pressed stop: stop the model and any tool at once.
            adapted.cancel()
            # stream_agent_response, cancelled mid-read, abandons its read of the context's
            # event queue; one more event lets that read finish rather than be destroyed
            # pending (an asyncio error in the log on every Stop).
            await agent_context.stream(ProgressUpdateEvent(text="Stopped"))
            raise
        except Exception as error:
            self._active.pop(thread.id, None)
            toolset.stopped(agent_context, [])  # what the tools still run for this turn stops
            logger.exception("agent run failed in thread %s", thread.id)
            raise stream_error(
                error, provider=self.catalog.provider, max_turns=self.settings.max_turns
            ) from error
        for event in await toolset.turn_finished(agent_context):
            yield event
        # (On cancellation the entry stays for handle_stream_cancelled, which the SDK calls.)
        self._active.pop(thread.id, None)
        if thread.title is None and input_user_message is not None:
            thread.title = await make_title(
                self.catalog, _plain_text(input_user_message), self.settings.title_model
            )

    def _agent(
        self, toolset: Toolset, turn: TurnContext, model_name: str, tool_choice: str | None
    ) -> Agent[TurnContext]:
        reasoning = None
        if self.catalog.provider == "openai" and (
            self.settings.reasoning_effort or self.settings.reasoning_summary
        ):
            reasoning = Reasoning(
                effort=self.settings.reasoning_effort, summary=self.settings.reasoning_summary
            )
        instructions = "\n\n".join(
            filter(None, [INSTRUCTIONS, toolset.instructions(turn), *turn.notes])
        )
        if self.settings.instructions:
            instructions += "\n\n" + self.settings.instructions
        return Agent[TurnContext](
            name="Workbench",
            instructions=instructions,
            model=self.catalog.model(model_name, toolset.demo_triggers(), toolset.demo_answers()),
            model_settings=ModelSettings(
                tool_choice=tool_choice,
                reasoning=reasoning,
                response_include=toolset.response_include() or None,
            ),
            tools=toolset.tools(turn),
        )

    async def _latest_item(
        self, thread: ThreadMetadata, context: RequestContext
    ) -> ThreadItem | None:
        """What a response without a new user message answers (a tool output, a form)."""
        page = await self.store.load_thread_items(thread.id, None, 1, "desc", context)
        return page.data[0] if page.data else None

    # -- cancellation -----------------------------------------------------------------------

    async def handle_stream_cancelled(
        self, thread: ThreadMetadata, pending_items: list[ThreadItem], context: RequestContext
    ) -> None:
        # What the user saw stays: partial assistant text, and widgets and workflows in the
        # state they reached. An upsert, because a Stop can land just after an item's insert
        # committed but before the SDK took it off its pending list.
        run = self._active.pop(thread.id, None)
        # Each tool decides what its items keep (a code cell: the state it reached, stopped).
        kept = run.toolset.stopped(run.context, pending_items) if run else pending_items
        for item in kept:
            if _worth_keeping(item):
                await self.store.save_item(thread.id, item, context)
        await self.store.add_thread_item(
            thread.id,
            SDKHiddenContextItem(
                id=self.store.generate_item_id("sdk_hidden_context", thread, context),
                thread_id=thread.id,
                created_at=datetime.now(),
                content=CANCELLED_NOTE,
            ),
            context,
        )
        if run is not None:
            await self._remember_cancellation(run, pending_items)

    async def _remember_cancellation(self, run: _ActiveRun, pending: list[ThreadItem]) -> None:
        """Leave the transcript as the user saw it: question, partial answer, stop."""
        items: list[TResponseInputItem] = []
        if not await run.session.has_turn():
            items.extend(run.input)
        partial = "".join(
            part.text
            for item in pending
            if isinstance(item, AssistantMessageItem)
            for part in item.content
        )
        if partial.strip():
            items.append({"role": "assistant", "content": partial})
        items.append({"role": "user", "content": f"[{CANCELLED_NOTE}]"})
        await run.session.add_items(items)

    # -- other ops --------------------------------------------------------------------------

    async def add_feedback(
        self, thread_id: str, item_ids: list[str], feedback: FeedbackKind, context: RequestContext
    ) -> None:
        await self.store.save_feedback(thread_id, item_ids, feedback, context)

    async def transcribe(
        self, audio_input: AudioInput, context: RequestContext
    ) -> TranscriptionResult:
        client = self.catalog.client
        if self.catalog.provider != "openai" or client is None:
            raise TranscriptionUnavailableError(
                "Dictation needs the OpenAI audio API: set OPENAI_API_KEY on the server."
            )
        extension = audio_input.media_type.split("/")[-1]
        transcription = await client.audio.transcriptions.create(
            model=self.settings.transcription_model,
            file=(f"dictation.{extension}", audio_input.data, audio_input.mime_type),
        )
        return TranscriptionResult(text=transcription.text)


def _keep_refusal(
    data: RunErrorHandlerInput[TurnContext],
) -> RunErrorHandlerResult:
    # The refusal already reached the user as an assistant message; left alone, the Agents
    # SDK ends the run with ModelRefusalError and the user gets an error event on top of it.
    error = data.error
    refusal = error.refusal if isinstance(error, ModelRefusalError) else str(error)
    return RunErrorHandlerResult(final_output=refusal, include_in_history=False)


def _with_citations(event: ThreadStreamEvent, turn: TurnContext) -> ThreadStreamEvent:
    # The finished message is what the SDK saves and the client keeps: its [n] that name a
    # source a tool gave this turn become annotations there. The transcript keeps the text as
    # the model wrote it.
    if isinstance(event, ThreadItemDoneEvent) and isinstance(event.item, AssistantMessageItem):
        item = annotate_message(event.item, turn.citable)
        return event if item is event.item else ThreadItemDoneEvent(item=item)
    return event


def _worth_keeping(item: ThreadItem) -> bool:
    if isinstance(item, AssistantMessageItem):
        return any(part.text.strip() for part in item.content)
    return isinstance(item, WidgetItem | WorkflowItem)


def _plain_text(message: UserMessageItem) -> str:
    return " ".join(
        part.text if isinstance(part, UserMessageTextContent) else f"@{part.text}"
        for part in message.content
    )
