"""Numbered citations in an answer (``[1]``, ``[1][2]``, ``[1, 2]``) as ChatKit annotations.

A tool that gives the model citable sources numbers them with ``TurnContext.cite``; when the
answer is complete, every marker that names a source of this turn becomes an ``Annotation``
on the message, which ChatKit shows as a footnote at ``index`` and lists under the message
as its sources. Neutral: it knows ChatKit's types and nothing of the tools that cite.

Invariants:

* A marker that resolves is taken out of the text (with the blank before it) and its
  annotations are placed where it stood: ChatKit draws its own footnote marker at ``index``
  and numbers it itself, so a kept ``[3]`` would show next to a footnote with another number.
* A number that names no source of this turn stays in the text as the model wrote it; in a
  group, only the numbers that resolve go (``[1, 9]`` with no 9 leaves ``[9]``).
* Code is never scanned: only the text of Markdown paragraphs, headings and list items (as
  markdown-it parses them), minus inline code spans. Link syntax is left alone
  (``[text][1]``, ``[1](url)``, ``[1]: url``).
* Annotations already on the content (a provider's own citations) keep pointing at the
  same text.
* The model's transcript is not touched: this rewrites only what ChatKit shows and saves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from chatkit.types import Annotation, AssistantMessageContent, AssistantMessageItem, Source
from markdown_it import MarkdownIt

_MARKER = r"\[[ \t]*\d{1,4}(?:[ \t]*,[ \t]*\d{1,4})*[ \t]*\]"
# A run of markers, not inside link syntax: nothing bracket-like or escaping just before,
# no link target or reference definition just after.
_GROUP = re.compile(rf"(?<![\\\]\[!])(?:{_MARKER})(?:[ \t]*{_MARKER})*(?![(:\[])")
_NUMBER = re.compile(r"\d+")
_CODE_SPAN = re.compile(r"(?<![`\\])(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)
_PARSER = MarkdownIt("commonmark")


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    replacement: str
    numbers: tuple[int, ...]  # the sources cited at this place, in the order written


def annotate_message(
    item: AssistantMessageItem, citable: Mapping[int, Source]
) -> AssistantMessageItem:
    """``item`` with its citations of ``citable`` as annotations (itself if there are none)."""
    if not citable:
        return item
    content = [annotate_content(part, citable) for part in item.content]
    if all(new is old for new, old in zip(content, item.content, strict=True)):
        return item
    return item.model_copy(update={"content": content})


def annotate_content(
    content: AssistantMessageContent, citable: Mapping[int, Source]
) -> AssistantMessageContent:
    edits = list(_edits(content.text, citable))
    if not edits:
        return content
    text, placed = _apply(content.text, edits)
    kept = [
        annotation.model_copy(update={"index": _shifted(annotation.index, edits)})
        for annotation in content.annotations
    ]
    added = [
        Annotation(source=citable[number], index=index)
        for index, edit in zip(placed, edits, strict=True)
        for number in edit.numbers
    ]
    return AssistantMessageContent(text=text, annotations=kept + added)


def _edits(text: str, citable: Mapping[int, Source]) -> Iterator[_Edit]:
    for start, end in _prose(text):
        for found in _GROUP.finditer(text, start, end):
            numbers = [int(n) for n in _NUMBER.findall(found.group())]
            cited = tuple(dict.fromkeys(n for n in numbers if n in citable))
            if not cited:
                continue
            unknown = [str(n) for n in numbers if n not in citable]
            left = f"[{', '.join(unknown)}]" if unknown else ""
            yield _edit(text, found.start(), found.end(), left, cited)


def _edit(text: str, start: int, end: int, left: str, cited: tuple[int, ...]) -> _Edit:
    """Take the marker out with the blank before it (or after it, at the start of a line)."""
    before = start
    while before > 0 and text[before - 1] in " \t":
        before -= 1
    if left:
        return _Edit(start, end, left, cited)
    if before == 0 or text[before - 1] == "\n":
        after = end
        while after < len(text) and text[after] in " \t":
            after += 1
        return _Edit(start, after, "", cited)
    return _Edit(before, end, "", cited)


def _apply(text: str, edits: list[_Edit]) -> tuple[str, list[int]]:
    """The edited text, and where each edit's annotations go in it."""
    pieces: list[str] = []
    placed: list[int] = []
    position = length = 0
    for edit in edits:
        pieces.append(text[position : edit.start])
        length += edit.start - position
        placed.append(length)
        pieces.append(edit.replacement)
        length += len(edit.replacement)
        position = edit.end
    pieces.append(text[position:])
    return "".join(pieces), placed


def _shifted(index: int | None, edits: list[_Edit]) -> int | None:
    if index is None:
        return None
    shift = 0
    for edit in edits:
        if edit.start >= index:
            break
        # An index inside a removed marker lands where the marker was.
        removed = min(edit.end, index) - edit.start
        shift += removed - min(len(edit.replacement), removed)
    return index - shift


def _prose(text: str) -> Iterator[tuple[int, int]]:
    """The character ranges of ``text`` that are prose: inline Markdown outside code spans."""
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def offset(line: int) -> int:
        return line_starts[line] if line < len(line_starts) else len(text)

    for token in _PARSER.parse(text):
        if token.type != "inline" or token.map is None:
            continue
        start, end = offset(token.map[0]), offset(token.map[1])
        for span in _CODE_SPAN.finditer(text, start, end):
            yield start, span.start()
            start = span.end()
        yield start, end
