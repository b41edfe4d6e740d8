"""Widgets built from the ``widgets/*.widget`` templates and typed data.

The templates (ChatKit ``WidgetTemplate`` files: Jinja that renders widget JSON) own the
layout; this module owns the data: it formats, escapes and truncates everything before it
reaches a template, and every value enters the JSON through ``tojson``, so no string a user
or a program printed can break the widget.

* ``python_cell_widget(CellView)`` shows one ``execute_python`` call, from the model still
  writing the code to its outputs (text, Markdown, images, tables and notes, in the order the
  cell produced them, as a notebook shows them), files and error. Markdown from a cell is
  untrusted: it is cut here like any output, and a cut never reaches past its own component.
* ``file_list_widget(files)`` lists files with download links, for the file tools.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from chatkit.widgets import DynamicWidgetRoot, WidgetTemplate

CellStatus = Literal["writing", "running", "done", "error", "timed_out", "stopped"]

CODE_COMPONENT_ID = "code"
"""The cell's code component: stream the model's code into it with
``widget.streaming_text.value_delta`` events while the status is ``writing``."""

CODE_STREAM_PREFIX = "```python\n"
"""What the code component's value starts with while streaming; the code follows as is, so
appending a delta of code keeps the value valid. The fence closes in the final states."""

OUTPUT_CHARS = 4000
"""Characters of stdout, stderr and each text or Markdown output shown in a cell."""

TRACEBACK_LINES = 12
TABLE_ROWS = 20
TABLE_COLUMNS = 12
TABLE_CELL_CHARS = 80

_STATUS: dict[CellStatus, tuple[str, str]] = {
    "writing": ("Writing", "discovery"),
    "running": ("Running", "info"),
    "done": ("Done", "success"),
    "error": ("Error", "danger"),
    "timed_out": ("Timed out", "warning"),
    "stopped": ("Stopped", "secondary"),
}
_IN_PROGRESS: frozenset[CellStatus] = frozenset({"writing", "running"})

# IPython colours its tracebacks; escape codes are noise outside a terminal.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# CommonMark lets any ASCII punctuation be backslash-escaped; these are the ones that would
# otherwise format, link or break a table.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~$&])")
_BACKTICK_RUN = re.compile(r"`+")


class ImageView(NamedTuple):
    url: str  # absolute, signed (``inline=True``)
    alt: str = ""


class TextView(NamedTuple):
    label: str  # "result" (the last expression), "output" (a display), a file's name
    text: str  # plain text, shown as is in a code block
    note: str | None = None  # what was left out before it got here (a file's other lines)


class MarkdownView(NamedTuple):
    markdown: str  # from the cell, untrusted: cut (with a note) when shown
    title: str | None = None  # the file it previews; None for a display
    note: str | None = None


class NoteView(NamedTuple):
    text: str  # what could not be shown, and why


class TableView(NamedTuple):
    title: str
    markdown: str  # from ``markdown_table``
    caption: str  # "n rows × m columns"


class FileView(NamedTuple):
    name: str
    url: str  # absolute, signed
    size: int  # bytes


class ErrorView(NamedTuple):
    name: str  # exception class, e.g. "ZeroDivisionError"
    message: str
    traceback: str = ""  # as the kernel reports it; ANSI colours are stripped here


OutputView = TextView | MarkdownView | ImageView | TableView | NoteView


@dataclass(frozen=True)
class CellView:
    """Everything one ``execute_python`` call shows, at any point of its life."""

    code: str = ""
    status: CellStatus = "writing"
    duration_seconds: float | None = None
    stdout: str = ""
    stderr: str = ""
    outputs: list[OutputView] = field(default_factory=list)  # in the order they appeared
    files: list[FileView] = field(default_factory=list)
    error: ErrorView | None = None


# -- widgets -------------------------------------------------------------------------------


def python_cell_widget(view: CellView, *, output_chars: int = OUTPUT_CHARS) -> DynamicWidgetRoot:
    return template("python_cell").build(python_cell_data(view, output_chars=output_chars))


def python_cell_data(view: CellView, *, output_chars: int = OUTPUT_CHARS) -> dict[str, Any]:
    """The template's data (matches its ``jsonSchema``)."""
    label, color = _STATUS[view.status]
    streaming = view.status == "writing"
    finished = view.status not in _IN_PROGRESS
    error = None
    if view.error is not None:
        summary = f"{view.error.name}: {view.error.message}" if view.error.message else ""
        error = {
            "summary": summary or view.error.name,
            "traceback": _traceback_block(view.error.traceback, output_chars),
        }
    return {
        "status": view.status,
        "status_label": label,
        "status_color": color,
        "duration": (
            format_duration(view.duration_seconds)
            if finished and view.duration_seconds is not None
            else None
        ),
        # While streaming, the fence stays open so the server can append code to it.
        "code": CODE_STREAM_PREFIX + view.code if streaming else fenced(view.code, "python"),
        "streaming": streaming,
        "stdout": _output_block(view.stdout, output_chars),
        "stderr": _output_block(view.stderr, output_chars),
        "outputs": [_output_data(output, output_chars) for output in view.outputs],
        "files": [_file_data(file) for file in view.files],
        "error": error,
    }


