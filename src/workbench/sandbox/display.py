"""Which representation of a kernel's display to keep, as a notebook front end would pick it.

A ``display_data`` or ``execute_result`` message carries one object in several MIME types;
a notebook renders the richest one it understands. ``choose`` does the same for what the cell
widget can show: our table JSON, Markdown, LaTeX, images, JSON, HTML and plain text, and for
interactive charts (Plotly, Vega-Lite, Jupyter widgets), which no static widget can draw, their
static image when the bundle has one, else a marker the widget turns into a note.

Invariants: whatever is kept is bounded (text to the caller's ``max_chars``, HTML to
``MAX_HTML_CHARS``, JSON serialized and cut likewise), so a huge display costs the server no
more than a long print; an image's bytes are never kept here, only handed to ``save``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

TABLE_MIME = "application/vnd.workbench.table+json"
IMAGE_TYPES = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/svg+xml": "svg",
}
CHART_MIME = "application/vnd.workbench.chart"
"""Kept in place of an interactive chart with no static image; ``data`` names its kind."""

# Enough for a preview of any table; the server parses it (~60 ms), more would stall it.
MAX_HTML_CHARS = 128 * 1024
# Interactive renderers by MIME prefix, and what to call what they draw.
_CHARTS = (
    ("application/vnd.plotly.", "plotly"),
    ("application/vnd.vegalite.", "vega-lite"),
    ("application/vnd.vega.", "vega-lite"),
    ("application/vnd.jupyter.widget-view", "widget"),
    ("application/vnd.bokehjs", "bokeh"),
)
# What ``repr`` says of an object that defines none of its own: it tells the model nothing.
_DEFAULT_REPR = re.compile(r"<[\w.]+(?: object)?(?: at 0x[0-9a-fA-F]+)?>")


@dataclass(frozen=True)
class Display:
    """One output a cell displayed, in the representation kept for it."""

    mime: str  # TABLE_MIME, an image type, text/markdown, text/latex, text/html, ...
    data: Any  # text; an image's workspace-relative path; a table's dict; a chart's kind
    plain: str | None = None  # its text/plain, when that says more than an object's repr
    result: bool = False  # the value of the cell's last expression (``Out[n]``)
    cut: bool = False  # ``data`` is the head of something longer


def choose(
    data: Mapping[str, Any],
    *,
    result: bool,
    max_chars: int,
    save: Callable[[Any, str, str], str | None],
) -> Display | None:
    """The representation of ``data`` (a MIME bundle) to keep, or None if nothing is shown.

    ``save(payload, mime, extension)`` writes an image and returns its path, or None when it
    could not be written (the image is then dropped, as a notebook shows nothing for it).
    """
    plain = _plain(data.get("text/plain"), max_chars)

    def keep(mime: str, value: Any, cut: bool = False) -> Display:
        return Display(mime, value, plain if mime != "text/plain" else None, result, cut)

    if TABLE_MIME in data and isinstance(data[TABLE_MIME], dict):
        return keep(TABLE_MIME, data[TABLE_MIME])
    chart = next((kind for mime in data for prefix, kind in _CHARTS if mime.startswith(prefix)),
                 None)  # fmt: skip
    for mime in ("text/markdown", "text/latex"):
        if isinstance(data.get(mime), str):
            return keep(mime, *_head(data[mime], max_chars))
    for mime, extension in IMAGE_TYPES.items():
        if mime in data:
            path = save(data[mime], mime, extension)
            return None if path is None else keep(mime, path)
    if chart is not None:
        return keep(CHART_MIME, chart)
    if "application/json" in data:
        text = json.dumps(data["application/json"], indent=2, ensure_ascii=False, default=str)
        return keep("application/json", *_head(text, max_chars))
    # HTML only when the plain text is an empty repr: an estimator's HTML card is worse
    # than its text, a Styler's or an HTML(...) table is all there is.
    if isinstance(data.get("text/html"), str) and plain is None:
        return keep("text/html", *_head(data["text/html"], MAX_HTML_CHARS))
    if isinstance(data.get("text/plain"), str):
        return keep("text/plain", *_head(data["text/plain"], max_chars))
    return None


def _plain(text: Any, max_chars: int) -> str | None:
    if not isinstance(text, str) or _DEFAULT_REPR.fullmatch(text.strip()):
        return None
    return text[:max_chars]


def _head(text: str, limit: int) -> tuple[str, bool]:
    return text[:limit], len(text) > limit
