"""Real documents for the document-search tests, made with the libraries people make them with
(fpdf2, python-docx, python-pptx, openpyxl), and bad ones made the way they go wrong.

Every maker returns the file's bytes; nothing is written to disk. Texts are given by the
caller, so each test says what it searches for.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Sequence

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV, HTML, MARKDOWN, TEXT = "text/csv", "text/html", "text/markdown", "text/plain"

Page = tuple[str | None, str]  # (heading in the outline, or None; the page's text)


def pdf(pages: Sequence[Page]) -> bytes:
    """A text PDF, one page per entry; a heading starts an outline entry (a bookmark) there."""
    from fpdf import FPDF

    document = FPDF()
    document.set_font("helvetica", size=11)
    for heading, text in pages:
        document.add_page()
        if heading is not None:
            document.start_section(heading)
            document.cell(text=heading, new_x="LMARGIN", new_y="NEXT")
        document.multi_cell(0, 6, text)
    return bytes(document.output())


def encrypted_pdf(text: str) -> bytes:
    """A PDF that opens only with its password."""
    from fpdf import FPDF

    document = FPDF()
    document.set_encryption(owner_password="owner-secret", user_password="user-secret")
    document.set_font("helvetica", size=11)
    document.add_page()
    document.multi_cell(0, 6, text)
    return bytes(document.output())


def scanned_pdf(pages: int) -> bytes:
    """Pages with drawings only, no text layer: what a scanner without OCR produces."""
    from fpdf import FPDF

    document = FPDF()
    for _ in range(pages):
        document.add_page()
        document.set_fill_color(90, 90, 90)
        document.rect(20, 20, 170, 240, style="F")
    return bytes(document.output())


def corrupt_pdf() -> bytes:
    """A PDF header, then garbage: a truncated download."""
    return b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R" + bytes(range(256)) * 4


def long_pdf(pages: int, text: str) -> bytes:
    """A PDF of many identical text pages, written by hand so that thousands of pages cost
    kilobytes and milliseconds: every page shares one content stream and one font."""
    stream = (
        b"BT /F1 11 Tf 40 780 Td 14 TL "
        + b"".join(b"(" + line.encode("latin-1") + b") Tj T* " for line in _lines(text, 90))
        + b"ET"
    )
    first_page = 5
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(b"%d 0 R" % (first_page + n) for n in range(pages))
        + b"] /Count %d >>" % pages,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
    page += b"/Resources << /Font << /F1 3 0 R >> >> >>"
    objects += [page] * pages
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref,
    )  # fmt: skip
    return bytes(out)


def _lines(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line] if line else lines


def docx(sections: Sequence[tuple[str, str]], table: Sequence[Sequence[str]] = ()) -> bytes:
    """A Word document: a Heading 1 and a paragraph per section, then a table if given."""
    import docx as python_docx

    document = python_docx.Document()
    for heading, text in sections:
        document.add_heading(heading, level=1)
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for row, values in zip(grid.rows, table, strict=True):
            for cell, value in zip(row.cells, values, strict=True):
                cell.text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def docx_bomb(unpacked_mb: int) -> bytes:
    """A real DOCX with one more member that is small packed and ``unpacked_mb`` MiB unpacked
    (zeros compress a thousandfold): a zip bomb, still a few kilobytes."""
    out = io.BytesIO(docx([("Harmless", "Nothing to see here.")]))
    with (
        zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("word/media/padding.bin", "w", force_zip64=True) as member,
    ):
        for _ in range(unpacked_mb):
            member.write(bytes(2**20))
    return out.getvalue()


def docx_of_size(paragraphs: int, text: str) -> bytes:
    """A DOCX whose body is ``paragraphs`` copies of one paragraph, written straight into the
    archive: a few hundred kilobytes packed, a parse tree far larger once read."""
    base = io.BytesIO(docx([("Filler", text)]))
    paragraph = f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>".encode()
    with zipfile.ZipFile(base) as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    body = members["word/document.xml"]
    start = body.index(b"<w:body>") + len(b"<w:body>")
    members["word/document.xml"] = body[:start] + paragraph * paragraphs + body[start:]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def pptx(slides: Sequence[tuple[str, str]]) -> bytes:
    """A deck of title-and-content slides."""
    import pptx as python_pptx

    deck = python_pptx.Presentation()
    layout = deck.slide_layouts[1]
    for title, body in slides:
        slide = deck.slides.add_slide(layout)
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def pptx_with_table(title: str, rows: Sequence[Sequence[str]], grouped: str) -> bytes:
    """One slide: a title, a table, and a text box inside a group of shapes."""
    import pptx as python_pptx
    from pptx.util import Inches

    deck = python_pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[5])  # title only
    slide.shapes.title.text = title
    frame = slide.shapes.add_table(len(rows), len(rows[0]), Inches(1), Inches(2), Inches(6),
                                   Inches(2))  # fmt: skip
    for r, values in enumerate(rows):
        for c, value in enumerate(values):
            frame.table.cell(r, c).text = value
    group = slide.shapes.add_group_shape()
    box = group.shapes.add_textbox(Inches(1), Inches(5), Inches(4), Inches(1))
    box.text_frame.text = grouped
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def xlsx(sheets: dict[str, Sequence[Sequence[object]]]) -> bytes:
    """A workbook, one sheet per entry (rows, the first a header)."""
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(list(row))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def csv_file(rows: Sequence[Sequence[object]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


def markdown(sections: Sequence[tuple[str, str]]) -> bytes:
    return "\n\n".join(f"## {heading}\n\n{text}" for heading, text in sections).encode()


def html(title: str, sections: Sequence[tuple[str, str]]) -> bytes:
    body = "".join(f"<h2>{heading}</h2><p>{text}</p>" for heading, text in sections)
    page = f"<html><head><title>{title}</title><style>p {{color: red}}</style></head>"
    return (
        page + f"<body><script>var hidden = 'scriptword';</script>{body}</body></html>"
    ).encode()