def file_list_widget(
    files: Sequence[FileView], *, title: str = "Files", note: str | None = None
) -> DynamicWidgetRoot:
    total = sum(file.size for file in files)
    count = f"{len(files)} file" + ("" if len(files) == 1 else "s")
    return template("file_list").build(
        {
            "title": title,
            "summary": f"{count}, {format_size(total)}" if files else "no files",
            "files": [_file_data(file) for file in files],
            "note": note,
        }
    )


# -- templates -----------------------------------------------------------------------------


def widgets_dir() -> Path:
    """The packaged copy in a wheel, else the repository's ``widgets/``."""
    packaged = Path(__file__).resolve().parent / "widgets"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "widgets"


@functools.cache
def templates() -> dict[str, WidgetTemplate]:
    """Every ``*.widget`` file by its stem, parsed and compiled once per process."""
    return {
        path.stem: WidgetTemplate.from_file(str(path)) for path in widgets_dir().glob("*.widget")
    }


def template(name: str) -> WidgetTemplate:
    try:
        return templates()[name]
    except KeyError:
        raise LookupError(f"no widget template {name}.widget in {widgets_dir()}") from None


# -- tables --------------------------------------------------------------------------------


def markdown_table(
    columns: Sequence[object],
    rows: Iterable[Sequence[object]],
    *,
    cell_chars: int = TABLE_CELL_CHARS,
) -> str:
    """A GFM table; every cell is escaped (``|``, newlines, Markdown) and shortened.

    Rows shorter than the header are padded, longer ones cut, so the table always parses.
    """
    width = max(len(columns), 1)
    header = [_cell(name, cell_chars) for name in columns] or [""]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * width]
    for row in rows:
        cells = [_cell(value, cell_chars) for value in list(row)[:width]]
        cells += [""] * (width - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_view(
    title: str,
    columns: Sequence[object],
    rows: Sequence[Sequence[object]],
    *,
    total_rows: int | None = None,
    total_columns: int | None = None,
    max_rows: int = TABLE_ROWS,
    max_columns: int = TABLE_COLUMNS,
) -> TableView:
    """A preview of a table (a DataFrame's columns and rows, say) with its full shape.

    ``total_rows``/``total_columns`` give the real shape when ``rows``/``columns`` are
    already only a head of the data.
    """
    n_rows = len(rows) if total_rows is None else total_rows
    n_columns = len(columns) if total_columns is None else total_columns
    shown_columns = list(columns)[:max_columns]
    shown_rows = [list(row)[:max_columns] for row in rows[:max_rows]]
    caption = f"{n_rows:,} {plural(n_rows, 'row')} × {n_columns:,} {plural(n_columns, 'column')}"
    if len(shown_rows) < n_rows or len(shown_columns) < n_columns:
        caption += f" (showing {len(shown_rows):,} × {len(shown_columns):,})"
    return TableView(title, markdown_table(shown_columns, shown_rows), caption)


def csv_table_view(title: str, text: str, *, max_rows: int = TABLE_ROWS) -> TableView:
    """A preview of CSV text whose first row is the header."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    rows = list(reader)
    width = max([len(header), *(len(row) for row in rows)])
    return table_view(
        title, header, rows[:max_rows], total_rows=len(rows), total_columns=width,
        max_rows=max_rows,
    )  # fmt: skip


# -- formatting ----------------------------------------------------------------------------


def escape_markdown(text: str) -> str:
    """``text`` shown literally in Markdown inline content (a link label, a table cell)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def fenced(text: str, language: str = "") -> str:
    """A fenced code block that ``text`` cannot close early, whatever backticks it holds."""
    longest = max((len(run) for run in _BACKTICK_RUN.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    body = text if text.endswith("\n") or not text else text + "\n"
    return f"{fence}{language}\n{body}{fence}"


def truncate_middle(text: str, limit: int) -> tuple[str, str | None]:
    """At most ``limit`` characters, keeping the head and the tail (where errors end up).

    Returns the text and a note saying how much was left out, or None.
    """
    if len(text) <= limit:
        return text, None
    head = text[: limit * 3 // 5]
    tail = text[len(text) - (limit - len(head)) :]
    hidden = len(text) - len(head) - len(tail)
    marker = f"\n… {hidden:,} characters not shown …\n"
    note = f"Showing the first {len(head):,} and last {len(tail):,} of {len(text):,} characters."
    return head + marker + tail, note


def truncate_head(text: str, limit: int) -> tuple[str, str | None]:
    """At most ``limit`` characters from the start, ending at a line break if there is one
    near; for text read top down (Markdown, a file's first lines). Returns it and a note."""
    if len(text) <= limit:
        return text, None
    head = text[:limit]
    if (line_end := head.rfind("\n")) > limit // 2:
        head = head[:line_end]
    return head, f"Showing the first {len(head):,} of {len(text):,} characters."


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def format_size(size: int) -> str:
    if size < 1024:
        return f"{size} {plural(size, 'byte')}"
    value = float(size)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1024
        if value < 1024 or unit == "TB":
            break
    return f"{value:.1f} {unit}"


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def _output_block(text: str, limit: int) -> dict[str, str | None] | None:
    if not text:
        return None
    shown, note = truncate_middle(strip_ansi(text), limit)
    return {"text": fenced(shown, "text"), "note": note}


def _output_data(output: OutputView, limit: int) -> dict[str, Any]:
    match output:
        case TextView(label, text, note):
            shown, cut = truncate_middle(strip_ansi(text), limit)
            return {"kind": "text", "label": label, "text": fenced(shown, "text"),
                    "note": cut or note}  # fmt: skip
        case MarkdownView(markdown, title, note):
            shown, cut = truncate_head(markdown, limit)
            return {"kind": "markdown", "title": title, "markdown": shown, "note": cut or note}
        case ImageView(url, alt):
            return {"kind": "image", "src": url, "alt": alt}
        case TableView():
            return {"kind": "table", **output._asdict()}
        case NoteView(text):
            return {"kind": "note", "text": text}


def _traceback_block(traceback: str, limit: int) -> str | None:
    lines = strip_ansi(traceback).rstrip().splitlines()
    if not lines:
        return None
    # The last frames say where it went wrong; the first ones are mostly IPython plumbing.
    if len(lines) > TRACEBACK_LINES:
        lines = [f"… {len(lines) - TRACEBACK_LINES} lines not shown", *lines[-TRACEBACK_LINES:]]
    shown, _ = truncate_middle("\n".join(lines), limit)
    return fenced(shown, "text")


def _file_data(file: FileView) -> dict[str, str]:
    return {"link": f"[{escape_markdown(file.name)}]({file.url})", "size": format_size(file.size)}


def _cell(value: object, limit: int) -> str:
    text = "" if value is None else str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    # Escape first, then spell line breaks the way pandas prints them (a literal \n), so a
    # cell never splits its row.
    text = escape_markdown(text)
    return text.replace("\r\n", "\\\\n").replace("\n", "\\\\n").replace("\r", "\\\\r")


def plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"
