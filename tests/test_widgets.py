"""The Python cell and file list widgets: valid ChatKit widgets for any data, streaming included."""

from __future__ import annotations

import itertools
import json
import re
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from chatkit.server import diff_widget
from chatkit.types import (
    ThreadItem,
    WidgetItem,
    WidgetRootUpdated,
    WidgetStreamingTextValueDelta,
)
from chatkit.widgets import DynamicWidgetRoot, StrictWidgetRoot
from pydantic import TypeAdapter

from workbench.widgets import (
    CODE_COMPONENT_ID,
    CODE_STREAM_PREFIX,
    CellStatus,
    CellView,
    ErrorView,
    FileView,
    ImageView,
    MarkdownView,
    NoteView,
    TextView,
    csv_table_view,
    escape_markdown,
    fenced,
    file_list_widget,
    format_duration,
    format_size,
    markdown_table,
    python_cell_data,
    python_cell_widget,
    table_view,
    template,
    widgets_dir,
)

ITEM = TypeAdapter[ThreadItem](ThreadItem)
STRICT = TypeAdapter[Any](StrictWidgetRoot)
STATUSES: tuple[CellStatus, ...] = typing.get_args(CellStatus)
HOSTILE = (
    'He said "hi" \\ C:\\temp\\new\n{{ 7 * 7 }} {% raw %} {# x #} </script><script>alert(1)'
    "</script> ``` | a | b | \x00 \u2028 \U0001f600 ${x} [link](javascript:x) <b>&amp;</b>"
)
URL = "https://chat.example.com/files/workspaces/thr_1/plot.png?inline=1&exp=1&sig=abc"


def components(node: Any) -> list[dict[str, Any]]:
    """Every component of a dumped widget, depth first."""
    found = [node]
    for child in node.get("children") or []:
        found += components(child)
    return found


def by_id(widget: DynamicWidgetRoot, component_id: str) -> dict[str, Any]:
    matches = [c for c in components(widget.model_dump()) if c.get("id") == component_id]
    assert len(matches) == 1
    return matches[0]


def markdown_values(widget: DynamicWidgetRoot) -> list[str]:
    return [c["value"] for c in components(widget.model_dump()) if c["type"] == "Markdown"]


def texts(widget: DynamicWidgetRoot) -> list[str]:
    return [
        c.get("value") or c.get("label") or c.get("src") or ""
        for c in components(widget.model_dump())
    ]


def without_nulls(value: Any) -> Any:
    # Dynamic components dump `"children": null`, strict ones omit it: the same widget.
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def assert_valid_widget(widget: DynamicWidgetRoot) -> dict[str, Any]:
    """Valid against the SDK's strict component models, and survives the item round trip."""
    dumped = widget.model_dump(mode="json")
    STRICT.validate_python(dumped)  # every component type and prop is one ChatKit knows
    item = WidgetItem(id="msg_1", thread_id="thr_1", created_at=datetime.now(), widget=widget)
    wire = item.model_dump_json()
    again = ITEM.validate_json(wire)
    assert isinstance(again, WidgetItem)
    assert without_nulls(json.loads(again.model_dump_json())) == without_nulls(json.loads(wire))
    return dumped


def full_view(status: CellStatus = "done", text: str = "x") -> CellView:
    return CellView(
        code=f"print({text!r})",
        status=status,
        duration_seconds=1.25,
        stdout=f"out {text}\n",
        stderr=f"warn {text}\n",
        outputs=[
            TextView("result", f"'{text}'"),
            MarkdownView(f"**md {text}**", f"notes {text}.md", f"note {text}"),
            ImageView(URL, f"figure {text}"),
            table_view(f"table {text}", ["a", text], [[1, text], [2, None]]),
            NoteView(f"chart {text}"),
        ],
        files=[FileView(f"out/{text}.csv", URL.replace("plot.png", "out.csv"), 2048)],
        error=ErrorView("ValueError", f"bad {text}", f"Traceback\n  {text}\nValueError"),
    )


# -- every state ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", STATUSES)
def test_every_status_renders_a_valid_widget(status: CellStatus) -> None:
    widget = python_cell_widget(full_view(status))
    dumped = assert_valid_widget(widget)

    assert dumped["type"] == "Card"
    badge = next(c for c in components(dumped) if c["type"] == "Badge")
    assert badge["label"] == {
        "writing": "Writing", "running": "Running", "done": "Done", "error": "Error",
        "timed_out": "Timed out", "stopped": "Stopped",
    }[status]  # fmt: skip
    finished = status not in {"writing", "running"}
    assert ("1.2 s" in texts(widget)) is finished
    code = by_id(widget, CODE_COMPONENT_ID)
    assert code["type"] == "Markdown"
    assert code["streaming"] is (status == "writing")


