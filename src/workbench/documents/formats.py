"""Documents as text: one extractor per format, each yielding ``Section``s in reading order.

Runs in the extraction subprocess only (``documents.extract``), never in the server: these
parsers read untrusted bytes. Chosen per format rather than one converter (such as
markitdown, which renders a whole PDF as one string) because search results must say where a
passage is — the page of a PDF, the slide of a deck, the sheet of a workbook, the heading of
a section:

* PDF — ``pypdfium2`` (PDFium, Chrome's PDF engine): page by page, ~1,000 text pages a second
  here, the outline's titles as headings;
* DOCX — ``python-docx``; PPTX — ``python-pptx``; XLSX — ``openpyxl`` (read-only mode,
  streamed); CSV — the ``csv`` module;
* HTML — BeautifulSoup; Markdown — markdown-it (the parser the citation mapper uses);
  plain text — decoded with charset-normalizer when not UTF-8.

A file that cannot be read raises ``DocumentError`` with a sentence for the user and the
model. Office files are zip archives: their unpacked size is checked before any parser sees
them (``WORKBENCH_DOCUMENTS_MAX_UNPACKED_MB``), so a zip bomb is refused, not inflated.
"""

from __future__ import annotations

import csv
import io
import itertools
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from workbench.text import storable

ROWS_PER_SECTION = 40  # table rows per section; each section repeats the header row
_HEADINGS = {f"h{level}" for level in range(1, 7)}
# Elements whose text starts a new line: everything else is inline (a span, a link, a cell).
_BREAKS = {
    "address", "article", "aside", "blockquote", "body", "br", "caption", "dd", "div", "dl",
    "dt", "figcaption", "figure", "footer", "form", "header", "hr", "li", "main", "nav", "ol",
    "p", "pre", "section", "table", "tr", "ul",
}  # fmt: skip
_CELLS = {"td", "th"}

KINDS: dict[str, str] = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/csv": "csv",
    "text/html": "html",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
}
_EXTENSIONS: dict[str, str] = {
    ".pdf": "pdf", ".docx": "docx", ".pptx": "pptx", ".xlsx": "xlsx", ".csv": "csv",
    ".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown",
    ".txt": "text", ".text": "text", ".rst": "text", ".log": "text",
}  # fmt: skip


class DocumentError(Exception):
    """The file cannot be read as a document; ``str(error)`` says why, for a person."""


@dataclass(frozen=True)
class Section:
    """A run of text with one location: its page (slide, sheet) and the heading above it."""

    text: str
    page: int | None = None
    heading: str | None = None


@dataclass(frozen=True)
class Limits:
    max_pages: int
    max_unpacked_bytes: int


def kind_of(name: str, mime_type: str) -> str | None:
    """The format a file is read as (``pdf``, ``docx``, …), or None if it is not a document."""
    base = mime_type.split(";")[0].strip().lower()
    return KINDS.get(base) or _EXTENSIONS.get(PurePosixPath(name.lower()).suffix)


class Document:
    """One opened file: ``pages`` (None where the format has none) and its ``sections()``."""

    pages: int | None = None  # pages read: at most the limit
    total: int | None = None  # pages in the file

    def sections(self) -> Iterator[Section]:
        raise NotImplementedError


def open_document(path: Path, kind: str, limits: Limits) -> Document:
    if path.stat().st_size == 0:
        raise DocumentError("the file is empty")
    if kind in {"docx", "pptx", "xlsx"}:
        _check_archive(path, kind, limits)
    opener = {"pdf": _Pdf, "docx": _Docx, "pptx": _Pptx, "xlsx": _Xlsx, "csv": _Csv,
              "html": _Html, "markdown": _Markdown, "text": _Text}[kind]  # fmt: skip
    return opener(path, limits)


def _check_archive(path: Path, kind: str, limits: Limits) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, OSError):
        raise DocumentError(f"it is not a valid {kind.upper()} file (corrupt?)") from None
    if unpacked > limits.max_unpacked_bytes:
        raise DocumentError(
            f"it unpacks to {unpacked // 2**20} MiB, more than the "
            f"{limits.max_unpacked_bytes // 2**20} MiB allowed (a zip bomb?)"
        )


