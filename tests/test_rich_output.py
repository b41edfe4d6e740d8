"""Rich cell output end to end: real bubblewrap kernels, over HTTP, through the demo model.

What a cell displays (Markdown, LaTeX, HTML tables, SVG, images, JSON, interactive charts)
and the files it writes (images, Markdown, text, JSON, logs) show in the cell widget the way a
notebook would show them; the demo model's reply quotes what the model was told of them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from chatkit.types import AssistantMessageItem

from tests.live import LiveServer, list_items, running
from tests.test_workspace import (
    LINK,
    SANDBOX_PROBLEM,
    code_of,
    components,
    final_cell,
    markdown_of,
    reply_of,
    run_turn,
    status_of,
    widget_of,
    workspace_settings,
)
from workbench.config import Settings

pytestmark = pytest.mark.skipif(
    SANDBOX_PROBLEM is not None, reason=f"no bubblewrap sandbox here: {SANDBOX_PROBLEM}"
)

PNG = (  # 1 × 1 pixels, base64
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20"><circle r="9"/></svg>'
MAGIC = {
    "image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff", "image/gif": b"GIF8",
    "image/webp": b"RIFF", "image/svg+xml": b"<svg",
}  # fmt: skip


async def cell(http: httpx.AsyncClient, live: LiveServer, code: str) -> tuple[dict[str, Any], str]:
    """Run ``code`` in a new thread: the final widget, and what the model was told."""
    _, events = await run_turn(http, live, code)
    widget = widget_of(final_cell(events))
    assert status_of(widget) == "Done", markdown_of(widget)
    return widget, reply_of(events)


def of_type(widget: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [c for c in components(widget) if c["type"] == kind]


def outputs_of(widget: dict[str, Any]) -> list[str]:
    """What the widget shows after the code, in order: an image's alt, a text's value."""
    shown = [
        c["alt"] if c["type"] == "Image" else str(c["value"])
        for c in components(widget)
        if c["type"] in {"Image", "Markdown", "Text", "Caption"}
    ]
    return shown[shown.index(code_of(widget)) + 1 :]


async def fetched_image(http: httpx.AsyncClient, src: str, mime: str) -> bytes:
    assert {"exp", "sig", "inline"} <= dict(parse_qsl(urlsplit(src).query)).keys()
    response = await http.get(src)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == mime
    assert response.headers["content-disposition"].startswith("inline")
    assert response.content.startswith(MAGIC[mime])
    return response.content


# -- files the cell writes ------------------------------------------------------------------


async def test_a_savefig_png_shows_inline_and_in_the_file_list(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [3, 1, 2])\n"
        "plt.savefig('plot.png')\n"
        "plt.close()\n"
    )
    widget, reply = await cell(http, live, code)
    [image] = of_type(widget, "Image")
    assert image["alt"] == "plot.png"
    assert urlsplit(image["src"]).path.endswith("/plot.png")
    assert len(await fetched_image(http, image["src"], "image/png")) > 1000
    assert [m["name"] for m in LINK.finditer(markdown_of(widget))] == ["plot.png"]
    assert "plot.png (" in reply


async def test_images_written_with_pil_show_inline_and_impostors_do_not(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    code = (
        "from PIL import Image\n"
        "picture = Image.new('RGB', (40, 30), (200, 30, 30))\n"
        "picture.save('photo.jpg')\n"
        "picture.save('anim.gif')\n"
        "picture.save('pic.webp')\n"
        f"open('drawing.svg', 'w').write({SVG!r})\n"
        "open('fake.png', 'w').write('not an image at all')\n"
    )
    widget, _ = await cell(http, live, code)
    images = {image["alt"]: image["src"] for image in of_type(widget, "Image")}
    assert sorted(images) == ["anim.gif", "drawing.svg", "photo.jpg", "pic.webp"]
    for name, mime in [("anim.gif", "image/gif"), ("drawing.svg", "image/svg+xml"),
                       ("photo.jpg", "image/jpeg"), ("pic.webp", "image/webp")]:  # fmt: skip
        await fetched_image(http, images[name], mime)
    files = [m["name"] for m in LINK.finditer(markdown_of(widget))]
    assert files == ["anim.gif", "drawing.svg", "fake.png", "photo.jpg", "pic.webp"]


async def test_written_markdown_text_json_and_log_files_are_previewed(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    report = "# Results\n\n**42** runs, a | pipe and `code`.\n"
    code = (
        f"open('report.md', 'w').write({report!r})\n"
        "import json\n"
        "json.dump({'name': 'ada', 'scores': [1, 2]}, open('data.json', 'w'))\n"
        "open('run.log', 'w').write(''.join(f'step {i}\\n' for i in range(100)))\n"
        "open('notes.txt', 'w').write('first line\\nsecond line\\n')\n"
        "open('blob.txt', 'wb').write(b'\\x00\\x01binary')\n"
    )
    widget, reply = await cell(http, live, code)
    log = "".join(f"step {i}\n" for i in range(80, 100))
    files = ["blob.txt", "data.json", "notes.txt", "report.md", "run.log"]
    links = [m["name"] for m in LINK.finditer(markdown_of(widget))]
    assert links == files
    # In path order, after the cell's result (the last write's count); blob.txt is binary:
    # listed, not previewed.
    assert outputs_of(widget)[: -len(files) * 2 - 1] == [
        "result", "```text\n8\n```",
        "data.json", '```text\n{\n  "name": "ada",\n  "scores": [\n    1,\n    2\n  ]\n}\n```',
        "notes.txt", "```text\nfirst line\nsecond line\n```",
        "report.md", report,  # rendered as the Markdown it is
        "run.log", f"```text\n{log}```", "Showing the last 20 of 100 lines.",
    ]  # fmt: skip
    assert "report.md (" in reply


# -- what the cell displays ------------------------------------------------------------------


async def test_display_markdown_renders_as_markdown_and_the_model_reads_it(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    code = "from IPython.display import Markdown, display\ndisplay(Markdown('**x**'))\n"
    widget, reply = await cell(http, live, code)
    assert outputs_of(widget) == ["**x**"]
    assert "Markdown shown to the user:\n**x**" in reply
    assert "IPython.core.display" not in str(widget) + reply


async def test_latex_html_tables_svg_json_and_text_display_in_order(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    code = (
        "from IPython.display import HTML, JSON, SVG, Latex, Markdown, Math, display\n"
        "import pandas as pd\n"
        "df = pd.DataFrame({'city': ['Oslo', 'Lima'], 'temp': [4, 19]})\n"
        "display(Markdown('## Report'))\n"
        "display(Math(r'\\frac{a}{b}'))\n"
        "display(Latex('$$E = mc^2$$'))\n"
        "display(HTML(df.to_html(index=False)))\n"
        "display(df.style.highlight_max())\n"
        "display(HTML('<p>Hello <b>world</b></p><script>alert(1)</script>'))\n"
        f"display(SVG({SVG!r}))\n"
        "display(JSON({'a': [1, 2]}))\n"
        "display('plain')\n"
        "import sympy\n"
        "sympy.sqrt(sympy.Symbol('x')) / 2\n"
    )
    widget, reply = await cell(http, live, code)
    shown = outputs_of(widget)
    styler_table = "|  | city | temp |\n| --- | --- | --- |\n| 0 | Oslo | 4 |\n| 1 | Lima | 19 |"
    assert shown == [
        "## Report",
        "$$\n\\displaystyle \\frac{a}{b}\n$$",
        "$$\nE = mc^2\n$$",
        "HTML table", "| city | temp |\n| --- | --- |\n| Oslo | 4 |\n| Lima | 19 |",
        "2 rows × 2 columns",
        "HTML table", styler_table, "2 rows × 3 columns",
        "HTML, as text", "```text\nHello world\n```",
        "Figure",
        "JSON", '```text\n{\n  "a": [\n    1,\n    2\n  ]\n}\n```',
        "output", "```text\n'plain'\n```",
        "$$\n\\displaystyle \\frac{\\sqrt{x}}{2}\n$$",
    ]  # fmt: skip
    [svg] = of_type(widget, "Image")
    assert await fetched_image(http, svg["src"], "image/svg+xml") == SVG.encode()
    assert "LaTeX shown to the user:\n$\\displaystyle \\frac{a}{b}$" in reply
    assert "HTML table shown to the user: 2 rows (city, temp)" in reply
    assert "(as text: sqrt(x)/2)" in reply
    assert "output:\n'plain'" in reply
    assert not any("alert" in value for value in shown)


async def test_interactive_charts_fall_back_to_their_image_or_a_note(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    # plotly and altair are not installed in the kernel: objects that display what they do.
    code = (
        "from IPython.display import display\n"
        "class Figure:\n"
        "    def __init__(self, bundle): self.bundle = bundle\n"
        "    def _repr_mimebundle_(self, include=None, exclude=None): return self.bundle\n"
        "spec = {'data': [{'type': 'bar', 'y': [1, 2]}]}\n"
        "display(Figure({'application/vnd.plotly.v1+json': spec, 'text/html': '<div>p</div>'}))\n"
        "display(Figure({'application/vnd.vegalite.v5+json': {'mark': 'bar'}}))\n"
        f"display(Figure({{'application/vnd.plotly.v1+json': spec, 'image/png': {PNG!r}}}))\n"
    )
    widget, reply = await cell(http, live, code)
    shown = outputs_of(widget)
    assert len(shown) == 3 and shown[2] == "Figure"
    assert shown[0].startswith("A Plotly figure is interactive and came without a static image")
    assert "fig.write_image('chart.png')" in shown[0]
    assert shown[1].startswith("An Altair (Vega-Lite) chart is interactive")
    [image] = of_type(widget, "Image")
    await fetched_image(http, image["src"], "image/png")
    assert shown[0] in reply and shown[1] in reply
    assert not any("<div>" in value for value in shown)


async def test_storable_whatever_the_cell_displays(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    # Postgres refuses NUL, so it must not reach the saved item (a kernel cannot send lone
    # surrogates: its JSON encoder refuses them). A bundle that lies about being an image
    # shows nothing.
    code = (
        "print('out\\x00put')\n"
        "from IPython.display import Markdown, display\n"
        "display(Markdown('a\\x00b'))\n"
        "display({'image/png': 'not base64!'}, raw=True)\n"
        "open('n\\x01ul.md', 'w').write('# c')\n"
        "raise ValueError('bad\\x00value')\n"
    )
    _, events = await run_turn(http, live, code)
    thread_id = events[0].thread.id
    items = await list_items(http, live.url, thread_id)
    saved = [item for item in items if item.type == "widget"]
    assert len(saved) == 1
    shown = outputs_of(widget_of(saved[0]))
    assert shown[:5] == ["stdout", "```text\nout\ufffdput\n```", "a\ufffdb", "n\x01ul.md", "# c"]
    assert "ValueError: bad\ufffdvalue" in shown
    # Streamed as the cell printed it; saved (the reply quoting it too) cleaned.
    assert "\x00" in reply_of(events)
    [reply] = [item for item in items if isinstance(item, AssistantMessageItem)]
    assert "\x00" not in reply.content[0].text and "out\ufffdput" in reply.content[0].text


async def test_outputs_beyond_the_limits_are_counted_in_notes(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    code = (
        "from IPython.display import Image, Markdown, display\n"
        "import base64\n"
        f"for i in range(3): display(Image(data=base64.b64decode({PNG!r})))\n"
        "for i in range(3): display(Markdown(f'part {i}'))\n"
    )
    limited = workspace_settings(settings, cell_images=2, cell_outputs=4)
    with running(LiveServer(limited)) as live:
        widget, reply = await cell(http, live, code)
    assert outputs_of(widget) == [
        "Figure", "Figure", "part 0", "part 1",
        "1 more image not shown inline (at most 2 per cell).",
        "1 more output not shown (at most 4 per cell).",
    ]  # fmt: skip
    assert "part 2" in reply  # the model hears of everything
    assert reply.count(".outputs/") == 3