@pytest.mark.parametrize("status", STATUSES)
def test_template_data_matches_the_templates_schema(status: CellStatus) -> None:
    schema = template("python_cell").data_schema
    jsonschema.validate(python_cell_data(full_view(status)), schema)
    jsonschema.validate(python_cell_data(CellView(status=status)), schema)


def test_minimal_cell_has_only_header_and_code() -> None:
    widget = python_cell_widget(CellView())
    dumped = assert_valid_widget(widget)
    assert [c["type"] for c in dumped["children"]] == ["Row", "Markdown"]
    assert by_id(widget, CODE_COMPONENT_ID)["value"] == CODE_STREAM_PREFIX


def test_full_cell_shows_every_part() -> None:
    widget = python_cell_widget(full_view("error"))
    shown = "\n".join(texts(widget))
    for expected in [
        "Python", "Error", "```python\nprint('x')\n```", "out x", "warn x", "'x'",
        URL, "table x", "2 rows × 2 columns", "[out/x.csv](https://chat.example.com/",
        "2.0 KB", "ValueError: bad x", "Traceback", "**md x**", "notes x.md", "note x",
        "chart x",
    ]:  # fmt: skip
        assert expected in shown, expected
    image = next(c for c in components(widget.model_dump()) if c["type"] == "Image")
    assert without_nulls(image) == {
        "type": "Image", "src": URL, "alt": "figure x", "fit": "contain", "frame": True,
        "radius": "md", "width": "100%", "maxHeight": 480,
    }  # fmt: skip


# -- streaming the code --------------------------------------------------------------------


def test_code_streams_as_appends_to_the_code_component() -> None:
    before = python_cell_widget(CellView(code="import pan", status="writing"))
    after = python_cell_widget(
        CellView(code='import pandas as pd\nprint("{{x}}")', status="writing")
    )

    assert by_id(before, "code") == {
        "type": "Markdown", "id": "code", "value": "```python\nimport pan", "streaming": True,
        "children": None,
    }  # fmt: skip
    # Exactly what the server sends while the model writes: a text delta on "code", nothing else.
    assert diff_widget(before, after) == [
        WidgetStreamingTextValueDelta(
            component_id="code", delta='das as pd\nprint("{{x}}")', done=False
        )
    ]
    # Appending the delta to the streamed value gives the next state's value.
    assert (
        by_id(before, "code")["value"] + 'das as pd\nprint("{{x}}")'
        == (by_id(after, "code")["value"])
    )


def test_writing_then_running_then_done_are_valid_transitions() -> None:
    states = [
        python_cell_widget(CellView(code="x = 1", status="writing")),
        python_cell_widget(CellView(code="x = 1\nx", status="writing")),
        python_cell_widget(CellView(code="x = 1\nx", status="running")),
        python_cell_widget(
            CellView(
                code="x = 1\nx",
                status="done",
                duration_seconds=0.01,
                outputs=[TextView("result", "1")],
            )
        ),
    ]
    updates = [diff_widget(a, b) for a, b in itertools.pairwise(states)]
    assert isinstance(updates[0][0], WidgetStreamingTextValueDelta)
    assert all(isinstance(u[0], WidgetRootUpdated) for u in updates[1:])
    assert by_id(states[-1], "code") == {
        "type": "Markdown", "id": "code", "value": "```python\nx = 1\nx\n```", "streaming": False,
        "children": None,
    }  # fmt: skip


def test_code_with_backticks_gets_a_longer_fence_when_final() -> None:
    code = 'doc = """\n```python\nx\n````\n"""'
    value = by_id(python_cell_widget(CellView(code=code, status="done")), "code")["value"]
    assert value == f"`````python\n{code}\n`````"


# -- hostile values ------------------------------------------------------------------------


@pytest.mark.parametrize("status", STATUSES)
def test_hostile_strings_render_exactly(status: CellStatus) -> None:
    view = full_view(status, HOSTILE)
    widget = python_cell_widget(view)
    assert_valid_widget(widget)
    shown = "\n".join(texts(widget))

    code = by_id(widget, "code")["value"]
    if status == "writing":
        assert code == CODE_STREAM_PREFIX + view.code
    else:
        assert code == fenced(view.code, "python")
    assert f"out {HOSTILE}" in shown
    assert f"warn {HOSTILE}" in shown
    assert f"ValueError: bad {HOSTILE}" in texts(widget)
    assert f"figure {HOSTILE}" in [c.get("alt") for c in components(widget.model_dump())]
    assert f"table {HOSTILE}" in texts(widget)
    assert f"**md {HOSTILE}**" in markdown_values(widget)  # Markdown from a cell stays whole
    assert f"notes {HOSTILE}.md" in texts(widget)
    assert f"chart {HOSTILE}" in texts(widget)
    assert "49" not in shown  # "{{ 7 * 7 }}" was data, never evaluated