class _Pdf(Document):
    def __init__(self, path: Path, limits: Limits) -> None:
        import pypdfium2 as pdfium

        try:
            self._pdf = pdfium.PdfDocument(path)
        except pdfium.PdfiumError as error:
            if "password" in str(error).lower():
                raise DocumentError("the PDF is encrypted (password-protected)") from None
            raise DocumentError("it is not a readable PDF (corrupt or damaged)") from None
        total = len(self._pdf)
        self.pages = min(total, limits.max_pages)
        self.total = total
        self._headings = self._outline()

    def _outline(self) -> dict[int, str]:
        headings: dict[int, str] = {}
        try:
            for bookmark in self._pdf.get_toc(max_depth=3):
                page = bookmark.get_dest()
                index = page.get_index() if page is not None else None
                if index is not None and index not in headings:
                    headings[index] = bookmark.get_title()
        except Exception:  # a damaged outline costs the headings, not the text
            return {}
        return headings

    def sections(self) -> Iterator[Section]:
        heading: str | None = None
        for index in range(self.pages or 0):
            page = self._pdf[index]
            textpage = page.get_textpage()
            try:
                text = textpage.get_text_bounded()
            finally:
                textpage.close()
                page.close()
            heading = self._headings.get(index, heading)
            yield Section(text.replace("\r\n", "\n").replace("\r", "\n"), index + 1, heading)


class _Docx(Document):
    def __init__(self, path: Path, limits: Limits) -> None:
        import docx
        from docx.opc.exceptions import PackageNotFoundError

        try:
            self._doc = docx.Document(str(path))
        except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile):
            raise DocumentError("it is not a valid DOCX file (corrupt?)") from None

    def sections(self) -> Iterator[Section]:
        from docx.table import Table

        heading: str | None = None
        lines: list[str] = []
        for block in self._doc.iter_inner_content():
            if isinstance(block, Table):
                lines.extend(" | ".join(cell.text for cell in row.cells) for row in block.rows)
                continue
            style = (block.style.name if block.style is not None else "") or ""
            if style.startswith(("Heading", "Title")) and block.text.strip():
                if lines:
                    yield Section("\n".join(lines), None, heading)
                heading, lines = block.text.strip(), []
            elif block.text:
                lines.append(block.text)
        if lines:
            yield Section("\n".join(lines), None, heading)


class _Pptx(Document):
    def __init__(self, path: Path, limits: Limits) -> None:
        import pptx
        from pptx.exc import PackageNotFoundError

        try:
            self._deck = pptx.Presentation(str(path))
        except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile):
            raise DocumentError("it is not a valid PPTX file (corrupt?)") from None
        total = len(self._deck.slides)
        self.pages = min(total, limits.max_pages)
        self.total = total

    def sections(self) -> Iterator[Section]:
        for number, slide in enumerate(self._deck.slides, start=1):
            if number > (self.pages or 0):
                return
            title_shape = slide.shapes.title
            title = title_shape.text.strip() if title_shape is not None else None
            lines = list(_shape_lines(slide.shapes, title_shape))
            if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
                lines.append(slide.notes_slide.notes_text_frame.text)
            yield Section("\n".join(lines), number, title or None)


def _shape_lines(shapes: Any, title: Any) -> Iterator[str]:
    """The text of a slide's shapes but its title: text boxes, tables (a row a line), and
    the shapes inside groups."""
    from pptx.shapes.group import GroupShape

    for shape in shapes:
        if isinstance(shape, GroupShape):
            yield from _shape_lines(shape.shapes, title)
        elif shape.has_text_frame and shape != title:
            yield from shape.text_frame.text.splitlines()
        elif getattr(shape, "has_table", False):
            for row in shape.table.rows:
                yield " | ".join(cell.text for cell in row.cells)


class _Xlsx(Document):
    def __init__(self, path: Path, limits: Limits) -> None:
        import openpyxl

        # A file object, not the path: openpyxl refuses a path without an Excel extension,
        # and the reader's copy has none. Read-only mode reads it lazily: it stays open.
        self._file = path.open("rb")
        try:
            self._book = openpyxl.load_workbook(self._file, read_only=True, data_only=True)
        except (KeyError, ValueError, OSError, zipfile.BadZipFile):
            raise DocumentError("it is not a valid XLSX file (corrupt?)") from None
        total = len(self._book.worksheets)
        self.pages = min(total, limits.max_pages)
        self.total = total

    def sections(self) -> Iterator[Section]:
        for number, sheet in enumerate(self._book.worksheets[: self.pages], start=1):
            rows = (
                ["" if value is None else str(value) for value in row]
                for row in sheet.iter_rows(values_only=True)
            )
            yield from _table_sections(rows, number, sheet.title)


