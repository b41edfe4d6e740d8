"""What ``search_files`` says: its reading tasks and the passages the model reads.

Wording only, kept apart from the plug-in (as ``file_texts`` is from the file tools): each
function turns a document's state, or a search's passages, into the sentences a person or
the model reads.
"""

from __future__ import annotations

from workbench.documents.library import DocumentState
from workbench.documents.search import Passage
from workbench.widgets import plural


def pages_so_far(state: DocumentState) -> str:
    if state.pages and state.pages_done:
        return f" — page {state.pages_done} of {state.pages}"
    return "…"


def reading_task(state: DocumentState, *, final: bool) -> tuple[str, str | None, bool]:
    """A reading task's title, content and whether it is done, for ``state``."""
    if state.status == "ready":
        pages = f"{state.pages} {plural(state.pages, 'page')}, " if state.pages else ""
        passages = f"{state.chunks} {plural(state.chunks, 'passage')}"
        content = f"{pages}{passages} indexed. {state.note or ''}"
        return f"Read {state.name}", content.strip(), True
    if state.status == "duplicate":
        return f"{state.name} is already among the documents", None, True
    if state.status == "failed":
        return f"Could not read {state.name}", state.note, True
    title = f"Reading {state.name}" + pages_so_far(state)
    return (title + " (continues in the background)" if final else title), None, False


def listing(
    query: str, found: list[Passage], numbers: list[int], chosen: list[DocumentState]
) -> str:
    notes = [note(d) for d in chosen]
    head = [note for note in notes if note]
    if not found:
        return "\n".join([f"No passage matches “{query}”. Try other words.", *head])
    entries = []
    for number, passage in zip(numbers, found, strict=True):
        where = f"{passage.name}, page {passage.page}" if passage.page else passage.name
        if passage.heading:
            where += f" — {passage.heading}"
        entries.append(f"[{number}] {where}\n{passage.body}")
    lead = f"Passages for “{query}” (cite a passage as [n] after the claim it supports):"
    return "\n\n".join(["\n".join([lead, *head]), *entries])


def note(state: DocumentState) -> str | None:
    if state.reading and not state.searchable:
        return (
            f"Note: {state.name} is still being read; none of it can be searched yet. "
            "Search again in a moment."
        )
    if state.reading:
        paged = state.pages and state.pages_done
        so_far = f"pages 1–{state.pages_done} of {state.pages}" if paged else "part of it"
        return (
            f"Note: {state.name} is still being read; {so_far} can be searched so far. "
            "Search again later for the rest."
        )
    if state.status == "failed":
        return f"Note: {state.note or state.name + ' could not be read.'}"
    return f"Note: {state.note}" if state.note else None