def test_hostile_file_names_stay_inside_their_link() -> None:
    files = [FileView("a](http://evil)[b", URL, 1), FileView("x\\]y", URL, 2)]
    widget = file_list_widget(files, note=HOSTILE)
    assert_valid_widget(widget)
    links = markdown_values(widget)
    assert links == [
        f"[a\\](http://evil)\\[b]({URL})",
        f"[x\\\\\\]y]({URL})",
    ]
    assert HOSTILE in texts(widget)


def test_100_kb_of_output_is_truncated_with_a_note() -> None:
    output = "".join(f'line {i:06d} \\ "quoted" {{{{x}}}}\n' for i in range(3500))
    assert len(output) > 100_000
    view = CellView(
        code="spam()", status="done", stdout=output, stderr=output,
        outputs=[TextView("result", output)],
    )  # fmt: skip

    widget = python_cell_widget(view)

    assert_valid_widget(widget)
    assert len(widget.model_dump_json()) < 20_000
    captions = [c["value"] for c in components(widget.model_dump()) if c["type"] == "Caption"]
    notes = [c for c in captions if c.startswith("Showing the first")]
    assert len(notes) == 3
    assert f"of {len(output):,} characters" in notes[0]
    stdout = next(v for v in markdown_values(widget) if "line 000000" in v)
    assert "line 003499" in stdout  # the tail is kept too
    assert "characters not shown" in stdout
    assert stdout.startswith("```text\n") and stdout.endswith("\n```")


def test_outputs_show_in_the_order_the_cell_made_them() -> None:
    view = CellView(
        code="report()", status="done",
        outputs=[
            MarkdownView("## First"), ImageView(URL, "one"), TextView("output", "between"),
            MarkdownView("## Second"), ImageView(URL + "2", "two"), NoteView("a chart"),
        ],
    )  # fmt: skip
    dumped = assert_valid_widget(python_cell_widget(view))
    shown = [
        c.get("alt") or c.get("value") for c in components(dumped)
        if c["type"] in {"Markdown", "Image"} or (c["type"] == "Text" and c["value"] == "a chart")
    ][1:]  # fmt: skip
    assert shown == ["## First", "one", "```text\nbetween\n```", "## Second", "two", "a chart"]


def test_long_markdown_is_cut_at_a_line_with_a_note_and_cannot_spill() -> None:
    # An unclosed fence and a huge table: the cut keeps it inside its own component.
    markdown = "```python\n" + "".join(f"| {i} | {'x' * 50} |\n" for i in range(2000))
    view = CellView(
        code="x", status="done", outputs=[MarkdownView(markdown), TextView("output", "after")]
    )
    widget = python_cell_widget(view)
    assert_valid_widget(widget)
    [shown] = [v for v in markdown_values(widget) if v.startswith("```python\n|")]
    assert len(shown) <= 4000 and shown.endswith("|")  # ends at a line
    captions = [c["value"] for c in components(widget.model_dump()) if c["type"] == "Caption"]
    assert f"Showing the first {len(shown):,} of {len(markdown):,} characters." in captions
    assert "```text\nafter\n```" in markdown_values(widget)  # the next output is its own


def test_traceback_is_short_and_without_colours() -> None:
    frames = "\n".join(f"\x1b[0;32mFile\x1b[0m frame_{i}" for i in range(40))
    error = ErrorView("ZeroDivisionError", "division by zero", frames + "\nZeroDivisionError")
    widget = python_cell_widget(CellView(code="1/0", status="error", error=error))
    traceback = next(v for v in markdown_values(widget) if "frame_" in v)
    assert "\x1b" not in traceback
    assert "frame_39" in traceback
    assert "frame_0\n" not in traceback
    assert "lines not shown" in traceback
    assert "ZeroDivisionError: division by zero" in texts(widget)


# -- tables --------------------------------------------------------------------------------


def unescaped_pipes(line: str) -> int:
    count, escaped = 0, False
    for char in line:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "|":
            count += 1
    return count