class _Csv(Document):
    def __init__(self, path: Path, limits: Limits) -> None:
        self._text = _decoded(path.read_bytes())

    def sections(self) -> Iterator[Section]:
        try:
            dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(self._text[:4096])
        except csv.Error:
            dialect = csv.excel
        # No field is longer than the file (the default limit, 128 KiB, refused whole files
        # for one long cell); the memory limit bounds the rest.
        csv.field_size_limit(max(csv.field_size_limit(), len(self._text) + 1))
        yield from _table_sections(csv.reader(io.StringIO(self._text), dialect), None, None)


def _table_sections(
    rows: Iterator[list[str]], page: int | None, heading: str | None
) -> Iterator[Section]:
    """Rows in sections of ``ROWS_PER_SECTION``, each headed by the table's first row, so a
    passage found in row 900 still says what its columns are."""
    header: str | None = None
    lines: list[str] = []
    for row in rows:
        line = " | ".join(cell.strip() for cell in row).strip(" |")
        if not line:
            continue
        if header is None:
            header = line
            continue
        lines.append(line)
        if len(lines) == ROWS_PER_SECTION:
            yield Section("\n".join([header, *lines]), page, heading)
            lines = []
    if lines or header is not None:
        yield Section("\n".join(filter(None, [header, *lines])), page, heading)


class _Html(Document):
    def __init__(self, path: Path, limits: Limits) -> None:
        from bs4 import BeautifulSoup

        self._soup = BeautifulSoup(_decoded(path.read_bytes()), "html.parser")

    def sections(self) -> Iterator[Section]:
        for hidden in self._soup(["script", "style", "noscript", "template"]):
            hidden.decompose()
        title = self._soup.title.get_text(" ", strip=True) if self._soup.title else None
        if self._soup.title is not None:
            self._soup.title.decompose()
        heading: str | None = title or None
        lines: list[str] = []
        for is_heading, text in _html_lines(self._soup):
            if not is_heading:
                lines.append(text)
                continue
            if lines:
                yield Section("\n".join(lines), None, heading)
            heading, lines = text, []
        if lines:
            yield Section("\n".join(lines), None, heading)


def _html_lines(root: Any) -> Iterator[tuple[bool, str]]:
    """``(is_heading, text)`` for each line of ``root``'s text in reading order: a heading's
    text whole; the rest broken into lines where block elements start and end, a table row a
    line with its cells joined by " | ". Walked with a stack, not recursion: a hostile page
    may nest thousands of elements deep."""
    from bs4.element import NavigableString, PreformattedString, Tag

    words: list[str] = []

    def line() -> Iterator[tuple[bool, str]]:
        text = " ".join("".join(words).split())
        words.clear()
        if text:
            yield False, text

    stack: list[tuple[Any, bool]] = [(root, True)]
    while stack:
        node, entering = stack.pop()
        if isinstance(node, Tag):
            if node.name in _HEADINGS:
                yield from line()
                if text := node.get_text(" ", strip=True):
                    yield True, text
                continue
            if node.name in _BREAKS:
                yield from line()
            elif node.name in _CELLS and entering and "".join(words).strip():
                words.append(" | ")
            if entering:
                stack.append((node, False))
                stack.extend((child, True) for child in reversed(node.contents))
        elif isinstance(node, NavigableString) and not isinstance(node, PreformattedString):
            words.append(str(node))
    yield from line()


class _Markdown(Document):
    def __init__(self, path: Path, limits: Limits) -> None:
        self._text = _decoded(path.read_bytes())

    def sections(self) -> Iterator[Section]:
        from markdown_it import MarkdownIt

        source = self._text.splitlines()
        tokens = MarkdownIt("commonmark").parse(self._text)
        # (first line, first line after it, text) of each heading: a setext heading (text,
        # then a line of === or ---) spans two lines.
        starts = [
            (token.map[0], token.map[1], tokens[index + 1].content.strip())
            for index, token in enumerate(tokens)
            if token.type == "heading_open" and token.map is not None
        ]
        bounds: list[tuple[int, int, str | None]] = [*starts, (len(source), len(source), None)]
        if not starts or starts[0][0] > 0:
            bounds.insert(0, (0, 0, None))
        for (_, body_start, heading), (end, _, _) in itertools.pairwise(bounds):
            body = source[body_start:end]
            if any(line.strip() for line in body):
                yield Section("\n".join(body), None, heading or None)


class _Text(Document):
    def __init__(self, path: Path, limits: Limits) -> None:
        self._text = _decoded(path.read_bytes())

    def sections(self) -> Iterator[Section]:
        yield Section(self._text)


def _decoded(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is None:
            raise DocumentError("it is not text in any encoding recognised") from None
        text = str(best)
    return storable(text.replace("\r\n", "\n").replace("\r", "\n"))
