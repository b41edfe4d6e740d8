"""The citation mapper: ``[n]`` that name a source of the turn become annotations, the rest is
left as the model wrote it."""

from __future__ import annotations

import pytest
from chatkit.types import (
    Annotation,
    AssistantMessageContent,
    AssistantMessageItem,
    FileSource,
    URLSource,
)

from workbench.citations import annotate_content, annotate_message

SOURCES = {n: URLSource(url=f"https://example.org/{n}", title=f"Page {n}") for n in (1, 2, 3)}


def mapped(text: str) -> tuple[str, list[tuple[int, int | None]]]:
    """The new text, and (source number, index) of each annotation."""
    content = annotate_content(AssistantMessageContent(text=text), SOURCES)
    numbers = {source.url: n for n, source in SOURCES.items()}
    return content.text, [
        (numbers[a.source.url], a.index)
        for a in content.annotations
        if isinstance(a.source, URLSource)
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Paris is big [1].", ("Paris is big.", [(1, 12)])),
        ("Paris[2] is big.", ("Paris is big.", [(2, 5)])),
        ("A [1][2] b", ("A b", [(1, 1), (2, 1)])),
        ("A [1] [3] b", ("A b", [(1, 1), (3, 1)])),
        ("A [1, 2] b", ("A b", [(1, 1), (2, 1)])),
        ("A [1,3]. B [2].", ("A. B.", [(1, 1), (3, 1), (2, 4)])),
        ("[1] First\n[2] Second", ("First\nSecond", [(1, 0), (2, 6)])),
        ("- item [3]\n- other", ("- item\n- other", [(3, 6)])),
        ("# Heading [1]", ("# Heading", [(1, 9)])),
        ("> quoted [2]", ("> quoted", [(2, 8)])),
        ("Same twice [1][1].", ("Same twice.", [(1, 10)])),
    ],
)
def test_markers_that_name_sources_become_annotations(
    text: str, expected: tuple[str, list[tuple[int, int]]]
) -> None:
    assert mapped(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "No source [7] here.",
        "Zero [0] is none.",
        "Inline `x[1]` code.",
        "Double ``a [1] ` b`` ticks.",
        "```python\nvalues[1]\n```",
        "~~~\n[2]\n~~~",
        "    indented code [1]",
        "A [reference][1] link.",
        "A [1](https://example.org) link.",
        "[1]: https://example.org",
        "An ![image][2].",
        "Escaped \\[1] bracket.",
        "Nested [[1]] brackets.",
        "A range [1-3] is not a list.",
        "",
    ],
)
def test_everything_else_stays_as_written(text: str) -> None:
    assert mapped(text) == (text, [])


def test_unknown_numbers_in_a_group_stay_text() -> None:
    assert mapped("A [1, 9] b [8][2].") == ("A [9] b [8].", [(1, 2), (2, 8)])


def test_code_is_skipped_but_the_prose_around_it_is_not() -> None:
    text = "Before [1].\n\n```\ncode [2]\n```\n\nAfter `[3]` and [3]."
    new, found = mapped(text)
    assert new == "Before.\n\n```\ncode [2]\n```\n\nAfter `[3]` and."
    assert found == [(1, 6), (3, len(new) - 1)]


def test_annotations_already_there_follow_their_text() -> None:
    text = "Cited by the provider. And by us [2]. The end."
    provider = Annotation(source=FileSource(filename="a.pdf", title="A"), index=len(text))
    early = Annotation(source=FileSource(filename="b.pdf", title="B"), index=5)
    content = annotate_content(
        AssistantMessageContent(text=text, annotations=[early, provider]), SOURCES
    )
    assert content.text == "Cited by the provider. And by us. The end."
    assert [a.index for a in content.annotations] == [
        5,
        len(content.text),
        len("Cited by the provider. And by us"),
    ]


def test_a_message_without_citable_sources_is_left_alone() -> None:
    item = AssistantMessageItem(
        id="msg_1", thread_id="thr_1", created_at="2025-01-01T00:00:00Z",
        content=[AssistantMessageContent(text="See [1].")],
    )  # fmt: skip
    assert annotate_message(item, {}) is item
    assert annotate_message(item, {5: SOURCES[1]}) is item
    annotated = annotate_message(item, SOURCES)
    assert annotated.content[0].text == "See."
    assert item.content[0].text == "See [1]."  # the original is not changed