def test_markdown_table_escapes_pipes_and_newlines() -> None:
    table = markdown_table(
        ["name", "a|b", "notes"],
        [
            ["x|y", "multi\nline\r\nvalue", None],
            ["back\\slash|", "*bold* _it_ `code` <b>", 3.5],
            ["short row"],
            ["too", "many", "cells", "here"],
        ],
    )
    lines = table.split("\n")
    assert len(lines) == 6
    assert {unescaped_pipes(line) for line in lines} == {4}
    assert lines[0] == "| name | a\\|b | notes |"
    assert lines[1] == "| --- | --- | --- |"
    assert lines[2] == "| x\\|y | multi\\\\nline\\\\nvalue |  |"
    assert lines[3] == "| back\\\\slash\\| | \\*bold\\* \\_it\\_ \\`code\\` \\<b\\> | 3.5 |"
    assert lines[4] == "| short row |  |  |"
    assert lines[5] == "| too | many | cells |"


def test_long_cells_are_shortened() -> None:
    table = markdown_table(["c"], [["x" * 500]], cell_chars=20)
    assert table.split("\n")[2] == "| " + "x" * 19 + "… |"


def test_table_view_caption_and_limits() -> None:
    rows = [[i, i * 2] for i in range(30)]
    preview = table_view("df", ["a", "b"], rows, total_rows=1000, total_columns=40)
    assert preview.caption == "1,000 rows × 40 columns (showing 20 × 2)"
    assert len(preview.markdown.split("\n")) == 2 + 20
    one = table_view("one", ["only"], [["x"]])
    assert one.caption == "1 row × 1 column"
    assert table_view("empty", [], []).caption == "0 rows × 0 columns"
    assert markdown_table([], []) == "|  |\n| --- |"


def test_csv_preview_parses_quotes_and_embedded_newlines() -> None:
    text = 'city,"note, with comma"\n"New\nYork","a|b"\nParis,x\n'
    preview = csv_table_view("cities.csv", text)
    assert preview.caption == "2 rows × 2 columns"
    assert preview.markdown.split("\n")[2] == "| New\\\\nYork | a\\|b |"
    assert csv_table_view("empty.csv", "").caption == "0 rows × 0 columns"


# -- file list, formatting, templates ------------------------------------------------------


def test_file_list_widget() -> None:
    files = [FileView("a.csv", URL, 10), FileView("b.png", URL, 5 * 1024 * 1024)]
    widget = file_list_widget(files, title="Workspace")
    assert_valid_widget(widget)
    assert "Workspace" in texts(widget)
    assert "2 files, 5.0 MB" in texts(widget)
    assert "10 bytes" in texts(widget)
    assert markdown_values(widget) == [f"[a.csv]({URL})", f"[b.png]({URL})"]
    empty = file_list_widget([])
    assert_valid_widget(empty)
    assert "no files" in texts(empty)
    jsonschema.validate(
        {"title": "t", "summary": "s", "files": [], "note": None},
        template("file_list").data_schema,
    )


def test_formatting_helpers() -> None:
    assert escape_markdown("a*b_c[d]|e\\f") == "a\\*b\\_c\\[d\\]\\|e\\\\f"
    assert format_size(0) == "0 bytes"
    assert format_size(1) == "1 byte"
    assert format_size(1536) == "1.5 KB"
    assert format_size(3 * 1024**3) == "3.0 GB"
    assert format_duration(0.0123) == "12 ms"
    assert format_duration(12.34) == "12.3 s"
    assert format_duration(125) == "2 min 5 s"
    assert fenced("") == "```\n```"
    assert fenced("a\n", "py") == "```py\na\n```"


def test_templates_come_from_the_repository_widgets_dir() -> None:
    repository = Path(__file__).resolve().parents[1]
    assert widgets_dir() == repository / "widgets"
    for name in ("python_cell", "file_list"):
        payload = json.loads((repository / "widgets" / f"{name}.widget").read_text())
        assert payload["version"] == "1.0"
        assert payload["name"] == name
        assert template(name).name == name
        # Every value goes through tojson (or the macro that applies it): nothing reaches
        # the JSON unescaped.
        interpolations = re.findall(r"\{\{(.*?)\}\}", payload["template"])
        assert interpolations
        for expr in interpolations:
            assert expr.strip().endswith("| tojson") or expr.strip().startswith("output("), expr
    with pytest.raises(LookupError, match="no widget template"):
        template("missing")
    pyproject = (repository / "pyproject.toml").read_text()
    assert '"widgets" = "workbench/widgets"' in pyproject
