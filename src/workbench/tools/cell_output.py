"""Everything a finished cell shows besides its streams, the way a notebook would show it.

``cell_outputs`` turns the cell's displays (in order: figures, tables, Markdown, LaTeX, JSON,
HTML, text, notes on charts that only a browser could draw) into widget views, then adds
previews of the files the cell wrote: images inline, CSV as a table, Markdown rendered, text,
JSON and logs as a few lines. ``describe_displays`` tells the model the same, in words.

Invariants:

* Workspace files are opened only through ``open_file`` (``workspace_fs.open_file``: no link
  followed, no FIFO waited on), and at most ``PREVIEW_BYTES`` of each is read. An image file
  is shown only if its first bytes say it is one, and no larger than ``MAX_IMAGE_BYTES``.
* At most ``max_outputs`` views, of which at most ``max_images`` images; what is left out is
  counted in a note, never silently dropped.
* How long a string may be on screen is the widget's to bound; NUL and lone surrogates are
  the store's to clean (``workbench.text``).
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from workbench.sandbox.display import (
    CHART_MIME,
    IMAGE_TYPES,
    MAX_HTML_CHARS,
    TABLE_MIME,
    Display,
)
from workbench.sandbox.outputs import MAX_IMAGE_BYTES, CellOutput
from workbench.sandbox.workspaces import FileInfo
from workbench.tools.markup import latex_markdown, read_html
from workbench.widgets import (
    TABLE_ROWS,
    ImageView,
    MarkdownView,
    NoteView,
    OutputView,
    TableView,
    TextView,
    csv_table_view,
    plural,
    table_view,
)

PREVIEW_BYTES = 64 * 1024
PREVIEW_LINES = 20  # of a text, JSON or log file
SUMMARY_CHARS = 1500  # of one display, in what the model reads back

OpenFile = Callable[[str], int]  # a workspace path to a read-only descriptor, or OSError
FileUrl = Callable[[str], str]  # a workspace path to a signed link that shows it inline

_IMAGE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "gif", "webp", "svg"})
_TEXT_EXTENSIONS = frozenset({"txt", "text", "log", "out", "json", "jsonl", "ndjson"})
_MARKDOWN_EXTENSIONS = frozenset({"md", "markdown"})
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
_CHART_NOTES = {
    "plotly": "A Plotly figure is interactive and came without a static image, so it cannot "
    "be shown here: save it with fig.write_image('chart.png') (needs kaleido) or draw it with "
    "matplotlib.",
    "vega-lite": "An Altair (Vega-Lite) chart is interactive and came without a static image, "
    "so it cannot be shown here: save it with chart.save('chart.png') (needs vl-convert) or "
    "draw it with matplotlib.",
    "widget": "An interactive Jupyter widget cannot be shown here.",
    "bokeh": "A Bokeh plot is interactive and cannot be shown here: draw it with matplotlib.",
}


def cell_outputs(
    output: CellOutput,
    changed: Sequence[FileInfo],
    *,
    open_file: OpenFile,
    url: FileUrl,
    max_outputs: int,
    max_images: int,
) -> list[OutputView]:
    shown = _Shown(max_outputs, max_images)
    # Room is checked before a view is made: past the limits nothing is parsed or read.
    for display in output.displays:
        if shown.room_for(image=display.mime in IMAGE_TYPES):
            shown.add(display_view(display, url))
    for info in changed:
        kind = _preview_kind(info.path)
        if kind is not None and shown.room_for(image=kind == "image"):
            shown.add(file_preview(info, open_file, url))
    shown.hidden += output.displays_dropped
    return shown.views()


class _Shown:
    def __init__(self, max_outputs: int, max_images: int) -> None:
        self.max_outputs, self.max_images = max_outputs, max_images
        self.hidden = self.hidden_images = self.images = 0
        self._views: list[OutputView] = []

    def room_for(self, *, image: bool) -> bool:
        """Whether one more output fits; if not, it is counted as hidden."""
        if image and self.images >= self.max_images:
            self.hidden_images += 1
        elif len(self._views) >= self.max_outputs:
            self.hidden += 1
        else:
            return True
        return False

    def add(self, view: OutputView | None) -> None:
        if view is not None:
            self.images += isinstance(view, ImageView)
            self._views.append(view)

    def views(self) -> list[OutputView]:
        notes = []
        if self.hidden_images:
            notes.append(NoteView(f"{_count(self.hidden_images, 'more image')} not shown inline "
                                  f"(at most {self.max_images} per cell)."))  # fmt: skip
        if self.hidden:
            notes.append(NoteView(f"{_count(self.hidden, 'more output')} not shown "
                                  f"(at most {self.max_outputs} per cell)."))  # fmt: skip
        return [*self._views, *notes]


def display_view(display: Display, url: FileUrl) -> OutputView | None:
    mime, data = display.mime, display.data
    if mime in IMAGE_TYPES:
        return ImageView(url(data), "Figure")
    if mime == TABLE_MIME:
        return _table(data)
    if mime == CHART_MIME:
        return NoteView(_chart_note(data))
    if mime == "text/plain":
        return TextView(_text_label(display), data)
    if mime == "text/html":
        return _html_view(display)
    if mime == "text/markdown":
        return MarkdownView(data, note=_cut_note(display))
    if mime == "text/latex":
        return MarkdownView(latex_markdown(data), note=_cut_note(display))
    if mime == "application/json":
        return TextView("JSON", data, _cut_note(display))
    return None


def describe_displays(output: CellOutput, limit: int) -> list[str]:
    """What the model reads of the cell's displays, one part each (figures together), until
    they take ``limit`` characters: the rest are counted (and left unparsed)."""
    parts: list[str] = []
    told = untold = 0
    for display in output.displays:
        if display.mime in IMAGE_TYPES:
            continue
        if told >= limit:
            untold += 1
            continue
        parts.append(_describe(display))
        told += len(parts[-1])
    if output.images:
        parts.append("figures shown to the user: " + ", ".join(output.images))
    if untold or output.displays_dropped:
        parts.append(f"[{untold + output.displays_dropped} more displays not described here]")
    return parts


def file_preview(info: FileInfo, open_file: OpenFile, url: FileUrl) -> OutputView | None:
    """How a file the cell wrote is previewed, or None (another type, unreadable, binary)."""
    kind = _preview_kind(info.path)
    if kind is None:
        return None
    if kind == "image":
        head = _read(info, open_file, 512) if info.size <= MAX_IMAGE_BYTES else None
        return ImageView(url(info.path), info.path) if head and _is_image(head) else None
    extension = info.path.rpartition(".")[2].lower()
    tail = extension == "log"  # where a log's news is
    raw = _read(info, open_file, PREVIEW_BYTES, tail=tail)
    if raw is None or b"\0" in raw:
        return None
    whole = len(raw) == info.size
    text = _decode(raw, cut_start=tail and not whole)
    if not whole:  # no half line (nor half row) at the cut
        text = text.split("\n", 1)[-1] if tail else text.rsplit("\n", 1)[0]
    if kind == "csv":
        return csv_table_view(info.path, text)
    if kind == "markdown":
        note = None if whole else f"The first {PREVIEW_BYTES // 1024} KB of the file."
        return MarkdownView(text, info.path, note)
    if extension == "json" and whole:
        text = _pretty_json(text)
    return _lines_view(info.path, text, tail=tail, whole=whole)


# -- displays ------------------------------------------------------------------------------


def _table(table: dict[str, Any]) -> TableView:
    rows, columns = (table.get("shape") or [None, None])[:2]
    return table_view(
        "Table", table.get("columns", []), table.get("rows", []),
        total_rows=rows, total_columns=columns,
    )  # fmt: skip


def _html_view(display: Display) -> OutputView:
    content = read_html(display.data, TABLE_ROWS)
    if content.has_table and (content.columns or content.rows):
        width = max([len(content.columns), *(len(row) for row in content.rows)])
        view = table_view(
            "HTML table", content.columns, content.rows,
            total_rows=content.total_rows, total_columns=width,
        )  # fmt: skip
        if display.cut:
            view = view._replace(caption=view.caption + "; the HTML was longer: rows past the "
                                 f"first {MAX_HTML_CHARS // 1024} KB are not counted")  # fmt: skip
        return view
    if not content.text:
        return NoteView("HTML output with no text cannot be shown here.")
    return TextView("HTML, as text", content.text, _cut_note(display))


def _describe(display: Display) -> str:
    if display.mime == "text/plain":
        return f"{_text_label(display)}:\n{display.data}"
    if display.mime == TABLE_MIME:
        shape = display.data.get("shape") or ["?", "?"]
        columns = ", ".join(str(c) for c in display.data.get("columns", [])[:30])
        return f"table shown to the user: {shape[0]} rows × {shape[1]} columns ({columns})"
    if display.mime == CHART_MIME:
        return _chart_note(display.data)
    return _describe_markup(display)


def _describe_markup(display: Display) -> str:
    kind = {"text/markdown": "Markdown", "text/latex": "LaTeX", "application/json": "JSON"}
    label = kind.get(display.mime, "HTML, as text")
    text = display.data
    if display.mime == "text/html":
        content = read_html(text, TABLE_ROWS)
        if content.has_table and (content.columns or content.rows):
            columns = ", ".join(content.columns[:30])
            return (f"HTML table shown to the user: {content.total_rows} rows ({columns})"
                    + (" (cut)" if display.cut else ""))  # fmt: skip
        text = content.text
    shown = text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS] + " […]"
    described = f"{label} shown to the user:\n{shown}"
    if display.plain:  # SymPy's "sqrt(x)/2" reads better than its LaTeX
        described += f"\n(as text: {display.plain[:SUMMARY_CHARS]})"
    return described


def _text_label(display: Display) -> str:
    return "result" if display.result else "output"


def _chart_note(kind: str) -> str:
    return _CHART_NOTES.get(kind, "This interactive output cannot be shown here.")


def _cut_note(display: Display) -> str | None:
    return "It was longer; only its beginning was kept." if display.cut else None


# -- files ---------------------------------------------------------------------------------


def _preview_kind(path: str) -> str | None:
    extension = path.rpartition(".")[2].lower() if "." in path else ""
    if extension in _IMAGE_EXTENSIONS:
        return "image"
    if extension in _MARKDOWN_EXTENSIONS:
        return "markdown"
    if extension == "csv":
        return "csv"
    return "text" if extension in _TEXT_EXTENSIONS else None


def _read(info: FileInfo, open_file: OpenFile, size: int, *, tail: bool = False) -> bytes | None:
    try:
        # Through a descriptor opened without following links: the sandbox may have swapped
        # a directory for a symlink since the cell ended.
        with os.fdopen(open_file(info.path), "rb") as file:
            if tail:
                file.seek(max(0, os.fstat(file.fileno()).st_size - size))
            return file.read(size)
    except OSError:  # workspace_fs refuses as OSError (WorkspaceError) too
        return None


def _is_image(head: bytes) -> bool:
    if head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return True
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return text.startswith(b"<") and b"<svg" in text


def _decode(raw: bytes, *, cut_start: bool) -> str:
    if cut_start:  # the tail of a file may begin mid-character: skip to the next one
        raw = raw[next((i for i, b in enumerate(raw[:4]) if b & 0xC0 != 0x80), 0) :]
    return codecs.decode(raw, "utf-8", errors="replace")


def _pretty_json(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text  # not JSON after all: shown as the text it is


def _lines_view(name: str, text: str, *, tail: bool, whole: bool) -> TextView:
    lines = text.splitlines()
    shown = lines[-PREVIEW_LINES:] if tail else lines[:PREVIEW_LINES]
    note = None
    if len(shown) < len(lines) or not whole:
        total = f"{len(lines):,}" if whole else "more"
        note = f"Showing the {'last' if tail else 'first'} {len(shown)} of {total} lines."
    return TextView(name, "\n".join(shown), note)


def _count(count: int, thing: str) -> str:
    return f"{count} {plural(count, thing)}"
