"""The file tools (list/read/write/delete in a thread's workspace): behaviour, limits and every
way out of the workspace we could think of; then one turn over HTTP with a scripted model."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx
import pytest
from agents.tool_context import ToolContext
from chatkit.types import (
    ProgressUpdateEvent,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadMetadata,
    WidgetItem,
    WorkflowItem,
)

from tests.live import (
    LiveServer,
    ScriptedOpenAI,
    create_thread,
    list_items,
    provider_settings,
    responses_step,
    running,
    stream_events,
    title_step,
)
from workbench.agent.response_events import FunctionCall, Text
from workbench.config import Settings
from workbench.context import RequestContext
from workbench.files.downloads import workspace_file_path
from workbench.files.signing import SignatureStatus, UrlSigner
from workbench.plugins import TurnContext
from workbench.sandbox import workspace_ops
from workbench.sandbox.workspace_fs import WorkspaceError, workspace_parts
from workbench.sandbox.workspaces import Workspaces
from workbench.store import PostgresStore
from workbench.tools import files as file_tools
from workbench.tools.file_texts import READ_LINE_CHARS
from workbench.tools.files import FileTools

BASE_URL = "http://files.test"
LINK = re.compile(r"\[(?P<name>(?:\\.|[^\]])+)\]\((?P<url>[^)\s]+)\)")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(64)


@dataclass
class Harness:
    tools: FileTools
    signer: UrlSigner
    workspaces: Workspaces
    context: TurnContext
    owner: str
    thread_id: str
    ws: Path  # this thread's workspace
    other_ws: Path  # another thread's (same user), with a secret
    outside: Path  # a folder outside every workspace, with bait

    def events(self) -> list[Any]:
        """Every event the tools streamed since the last call."""
        drained = []
        queue = self.context._events
        while not queue.empty():
            drained.append(queue.get_nowait())
        return drained

    def write(self, relative: str, data: bytes | str) -> Path:
        target = self.ws / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            target.write_text(data)
        else:
            target.write_bytes(data)
        return target

    def check_link(self, url: str) -> str:
        """The workspace path a link downloads (after checking its signature)."""
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == BASE_URL
        path = unquote(parts.path)
        prefix = workspace_file_path(self.thread_id, "")
        assert path.startswith(prefix)
        query = dict(parse_qsl(parts.query))
        status = self.signer.check(path, self.owner, query.pop("exp"), query.pop("sig"), query)
        assert status is SignatureStatus.VALID
        return path[len(prefix) :]

    def outside_untouched(self) -> None:
        assert sorted(p.name for p in self.outside.iterdir()) == ["bait.txt", "sub"]
        assert (self.outside / "bait.txt").read_text() == "BAIT"
        assert sorted(p.name for p in self.other_ws.iterdir()) == ["secret.txt"]
        assert (self.other_ws / "secret.txt").read_text() == "OTHER THREAD SECRET"


def make_context(store: PostgresStore, owner: str, thread_id: str) -> TurnContext:
    thread = ThreadMetadata(id=thread_id, created_at=datetime.now())
    return TurnContext(thread=thread, store=store, request_context=RequestContext(owner, BASE_URL))


@pytest.fixture
def h(tmp_path: Path, store: PostgresStore) -> Harness:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    workspaces = Workspaces(settings.data_dir / "workspaces")
    signer = UrlSigner(secrets.token_bytes(32), 3600)
    owner, thread_id = f"user_{secrets.token_hex(4)}", f"thr_{secrets.token_hex(6)}"
    ws = workspaces.ensure(owner, thread_id)
    other_ws = workspaces.ensure(owner, "thr_other")
    (other_ws / "secret.txt").write_text("OTHER THREAD SECRET")
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "bait.txt").write_text("BAIT")
    return Harness(
        FileTools(workspaces, signer, settings), signer, workspaces,
        make_context(store, owner, thread_id), owner, thread_id, ws, other_ws, outside,
    )  # fmt: skip


def widgets(events: list[Any]) -> list[WidgetItem]:
    done = [e.item for e in events if isinstance(e, ThreadItemDoneEvent)]
    return [item for item in done if isinstance(item, WidgetItem)]


def widget_links(h: Harness, item: WidgetItem) -> dict[str, str]:
    """Link label -> the workspace path it downloads."""
    data = item.widget.model_dump(mode="json", exclude_none=True)
    values: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Markdown":
                values.append(node["value"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    result = {}
    for value in values:
        for match in LINK.finditer(value):
            label = re.sub(r"\\(.)", r"\1", match["name"])
            result[label] = h.check_link(match["url"])
    return result


def exists(path: Path) -> bool:
    """Whether ``path`` exists, a dangling link included."""
    return os.path.lexists(path)


def passwd_intact() -> bool:
    return Path("/etc/passwd").read_text().startswith("root:")


def progress(events: list[Any]) -> list[str]:
    return [e.text for e in events if isinstance(e, ProgressUpdateEvent)]


# -- paths as text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        (".", ()),
        ("", ()),
        ("/workspace", ()),
        ("/workspace/", ()),
        ("/workspace/data/a.csv", ("data", "a.csv")),
        ("./data//a.csv", ("data", "a.csv")),
        ("data\\a.csv", ("data", "a.csv")),
        ("..data/a..b", ("..data", "a..b")),
    ],
)
def test_paths_inside_are_accepted(path: str, parts: tuple[str, ...]) -> None:
    assert workspace_parts(path) == parts


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("..", "'..' is not allowed"),
        ("../thr_other/secret.txt", "'..' is not allowed"),
        ("data/../../x", "'..' is not allowed"),
        ("..\\x", "'..' is not allowed"),
        ("/etc/passwd", "outside the workspace"),
        ("/workspace/../etc/passwd", "'..' is not allowed"),
        ("/workspaces/x", "outside the workspace"),
        ("//etc/passwd", "outside the workspace"),
        ("a\0b", "NUL"),
        ("x" * 256, "at most 255 bytes"),
        ("é" * 128, "at most 255 bytes"),
        ("/".join(["d" * 200] * 25), "too long"),
        ("\ud800.txt", "not a valid file name"),
    ],
)
def test_paths_outside_are_refused_with_a_reason(path: str, message: str) -> None:
    with pytest.raises(WorkspaceError, match=re.escape(message)):
        workspace_parts(path)


# -- list_files ------------------------------------------------------------------------------


async def test_list_files_lists_recursively_and_shows_download_links(h: Harness) -> None:
    h.write("notes.txt", "hello\n")
    h.write("data/sales.csv", "a,b\n1,2\n")
    h.write("data/deep/more.json", "{}")
    h.write(".outputs/plot.png", PNG)
    h.write("data/.cache/x", "hidden")
    (h.ws / "empty").mkdir()
    (h.ws / "link").symlink_to(h.other_ws / "secret.txt")

    result = await h.tools.list_files(h.context, ".")
    events = h.events()

    assert progress(events) == ["Listing files…"]
    assert result.splitlines()[0] == "/workspace: 3 files (16 bytes), 3 folders:"
    assert "data/sales.csv  8 bytes" in result
    assert "data/deep/more.json  2 bytes" in result
    assert "empty/" in result
    assert "link  (symbolic link, not followed)" in result
    assert ".outputs/" in result and "data/.cache/" in result  # named as hidden, not listed
    assert "plot.png" not in result and "data/.cache/x" not in result
    assert "SECRET" not in result
    [widget] = widgets(events)
    assert widget_links(h, widget) == {
        "data/deep/more.json": "data/deep/more.json",
        "data/sales.csv": "data/sales.csv",
        "notes.txt": "notes.txt",
    }
    assert widget.copy_text == "data/deep/more.json\ndata/sales.csv\nnotes.txt"


async def test_hidden_folders_are_listed_when_asked_for_by_path(h: Harness) -> None:
    h.write(".outputs/plot.png", PNG)
    h.write("a.txt", "a")

    result = await h.tools.list_files(h.context, "/workspace/.outputs")
    events = h.events()

    assert result.splitlines()[:2] == [
        "/workspace/.outputs: 1 file (80 bytes), 0 folders:",
        ".outputs/plot.png  80 bytes",
    ]
    assert progress(events) == ["Listing /workspace/.outputs…"]
    [widget] = widgets(events)
    assert widget_links(h, widget) == {".outputs/plot.png": ".outputs/plot.png"}


async def test_listing_one_file_gives_its_download_link(h: Harness) -> None:
    h.write("report/final.pdf", b"%PDF-1.4 ...")

    result = await h.tools.list_files(h.context, "report/final.pdf")

    assert result == (
        "/workspace/report/final.pdf: 12 bytes. The user was shown it with a download link."
    )
    [widget] = widgets(h.events())
    assert widget_links(h, widget) == {"report/final.pdf": "report/final.pdf"}


async def test_listing_nothing(h: Harness) -> None:
    assert await h.tools.list_files(h.context) == "/workspace: 0 files (0 bytes), 0 folders."
    assert widgets(h.events()) == []
    assert await h.tools.list_files(h.context, "nope") == "No such file or folder: 'nope'."
    h.workspaces.remove(h.owner, h.thread_id)  # never written: no directory at all
    assert await h.tools.list_files(h.context) == "/workspace: 0 files (0 bytes), 0 folders."
    assert await h.tools.list_files(h.context, "a/b") == "No such file or folder: 'a/b'."


async def test_big_listings_are_bounded(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workspace_ops, "LIST_SCAN_LIMIT", 150)
    for index in range(120):
        h.write(f"many/file_{index:03}.txt", "x" * index)
    for index in range(60):
        h.write(f"zz/more_{index:03}.txt", "y")

    result = await h.tools.list_files(h.context)
    events = h.events()

    assert len(result) <= h.tools._settings.tool_output_chars
    assert "stopped after 150 entries" in result
    assert "list a subfolder to see the rest" in result
    [widget] = widgets(events)
    assert len(widget_links(h, widget)) == file_tools.WIDGET_FILES
    assert "Showing 50 of 148 files. The listing was cut short." in json.dumps(
        widget.widget.model_dump(mode="json")
    )


async def test_deep_folders_are_not_entered_past_the_limit(h: Harness) -> None:
    deep = "/".join(f"d{i}" for i in range(workspace_ops.LIST_MAX_DEPTH + 3))
    h.write(f"{deep}/bottom.txt", "b")

    result = await h.tools.list_files(h.context)

    assert "bottom.txt" not in result
    assert f"deeper than {workspace_ops.LIST_MAX_DEPTH} levels were not entered" in result


# -- read_file -------------------------------------------------------------------------------


async def test_read_file_numbers_lines_and_says_how_to_go_on(h: Harness) -> None:
    h.write("log.txt", "".join(f"line {n}\n" for n in range(1, 501)))

    first = await h.tools.read_file(h.context, "log.txt")
    events = h.events()

    lines = first.splitlines()
    assert lines[0] == "'log.txt' (4.3 KB, 500 lines), lines 1–200:"
    assert lines[1] == "     1\tline 1"
    assert lines[200] == "   200\tline 200"
    assert lines[-1] == "[300 more lines: call read_file with offset=200 to continue]"
    assert progress(events) == ["Reading log.txt…"]
    assert widgets(events) == []

    last = await h.tools.read_file(h.context, "/workspace/log.txt", offset=490, limit=50)
    assert last.splitlines()[0] == "'log.txt' (4.3 KB, 500 lines), lines 491–500:"
    assert last.splitlines()[-1] == "   500\tline 500"
    assert "more lines" not in last

    assert "offset 500 is past the end" in await h.tools.read_file(h.context, "log.txt", 500)
    assert "offset must be 0 or more" in await h.tools.read_file(h.context, "log.txt", -1)
    assert "limit must be at least 1" in await h.tools.read_file(h.context, "log.txt", 0, 0)


async def test_read_file_is_bounded_in_characters(h: Harness) -> None:
    h.write("wide.txt", "".join(f"{n}:" + "w" * 500 + "\n" for n in range(100)))
    h.write("one-line.json", "[" + "1," * 50_000 + "1]")

    wide = await h.tools.read_file(h.context, "wide.txt", limit=100)
    one = await h.tools.read_file(h.context, "one-line.json")

    assert len(wide) <= file_tools.READ_MAX_CHARS + 200
    shown = [line for line in wide.splitlines() if "\t" in line]
    assert 20 < len(shown) < 100
    assert wide.splitlines()[-1] == (
        f"[{100 - len(shown)} more lines: call read_file with offset={len(shown)} to continue]"
    )
    assert len(one) < READ_LINE_CHARS + 300
    assert "[… 98,003 more characters on this line]" in one


async def test_read_file_text_flavours(h: Harness) -> None:
    h.write("crlf.csv", b"\xef\xbb\xbfa,b\r\n1,2\r\n")
    h.write("latin.txt", "café crème\n".encode("cp1252"))
    h.write("empty.txt", b"")

    crlf = await h.tools.read_file(h.context, "crlf.csv")
    latin = await h.tools.read_file(h.context, "latin.txt")

    assert crlf.splitlines()[1:] == ["     1\ta,b", "     2\t1,2"]
    assert "not UTF-8: read as cp1252" in latin and "café crème" in latin
    assert await h.tools.read_file(h.context, "empty.txt") == (
        "'empty.txt' is empty (0 bytes, 0 lines)."
    )


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("plot.png", PNG, "PNG image, 80 bytes"),
        ("table.parquet", b"PAR1" + bytes(100), "Parquet file, 104 bytes"),
        ("book.xlsx", b"PK\x03\x04" + bytes(20), "ZIP archive (or .xlsx/.docx/.pptx), 24 bytes"),
        ("blob.wbx", b"abc\x00def", "unknown type, 7 bytes"),
        ("noise.mp3", bytes(range(256)), "probably audio/mpeg, 256 bytes"),
        ("utf16.txt", "hi".encode("utf-16"), "UTF-16 text (little-endian), 6 bytes"),
    ],
)
async def test_binary_files_are_described_not_dumped(
    h: Harness, name: str, data: bytes, kind: str
) -> None:
    h.write(name, data)

    result = await h.tools.read_file(h.context, name)

    assert result.startswith(f"'{name}' is a binary file ({kind}), not text")
    assert "execute_python" in result
    assert "\x00" not in result


async def test_read_file_refuses_folders_and_special_files(h: Harness) -> None:
    (h.ws / "data").mkdir()
    os.mkfifo(h.ws / "pipe")

    assert "is a folder, not a file: use list_files" in await h.tools.read_file(h.context, "data")
    pipe = await asyncio.wait_for(h.tools.read_file(h.context, "pipe"), 5)
    assert pipe == "'pipe' is not a regular file."
    assert "is the workspace folder itself" in await h.tools.read_file(h.context, ".")
    assert await h.tools.read_file(h.context, "missing.txt") == "No such file: 'missing.txt'."
    assert await h.tools.read_file(h.context, "no/such/dir.txt") == "No such folder: 'no'."
    h.write("file", "x")
    assert await h.tools.read_file(h.context, "file/x") == "'file' is a file, not a folder."


# -- write_file ------------------------------------------------------------------------------


async def test_write_file_creates_folders_and_shows_a_link(h: Harness) -> None:
    result = await h.tools.write_file(h.context, "reports/2024/summary.md", "# Summary\n\nok\n")
    events = h.events()

    assert result == (
        "Created /workspace/reports/2024/summary.md (14 bytes, 3 lines). The user was shown it "
        "with a download link."
    )
    assert (h.ws / "reports/2024/summary.md").read_text() == "# Summary\n\nok\n"
    assert progress(events) == ["Writing reports/2024/summary.md…"]
    added = [e for e in events if isinstance(e, ThreadItemAddedEvent)]
    [widget] = widgets(events)
    assert [a.item.id for a in added] == [widget.id]
    assert widget.thread_id == h.thread_id
    assert widget_links(h, widget) == {"reports/2024/summary.md": "reports/2024/summary.md"}
    assert '"New file"' in json.dumps(widget.widget.model_dump(mode="json"))

    again = await h.tools.write_file(h.context, "/workspace/reports/2024/summary.md", "v2")
    assert again.startswith("Replaced /workspace/reports/2024/summary.md (2 bytes, 1 line).")
    assert (h.ws / "reports/2024/summary.md").read_text() == "v2"
    assert '"Replaced file"' in json.dumps(widgets(h.events())[0].widget.model_dump(mode="json"))
    # Atomic: written under a temporary name, renamed; nothing left behind.
    assert sorted(p.name for p in (h.ws / "reports/2024").iterdir()) == ["summary.md"]


async def test_write_file_creates_the_workspace_if_needed(h: Harness) -> None:
    h.workspaces.remove(h.owner, h.thread_id)
    assert (await h.tools.write_file(h.context, "a.txt", "a")).startswith("Created")
    assert (h.ws / "a.txt").read_text() == "a"


async def test_write_file_limits(h: Harness) -> None:
    (h.ws / "folder").mkdir()
    os.mkfifo(h.ws / "pipe")
    limit = h.tools.write_limit
    assert limit == 10 * 1024 * 1024

    too_big = await h.tools.write_file(h.context, "big.txt", "x" * (limit + 1))
    assert too_big == (
        "The content is 10.0 MB; write_file writes at most 10.0 MB. Write large files with "
        "execute_python."
    )
    assert not (h.ws / "big.txt").exists()
    assert "is a folder" in await h.tools.write_file(h.context, "folder", "x")
    assert "not a regular file" in await h.tools.write_file(h.context, "pipe", "x")
    assert "is the workspace folder itself" in await h.tools.write_file(h.context, ".", "x")
    assert "control characters" in await h.tools.write_file(h.context, "a\nb.txt", "x")
    assert "not valid text" in await h.tools.write_file(h.context, "s.txt", "\ud800")
    assert sorted(p.name for p in h.ws.iterdir()) == ["folder", "pipe"]
    assert widgets(h.events()) == []


async def test_write_file_respects_a_smaller_sandbox_file_limit(h: Harness, tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", sandbox_max_file_mb=1)
    tools = FileTools(h.workspaces, h.signer, settings)
    assert tools.write_limit == 1024 * 1024
    result = await tools.write_file(h.context, "big.txt", "x" * (1024 * 1024 + 1))
    assert "at most 1.0 MB" in result


async def test_write_file_keeps_the_workspace_within_its_quota(h: Harness, tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", workspace_quota_mb=2)
    tools = FileTools(h.workspaces, h.signer, settings)
    h.write("old.bin", os.urandom(1024 * 1024 + 512 * 1024))  # 1.5 of its 2 MB

    refused = await tools.write_file(h.context, "more.txt", "x" * (600 * 1024))
    assert refused.startswith("The workspace uses 1.5 MB of its 2.0 MB; writing")
    assert "Delete files that are no longer needed first." in refused
    assert not (h.ws / "more.txt").exists()

    assert (await tools.write_file(h.context, "small.txt", "x" * 1000)).startswith("Created")
    h.write("big.bin", os.urandom(1024 * 1024))  # now over its quota: 2.5 of 2 MB
    assert "would pass that" in await tools.write_file(h.context, "more.txt", "x")
    # Replacing a file with a smaller one only frees space: allowed.
    replaced = await tools.write_file(h.context, "big.bin", "x" * 1000)
    assert replaced.startswith("Replaced"), replaced
    assert "Deleted" in await tools.delete_file(h.context, "old.bin")
    assert (await tools.write_file(h.context, "more.txt", "x" * (600 * 1024))).startswith("Created")


# -- delete_file -----------------------------------------------------------------------------


async def test_delete_file(h: Harness) -> None:
    h.write("a/b.txt", "bbb")
    (h.ws / "empty").mkdir()

    assert await h.tools.delete_file(h.context, "a/b.txt") == (
        "Deleted the file /workspace/a/b.txt (3 bytes)."
    )
    assert progress(h.events()) == ["Deleting a/b.txt…"]
    assert not (h.ws / "a/b.txt").exists()
    assert (
        await h.tools.delete_file(h.context, "empty")
        == "Deleted the empty folder /workspace/empty."
    )
    h.write("full/x", "x")
    assert "is a folder that is not empty" in await h.tools.delete_file(h.context, "full")
    assert (h.ws / "full/x").exists()
    assert await h.tools.delete_file(h.context, "a/b.txt") == "No such file: 'a/b.txt'."
    assert "is the workspace folder itself" in await h.tools.delete_file(h.context, ".")
    assert h.ws.is_dir()


async def test_deleting_a_link_deletes_the_link_only(h: Harness) -> None:
    (h.ws / "to_secret").symlink_to(h.other_ws / "secret.txt")
    (h.ws / "to_outside").symlink_to(h.outside)
    (h.ws / "dangling").symlink_to(h.ws / "nothing")

    for name in ("to_secret", "to_outside", "dangling"):
        result = await h.tools.delete_file(h.context, name)
        assert result == f"Deleted the symbolic link /workspace/{name}."
        assert not exists(h.ws / name)
    h.outside_untouched()


# -- ways out ----------------------------------------------------------------------------------


def plant_links(h: Harness) -> None:
    """Symlinks the sandboxed code could have left in the workspace."""
    (h.ws / "etc").symlink_to("/etc")
    (h.ws / "passwd").symlink_to("/etc/passwd")
    (h.ws / "other").symlink_to(h.other_ws)  # another thread's workspace
    (h.ws / "secret.txt").symlink_to(h.other_ws / "secret.txt")
    (h.ws / "out").symlink_to(h.outside)
    (h.ws / "bait.txt").symlink_to(h.outside / "bait.txt")
    (h.ws / "real").mkdir()
    (h.ws / "real/up").symlink_to("../../thr_other")  # a relative link inside a real folder
    (h.ws / "loop").symlink_to("loop")


TOP_LEVEL_LINKS = {
    "passwd": lambda h: Path("/etc/passwd"),
    "secret.txt": lambda h: h.other_ws / "secret.txt",
    "bait.txt": lambda h: h.outside / "bait.txt",
    "loop": lambda h: Path("loop"),
}

ESCAPES = [
    "..",
    "../thr_other/secret.txt",
    "../../../../../../etc/passwd",
    "/etc/passwd",
    "/workspace/../thr_other/secret.txt",
    "etc/passwd",
    "etc/wb-should-never-exist",
    "passwd",
    "other/secret.txt",
    "other/new.txt",
    "secret.txt",
    "out/bait.txt",
    "out/sub",
    "out/sub/new.txt",
    "bait.txt",
    "real/up/secret.txt",
    "loop",
    "loop/x",
    "a\0b",
    "secret.txt\0.png",
    "x" * 300,
    "/".join(["y" * 250] * 20),
]


@pytest.mark.parametrize("tool", ["list_files", "read_file", "write_file", "delete_file"])
@pytest.mark.parametrize("path", ESCAPES)
async def test_no_tool_leaves_the_workspace(h: Harness, tool: str, path: str) -> None:
    plant_links(h)
    etc_before = sorted(os.listdir("/etc"))

    match tool:
        case "list_files":
            result = await h.tools.list_files(h.context, path)
        case "read_file":
            result = await h.tools.read_file(h.context, path)
        case "write_file":
            result = await h.tools.write_file(h.context, path, "PWNED")
        case _:
            result = await h.tools.delete_file(h.context, path)
    events = h.events()

    assert isinstance(result, str) and result
    for leaked in ("root:", "SECRET", "BAIT"):
        assert leaked not in result
    if tool == "delete_file" and path in TOP_LEVEL_LINKS:
        # Deleting a link in the workspace is fine: the link goes, never its target.
        assert result.startswith("Deleted the symbolic link"), result
        assert not exists(h.ws / path)
        (h.ws / path).symlink_to(TOP_LEVEL_LINKS[path](h))
    else:
        assert not result.startswith(("Created", "Replaced", "Deleted")), result
    assert passwd_intact()
    if tool != "list_files":
        assert widgets(events) == []
    for widget in widgets(events):  # listing a link: never a download link to it
        assert widget_links(h, widget) == {}
    assert len(progress(events)) == 1
    h.outside_untouched()
    assert sorted(os.listdir("/etc")) == etc_before
    # The planted links are still there, unchanged (a refused tool does not touch them).
    assert os.readlink(h.ws / "other") == str(h.other_ws)
    assert sorted(os.listdir(h.ws / "real")) == ["up"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../thr_other/secret.txt", "'..' is not allowed"),
        ("/etc/passwd", "is outside the workspace"),
        ("etc/passwd", "'etc' is a symbolic link (to '/etc'); the file tools never follow links"),
        ("passwd", "'passwd' is a symbolic link (to '/etc/passwd')"),
        ("other/secret.txt", "'other' is a symbolic link"),
        ("real/up/secret.txt", "'real/up' is a symbolic link (to '../../thr_other')"),
        ("loop/x", "'loop' is a symbolic link (to 'loop')"),
        ("a\0b", "a path cannot contain a NUL byte"),
        ("x" * 300, "a file or folder name is at most 255 bytes (this one is 300)"),
    ],
)
async def test_refusals_say_why(h: Harness, path: str, message: str) -> None:
    plant_links(h)
    assert message in await h.tools.read_file(h.context, path)


async def test_listing_shows_links_without_following_them(h: Harness) -> None:
    plant_links(h)

    result = await h.tools.list_files(h.context)
    assert "etc  (symbolic link, not followed)" in result
    assert "other  (symbolic link, not followed)" in result
    assert "real/up  (symbolic link, not followed)" in result
    assert "hostname" not in result and "secret" not in result.replace("secret.txt  (", "")
    assert widgets(h.events()) == []  # no regular files: nothing to download

    assert "is a symbolic link" in await h.tools.list_files(h.context, "etc")
    assert "is a symbolic link" in await h.tools.list_files(h.context, "secret.txt")


async def test_writing_over_a_link_is_refused(h: Harness) -> None:
    plant_links(h)

    result = await h.tools.write_file(h.context, "bait.txt", "PWNED")

    assert result.startswith("'bait.txt' is a symbolic link; write_file does not write through")
    assert os.readlink(h.ws / "bait.txt") == str(h.outside / "bait.txt")
    h.outside_untouched()


async def test_through_the_agents_sdk_errors_are_results(h: Harness) -> None:
    """What the SDK runs: the model's JSON arguments in, a string out, even for bad paths."""
    plant_links(h)
    calls = {
        "list_files": {"path": "other"},
        "read_file": {"path": "../thr_other/secret.txt", "offset": 0, "limit": 10},
        "write_file": {"path": "out/sub/x.txt", "content": "PWNED"},
        "delete_file": {"path": "/etc/passwd"},
    }
    for tool in h.tools.tools():
        arguments = json.dumps(calls[tool.name])
        context = ToolContext(
            context=h.context, tool_name=tool.name, tool_call_id="call_1", tool_arguments=arguments
        )
        result = await tool.on_invoke_tool(context, arguments)
        assert isinstance(result, str)
        assert "symbolic link" in result or "outside" in result or "not allowed" in result
    h.outside_untouched()


