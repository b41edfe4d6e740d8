"""One sample of every ``ThreadItem`` type the SDK defines, with the richest shape each allows."""

from __future__ import annotations

from datetime import datetime

from chatkit.types import (
    Annotation,
    AssistantMessageContent,
    AssistantMessageItem,
    ClientToolCallItem,
    CustomSummary,
    CustomTask,
    EndOfTurnItem,
    EntitySource,
    FileAttachment,
    FileSource,
    FileTask,
    GeneratedImage,
    GeneratedImageItem,
    HiddenContextItem,
    ImageAttachment,
    ImageTask,
    InferenceOptions,
    SDKHiddenContextItem,
    SearchTask,
    StructuredInputAnswer,
    StructuredInputFreeform,
    StructuredInputItem,
    StructuredInputMultipleChoice,
    StructuredInputMultipleChoiceOption,
    TaskItem,
    ThoughtTask,
    ThreadItem,
    ToolChoice,
    URLSource,
    UserMessageItem,
    UserMessageTagContent,
    UserMessageTextContent,
    Workflow,
    WorkflowItem,
)
from chatkit.widgets import DynamicWidgetRoot


def every_item_type(thread_id: str, created_at: datetime) -> list[ThreadItem]:
    base = {"thread_id": thread_id, "created_at": created_at}
    return [
        UserMessageItem(
            id="msg_user",
            content=[
                UserMessageTextContent(text="Plot the attached CSV, please"),
                UserMessageTagContent(
                    id="tag_1",
                    text="@sales",
                    data={"team": "emea"},
                    group="teams",
                    interactive=True,
                ),
            ],
            attachments=[
                FileAttachment(
                    id="atc_file", name="sales.csv", mime_type="text/csv", thread_id=thread_id
                ),
                ImageAttachment(
                    id="atc_image",
                    name="chart.png",
                    mime_type="image/png",
                    preview_url="https://files.example/chart.png",  # type: ignore[arg-type]
                    thread_id=thread_id,
                ),
            ],
            quoted_text="last quarter",
            inference_options=InferenceOptions(tool_choice=ToolChoice(id="python"), model="gpt-5"),
            **base,
        ),
        AssistantMessageItem(
            id="msg_assistant",
            content=[
                AssistantMessageContent(
                    text="Sales grew 12% [1][2][3]",
                    annotations=[
                        Annotation(
                            source=URLSource(
                                title="Report", url="https://example.com/r", attribution="Example"
                            ),
                            index=17,
                        ),
                        Annotation(
                            source=FileSource(title="sales.csv", filename="sales.csv"), index=20
                        ),
                        Annotation(
                            source=EntitySource(id="ent_1", title="EMEA", data={"k": [1, 2]}),
                            index=23,
                        ),
                    ],
                )
            ],
            **base,
        ),
        ClientToolCallItem(
            id="tc_client",
            status="completed",
            call_id="call_1",
            name="get_location",
            arguments={"precision": "city", "nested": {"a": [1, None, True]}},
            output={"city": "Lisbon"},
            **base,
        ),
        _widget_item(thread_id, created_at),
        GeneratedImageItem(
            id="img_1",
            image=GeneratedImage(id="ig_1", url="https://files.example/i.png"),
            **base,
        ),
        StructuredInputItem(
            id="si_1",
            status="answered",
            inputs=[
                StructuredInputMultipleChoice(
                    id="q1",
                    question="Which chart?",
                    options=[
                        StructuredInputMultipleChoiceOption(value="bar"),
                        StructuredInputMultipleChoiceOption(value="line"),
                    ],
                    multiple=True,
                    answer=StructuredInputAnswer(values=["bar", "line"]),
                ),
                StructuredInputFreeform(
                    id="q2",
                    question="Title?",
                    description="optional",
                    answer=StructuredInputAnswer(skipped=True),
                ),
            ],
            **base,
        ),
        WorkflowItem(
            id="wf_1",
            workflow=Workflow(
                type="custom",
                tasks=[
                    CustomTask(
                        title="Starting Python",
                        icon="bolt",
                        content="ok",
                        status_indicator="complete",
                    ),
                    SearchTask(
                        title="Searching",
                        title_query="sales 2026",
                        queries=["a", "b"],
                        sources=[URLSource(title="S", url="https://example.com/s")],
                    ),
                    ThoughtTask(title="Thinking", content="Let me check the totals"),
                    FileTask(title="Reading", sources=[FileSource(title="f", filename="f.csv")]),
                    ImageTask(title="Drawing", status_indicator="loading"),
                ],
                summary=CustomSummary(title="Ran code", icon="check"),
                expanded=True,
            ),
            **base,
        ),
        TaskItem(id="tsk_1", task=ThoughtTask(content="standalone thought"), **base),
        HiddenContextItem(id="hc_1", content={"note": "user prefers metric units"}, **base),
        SDKHiddenContextItem(id="shcx_1", content="The user cancelled the stream.", **base),
        EndOfTurnItem(id="eot_1", **base),
    ]


def _widget_item(thread_id: str, created_at: datetime) -> ThreadItem:
    from chatkit.types import WidgetItem

    widget = DynamicWidgetRoot.model_validate(
        {
            "type": "Card",
            "size": "lg",
            "children": [
                {"type": "Text", "id": "code", "value": "print(1)", "streaming": True},
                {"type": "Image", "src": "https://files.example/plot.png", "alt": "plot"},
            ],
        }
    )
    return WidgetItem(
        id="wdg_1", widget=widget, copy_text="print(1)", thread_id=thread_id, created_at=created_at
    )
