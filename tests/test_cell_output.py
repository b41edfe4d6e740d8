"""Rich output without a kernel: LaTeX and HTML conversion, file previews, the limits.

The end-to-end paths (a real kernel, over HTTP) are in test_rich_output.py; these pin the
conversions on inputs a kernel would rarely produce: malformed HTML, planted links, FIFOs,
files cut mid-character, more outputs than fit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest

from workbench.sandbox.display import IMAGE_TYPES, MAX_HTML_CHARS, TABLE_MIME, Display, choose
from workbench.sandbox.outputs import CellOutput
from workbench.sandbox.workspace_fs import file_parts, open_file
from workbench.sandbox.workspaces import FileInfo, Workspaces
from workbench.tools.cell_output import (
    PREVIEW_BYTES,
    cell_outputs,
    describe_displays,
    file_preview,
)
from workbench.tools.markup import latex_markdown, read_html
from workbench.widgets import ImageView, MarkdownView, NoteView, TextView

USER, THREAD = "alice", "thr_1"
PNG_HEAD = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


@pytest.fixture
def workspaces(tmp_path: Path) -> Workspaces:
    workspaces = Workspaces(tmp_path / "workspaces")
    workspaces.ensure(USER, THREAD)
    return workspaces


def write(workspaces: Workspaces, path: str, content: bytes) -> FileInfo:
    target = workspaces.path(USER, THREAD) / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    return FileInfo(path, len(content), target.stat().st_mtime_ns)


def preview(workspaces: Workspaces, info: FileInfo) -> object:
    return file_preview(
        info, lambda path: open_file(workspaces.path(USER, THREAD), file_parts(path)), url
    )


def url(path: str) -> str:
    return f"https://x/{path}?inline=1"


def no_file(path: str) -> int:
    raise AssertionError(f"{path} was opened")


# -- LaTeX ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("latex", "markdown"),
    [
        ("$x^2$", "$$\nx^2\n$$"),
        ("$$ E = mc^2 $$", "$$\nE = mc^2\n$$"),
        ("\\[a + b\\]", "$$\na + b\n$$"),
        ("\\(a\\)", "$$\na\n$$"),
        ("$\\displaystyle \\frac{1}{2}$", "$$\n\\displaystyle \\frac{1}{2}\n$$"),
        ("\\begin{align}a &= b\\end{align}", "$$\n\\begin{align}a &= b\\end{align}\n$$"),
        ("The area $A$ of a circle is $\\pi r^2$.", "The area $A$ of a circle is $\\pi r^2$."),
        ("$$a$$ and $$b$$", "$$a$$ and $$b$$"),  # two formulas: not one block
    ],
)
def test_latex_becomes_markdown_math(latex: str, markdown: str) -> None:
    assert latex_markdown(latex) == markdown


# -- HTML ----------------------------------------------------------------------------------


def test_pandas_html_with_a_named_index_reads_as_its_table() -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x|y", "<z>"]}).rename_axis("idx")
    content = read_html(frame.to_html(), 20)
    assert content.columns == ("", "a", "b")  # the index name's own header row is skipped
    assert content.rows == (("0", "1", "x|y"), ("1", "2", "<z>"))
    assert content.total_rows == 2


def test_malformed_html_tables_still_read() -> None:
    html = (
        "<style>td {color: red}</style><script>alert(1)</script>"
        "<table><tr><th>k<th>v<tr><td>a &amp; b<td>1<tr><td>nested<td>"
        "<table><tr><td>inner</td></tr></table></table><p>after</p>"
    )
    content = read_html(html, 20)
    assert content.columns == ("k", "v")
    assert content.rows == (("a & b", "1"), ("nested", "inner"))
    assert "alert" not in content.text and "color" not in content.text
    assert content.text.endswith("after")


def test_a_long_table_keeps_its_first_rows_and_counts_them_all_fast() -> None:
    html = pd.DataFrame({"n": range(100_000)}).to_html()[:MAX_HTML_CHARS]
    started = time.perf_counter()
    content = read_html(html, 20)
    assert time.perf_counter() - started < 1.0
    assert len(content.rows) == 20 and content.rows[0] == ("0", "0")
    assert 1000 < content.total_rows < 100_000


def test_choose_prefers_what_a_notebook_renders() -> None:
    saved: list[str] = []

    def save(payload: object, mime: str, extension: str) -> str:
        saved.append(mime)
        return f".outputs/x.{extension}"

    def pick(data: dict[str, object]) -> Display | None:
        return choose(data, result=False, max_chars=100, save=save)

    table = {"columns": ["a"], "rows": [["1"]], "shape": [1, 1]}
    assert pick({TABLE_MIME: table, "text/html": "<table/>", "text/plain": "a"}) == Display(
        TABLE_MIME, table, "a"
    )
    sympy = pick({"text/latex": "$x$", "text/plain": "x"})
    assert sympy == Display("text/latex", "$x$", "x")
    plotly = {"application/vnd.plotly.v1+json": {}, "text/html": "<div/>"}
    assert pick(plotly) == Display("application/vnd.workbench.chart", "plotly")
    assert pick({**plotly, "image/png": "AAAA"}) == Display("image/png", ".outputs/x.png")
    # An estimator's HTML card is worse than its own text; an empty repr is worse than HTML.
    assert pick({"text/html": "<div>card</div>", "text/plain": "Model()"}) == Display(
        "text/plain", "Model()"
    )
    html = pick({"text/html": "<b>hi</b>", "text/plain": "<Styler at 0x7f00>"})
    assert html == Display("text/html", "<b>hi</b>")
    assert pick({"text/markdown": "m" * 150}) == Display("text/markdown", "m" * 100, cut=True)
    assert saved == ["image/png"]


# -- file previews -------------------------------------------------------------------------


def test_an_image_file_shows_only_if_it_is_one(workspaces: Workspaces) -> None:
    assert preview(workspaces, write(workspaces, "a.png", PNG_HEAD)) == ImageView(
        url("a.png"), "a.png"
    )
    svg = b"\xef\xbb\xbf<?xml version='1.0'?>\n<svg xmlns='http://www.w3.org/2000/svg'/>"
    assert isinstance(preview(workspaces, write(workspaces, "b.svg", svg)), ImageView)
    assert preview(workspaces, write(workspaces, "fake.jpg", b"hello")) is None
    assert preview(workspaces, write(workspaces, "empty.gif", b"")) is None


def test_planted_links_and_fifos_are_not_previewed(workspaces: Workspaces, tmp_path: Path) -> None:
    secret = tmp_path / "secret.md"
    secret.write_text("# host secret")
    root = workspaces.path(USER, THREAD)
    (root / "link.md").symlink_to(secret)
    os.mkfifo(root / "pipe.log")
    started = time.perf_counter()
    assert preview(workspaces, FileInfo("link.md", 13, 0)) is None
    assert preview(workspaces, FileInfo("pipe.log", 0, 0)) is None
    assert time.perf_counter() - started < 1.0  # a FIFO is never waited on


def test_a_long_log_shows_its_last_lines_from_a_whole_character(workspaces: Workspaces) -> None:
    # The read starts PREVIEW_BYTES from the end: here, inside a three-byte character.
    line = "étape €\n"
    content = ("x" * 10 + line * (PREVIEW_BYTES // len(line.encode()) + 50)).encode()
    view = preview(workspaces, write(workspaces, "run.log", content))
    assert isinstance(view, TextView)
    assert view.text.splitlines() == ["étape €"] * 20
    assert view.note == "Showing the last 20 of more lines."
    assert "\ufffd" not in view.text


def test_markdown_json_and_text_previews(workspaces: Workspaces) -> None:
    big = ("para\n\n" * (PREVIEW_BYTES // 6 + 10)).encode()
    view = preview(workspaces, write(workspaces, "big.md", big))
    assert isinstance(view, MarkdownView) and view.title == "big.md"
    assert view.note == "The first 64 KB of the file." and len(view.markdown) <= PREVIEW_BYTES
    assert preview(workspaces, write(workspaces, "bad.json", b"{not json")) == TextView(
        "bad.json", "{not json"
    )
    assert preview(workspaces, write(workspaces, "data.json", b'{"a":1}')) == TextView(
        "data.json", '{\n  "a": 1\n}'
    )
    lines = preview(
        workspaces, write(workspaces, "n.txt", b"".join(b"%d\n" % i for i in range(30)))
    )
    assert lines == TextView(
        "n.txt", "\n".join(map(str, range(20))), "Showing the first 20 of 30 lines."
    )
    assert preview(workspaces, write(workspaces, "bin.txt", b"a\0b")) is None
    assert preview(workspaces, write(workspaces, "x.parquet", b"PAR1")) is None


# -- limits and the model's summary --------------------------------------------------------


def test_limits_count_what_is_left_out_and_read_nothing_past_them(
    workspaces: Workspaces,
) -> None:
    output = CellOutput(
        displays=[Display("image/png", f".outputs/{i}.png") for i in range(3)]
        + [Display("text/markdown", f"part {i}") for i in range(3)],
        displays_dropped=2,
    )
    changed = [write(workspaces, "a.png", PNG_HEAD), write(workspaces, "b.md", b"# b")]
    opened: list[str] = []

    def opening(path: str) -> int:
        opened.append(path)
        return open_file(workspaces.path(USER, THREAD), file_parts(path))

    views = cell_outputs(output, changed, open_file=opening, url=url, max_outputs=4,
                         max_images=2)  # fmt: skip
    assert views == [
        ImageView(url(".outputs/0.png"), "Figure"), ImageView(url(".outputs/1.png"), "Figure"),
        MarkdownView("part 0"), MarkdownView("part 1"),
        NoteView("2 more images not shown inline (at most 2 per cell)."),
        NoteView("4 more outputs not shown (at most 4 per cell)."),
    ]  # fmt: skip
    assert opened == []  # no room left for the files: neither was read

    no_images = cell_outputs(output, changed, open_file=opening, url=url, max_outputs=20,
                             max_images=0)  # fmt: skip
    assert [type(view) for view in no_images] == [MarkdownView] * 4 + [NoteView, NoteView]
    assert opened == ["b.md"]


def test_the_summary_stops_describing_at_its_limit() -> None:
    output = CellOutput(
        displays=[Display("text/markdown", "m" * 2000) for _ in range(10)]
        + [Display("image/png", ".outputs/a.png")]
    )
    parts = describe_displays(output, 5000)
    assert len(parts) == 4 + 2  # told until past 5000 characters, then counted
    assert parts[0].startswith("Markdown shown to the user:\n" + "m" * 1500 + " […]")
    assert parts[-2:] == ["figures shown to the user: .outputs/a.png",
                          "[6 more displays not described here]"]  # fmt: skip
    assert set(IMAGE_TYPES) >= {"image/gif", "image/webp"}