# -- races -------------------------------------------------------------------------------------

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange(a: Path, b: Path) -> None:
    """Atomically swap two names (renameat2 RENAME_EXCHANGE), as a hostile cell might."""
    if _libc.renameat2(_AT_FDCWD, bytes(a), _AT_FDCWD, bytes(b), _RENAME_EXCHANGE) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


@pytest.fixture
def swapping(h: Harness) -> Iterator[None]:
    """``h.ws/flip`` keeps turning from a real folder into a link to ``outside`` and back."""
    h.write("flip/f.txt", "inside")
    (h.ws / "flip_link").symlink_to(h.outside)
    try:
        exchange(h.ws / "flip", h.ws / "flip_link")
        exchange(h.ws / "flip", h.ws / "flip_link")
    except (OSError, AttributeError) as error:
        pytest.skip(f"no renameat2 here: {error}")
    (h.outside / "f.txt").write_text("BAIT")
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            exchange(h.ws / "flip", h.ws / "flip_link")

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    try:
        yield
    finally:
        stop.set()
        flipper.join(10)
        (h.outside / "f.txt").unlink()


async def test_swapping_a_folder_for_a_link_mid_operation_never_escapes(
    h: Harness, swapping: None
) -> None:
    outcomes: set[str] = set()
    deadline = time.monotonic() + 1.5
    rounds = 0
    while time.monotonic() < deadline:
        rounds += 1
        read = await h.tools.read_file(h.context, "flip/f.txt")
        assert "BAIT" not in read
        outcomes.add("read" if "inside" in read else "refused")
        wrote = await h.tools.write_file(h.context, f"flip/new_{rounds}.txt", "PWNED")
        outcomes.add("wrote" if wrote.startswith("Created") else "refused")
        listed = await h.tools.list_files(h.context, "flip")
        assert "bait" not in listed
        deleted = await h.tools.delete_file(h.context, f"flip/new_{rounds}.txt")
        outcomes.add("deleted" if deleted.startswith("Deleted") else "refused")
        h.events()
        assert sorted(p.name for p in h.outside.iterdir()) == ["bait.txt", "f.txt", "sub"]
    assert (h.outside / "f.txt").read_text() == "BAIT"
    assert {"refused"} < outcomes, outcomes  # both sides of the race were hit
    assert rounds > 20


