"""Markup a cell displayed, turned into what the cell widget can show: Markdown and tables.

* ``latex_markdown``: IPython's ``text/latex`` (``Latex``, ``Math``, SymPy) as Markdown math.
* ``read_html``: the first ``<table>`` of an HTML display (``HTML(df.to_html())``, a pandas
  ``Styler``) as rows of cell text, and the text of the rest, for HTML that is no table.

Both take untrusted text. The HTML is read by the standard library's tolerant parser (no
DOM is built, scripts and styles are skipped, nothing is fetched); the caller bounds its
length, and rows beyond ``max_rows`` are counted, not kept.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from html.parser import HTMLParser

_DISPLAY_MATH = (
    re.compile(r"\$\$(?P<body>.+)\$\$", re.DOTALL),
    re.compile(r"\\\[(?P<body>.+)\\\]", re.DOTALL),
    re.compile(r"\$(?P<body>[^$]+)\$"),
    re.compile(r"\\\((?P<body>.+)\\\)", re.DOTALL),
)
_HIDDEN = frozenset({"style", "script", "template", "head", "title", "noscript"})
_BLOCKS = frozenset(
    {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table", "ul",
     "ol", "section", "article", "header", "footer", "blockquote", "hr", "dt", "dd"}
)  # fmt: skip
_CELLS = frozenset({"td", "th"})
_SPACES = re.compile(r"[ \t\f\v\r\xa0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def latex_markdown(latex: str) -> str:
    """One formula (``$x$``, ``$$x$$``, ``\\[x\\]``, ``\\(x\\)`` or bare LaTeX) as a display
    math block; LaTeX that mixes text with inline ``$...$`` math stays as it is."""
    text = latex.strip()
    for pattern in _DISPLAY_MATH:
        if (match := pattern.fullmatch(text)) and "$$" not in match["body"]:
            return f"$$\n{match['body'].strip()}\n$$"
    if "$" not in text:
        return f"$$\n{text}\n$$"
    return text


@dataclass(frozen=True)
class HtmlContent:
    columns: tuple[str, ...]  # the first table's header row, empty without a table
    rows: tuple[tuple[str, ...], ...]  # its first rows, at most ``max_rows``
    total_rows: int  # its body rows, all of them
    has_table: bool
    text: str  # all the visible text, in reading order


@functools.lru_cache(maxsize=8)  # the widget and the model's summary read the same HTML
def read_html(html: str, max_rows: int) -> HtmlContent:
    reader = _Reader(max_rows)
    reader.feed(html)
    reader.close()
    return reader.content()


class _Reader(HTMLParser):
    def __init__(self, max_rows: int) -> None:
        super().__init__(convert_charrefs=True)
        self._max_rows = max_rows
        self._text: list[str] = []
        self._hidden = 0
        self._depth = 0  # tables open; only the first outermost one is read as a table
        self._tables = 0
        self._in_head = False
        self._header: list[str] | None = None
        self._rows: list[tuple[str, ...]] = []
        self._total = 0
        self._row: list[str] | None = None
        self._row_in_head = False
        self._row_all_th = True
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag == "table":
            self._depth += 1
            if self._depth == 1:
                self._tables += 1
        elif self._reading():
            if tag == "thead":
                self._in_head = True
            elif tag == "tr":
                self._end_row()
                self._row, self._row_in_head, self._row_all_th = [], self._in_head, True
            elif tag in _CELLS:
                self._end_cell()
                if self._row is None:  # a cell outside any <tr>: HTML allows omitting it
                    self._row, self._row_in_head, self._row_all_th = [], self._in_head, True
                self._cell = []
                self._row_all_th &= tag == "th"
        if tag in _BLOCKS:
            self._text.append("\n")
        elif tag in _CELLS:
            self._text.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag == "table":
            if self._reading():
                self._end_row()
            self._depth = max(0, self._depth - 1)
        elif self._reading():
            if tag == "thead":
                self._end_row()
                self._in_head = False
            elif tag == "tr":
                self._end_row()
            elif tag in _CELLS:
                self._end_cell()
        if tag in _BLOCKS:
            self._text.append("\n")

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        self._text.append(data)
        if self._cell is not None:  # a nested table's text is its cell's text
            self._cell.append(data)

    def content(self) -> HtmlContent:
        if self._reading():
            self._end_row()
        lines = (_SPACES.sub(" ", line).strip() for line in "".join(self._text).split("\n"))
        text = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
        return HtmlContent(
            tuple(self._header or ()), tuple(self._rows), self._total, self._tables > 0, text
        )

    def _reading(self) -> bool:
        return self._depth == 1 and self._tables == 1

    def _end_cell(self) -> None:
        if self._cell is not None and self._row is not None:
            self._row.append(_SPACES.sub(" ", "".join(self._cell)).strip())
        self._cell = None

    def _end_row(self) -> None:
        self._end_cell()
        if self._row is None:
            return
        row, self._row = tuple(self._row), None
        if self._header is None and (self._row_in_head or (self._row_all_th and not self._total)):
            self._header = list(row)
        elif self._row_in_head:
            return  # a second header row (pandas puts the index name there)
        else:
            self._total += 1
            if len(self._rows) < self._max_rows:
                self._rows.append(row)