# -- over HTTP ---------------------------------------------------------------------------------


async def test_a_scripted_model_writes_reads_and_lists_files_over_http(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    content = "name,score\nada,3\nalan,2\n"
    write = {"path": "out/scores.csv", "content": content}
    read = {"path": "out/scores.csv", "offset": 1, "limit": 1}
    scripted_openai.script(
        responses_step([FunctionCall("write_file", json.dumps(write), "call_w")]),
        responses_step([FunctionCall("read_file", json.dumps(read), "call_r")]),
        responses_step([FunctionCall("list_files", json.dumps({"path": "."}), "call_l")]),
        responses_step([Text("Saved out/scores.csv.")]),
        title_step("Scores"),
    )
    settings = provider_settings(database_url, tmp_path / "data", scripted_openai)
    with running(LiveServer(settings)) as live:
        events = await stream_events(http, live.url, create_thread("Save the scores"))
        assert [e for e in events if e.type == "error"] == []
        thread_id = events[0].thread.id
        workspaces: Workspaces = live.app.state.workspaces
        workspace = workspaces.path(settings.local_user, thread_id)

        # The file landed in the thread's workspace...
        assert (workspace / "out/scores.csv").read_text() == content
        # ...the model was told so, and read it back...
        outputs = {
            item["call_id"]: item["output"]
            for body in scripted_openai.streamed
            for item in body["input"]
            if isinstance(item, dict) and item.get("type") == "function_call_output"
        }
        assert outputs["call_w"].startswith("Created /workspace/out/scores.csv (24 bytes, 3 lines)")
        assert outputs["call_r"].splitlines()[1] == "     2\tada,3"
        assert "out/scores.csv  24 bytes" in outputs["call_l"]
        assert [e.text for e in events if e.type == "progress_update"] == [
            "Writing out/scores.csv…", "Reading out/scores.csv…", "Listing files…",
        ]  # fmt: skip

        # ...and the user got two widgets whose links download it.
        shown = [e.item for e in events if e.type == "thread.item.done" and e.item.type == "widget"]
        assert len(shown) == 2
        for widget in shown:
            [url] = re.findall(r"\]\((http[^)\s]+)\)", json.dumps(widget.widget.model_dump()))
            assert url.startswith(f"{live.base}/files/workspaces/{thread_id}/out/scores.csv?")
            response = await http.get(url)
            assert response.status_code == 200, response.text
            assert response.content == content.encode()

        # Saved: the widgets, and no workflow task left spinning.
        items = await list_items(http, live.url, thread_id)
        assert [item.id for item in items if item.type == "widget"] == [w.id for w in shown]
        tasks = [task for item in items if isinstance(item, WorkflowItem)
                 for task in item.workflow.tasks]  # fmt: skip
        assert [task.status_indicator for task in tasks] == ["complete"]  # read_file's
        assert items[-1].type == "assistant_message"


async def test_odd_names_on_disk_are_listed_escaped_without_links(h: Harness) -> None:
    """Code in the sandbox can make any name; the listing escapes it and skips its link."""
    h.write("tab\there.txt", "t")
    (h.ws / os.fsdecode(b"latin-\xe9.txt")).write_bytes(b"l")
    os.mkfifo(h.ws / "pipe")
    h.write("ok.txt", "ok")

    result = await h.tools.list_files(h.context)

    assert "tab\\there.txt  1 byte" in result
    assert "latin-\\udce9.txt  1 byte" in result
    assert "pipe  (not a regular file)" in result
    [widget] = widgets(h.events())
    assert widget_links(h, widget) == {"ok.txt": "ok.txt"}
    assert await h.tools.list_files(h.context, "pipe") == (
        "/workspace/pipe is not a regular file; it has no download link."
    )
    assert await h.tools.list_files(h.context, "tab\there.txt") == (
        "/workspace/tab\there.txt: 1 byte (its name cannot be put in a link)."
    )
    assert "tab" in await h.tools.read_file(h.context, "tab\there.txt")
