"""The one way host code touches a workspace (``workspace_fs`` and what is built on it): the
same refusal from every entry point, new files that never overwrite, bounded scans, races."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_file_tools import exchange
from workbench.sandbox import workspace_ops, workspaces
from workbench.sandbox.workspace_fs import (
    WorkspaceError,
    create_new_file,
    describe,
    file_parts,
    open_existing_file,
    open_file,
)
from workbench.sandbox.workspaces import scan

VIA = "'via' is a symbolic link (to 'real'); the file tools never follow links."


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    (workspace / "real").mkdir(parents=True)
    (workspace / "real/data.csv").write_text("a,b\n1,2\n")
    (workspace / "via").symlink_to("real")  # points back inside, still never followed
    return workspace


def refusal(call: Callable[[], object]) -> WorkspaceError:
    with pytest.raises(WorkspaceError) as caught:
        call()
    return caught.value


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- one rule for everyone ----------------------------------------------------------------------

ENTRY_POINTS: dict[str, Callable[[Path, str], object]] = {
    # downloads and CSV previews
    "open_file": lambda ws, path: os.close(open_file(ws, file_parts(path))),
    # cell images and attachment copies
    "create_new_file": lambda ws, path: create_new_file(ws, path.rsplit("/", 1)[0], "new.png"),
    # the file tools
    "read_text": lambda ws, path: workspace_ops.read_text(ws, file_parts(path)),
    "write_bytes": lambda ws, path: workspace_ops.write_bytes(ws, file_parts(path), b"x", 2**30),
    "list_entries": lambda ws, path: workspace_ops.list_entries(ws, file_parts(path)),
    "delete_entry": lambda ws, path: workspace_ops.delete_entry(ws, file_parts(path)),
}


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
@pytest.mark.parametrize("path", ["via/data.csv", "real/../via/data.csv", "/workspace/via/x/y"])
def test_a_linked_folder_is_refused_by_every_entry_point_alike(
    ws: Path, entry_point: str, path: str
) -> None:
    error = refusal(lambda: ENTRY_POINTS[entry_point](ws, path))

    if ".." in path:
        assert str(error).endswith("'..' is not allowed; paths stay inside this conversation's "
                                   "workspace.")  # fmt: skip
    else:
        assert str(error).startswith(VIA), str(error)
        assert error.errno == errno.ELOOP
    assert isinstance(error, OSError)  # callers that cope with a failing disk cope with this
    assert sorted(os.listdir(ws / "real")) == ["data.csv"]
    assert os.readlink(ws / "via") == "real"


def test_the_attachment_reuse_check_and_the_scan_do_not_follow_it_either(ws: Path) -> None:
    assert open_existing_file(ws, "via", "data.csv") is None
    fd = open_existing_file(ws, "real", "data.csv")
    assert fd is not None
    with os.fdopen(fd) as file:
        assert file.read() == "a,b\n1,2\n"
    assert sorted(scan(ws).files) == ["real/data.csv"]


def test_open_existing_file_is_none_for_anything_but_a_regular_file(ws: Path) -> None:
    os.mkfifo(ws / "real/pipe")
    (ws / "real/link.csv").symlink_to("data.csv")
    (ws / "real/folder").mkdir()
    for name in ("pipe", "link.csv", "folder", "missing", "../real/data.csv", "a/data.csv"):
        assert open_existing_file(ws, "real", name) is None, name  # and a FIFO does not hang


def test_messages_say_what_is_wrong(ws: Path) -> None:
    (ws / "real/file").write_text("x")
    cases = {
        "real/file/x": "'real/file' is a file, not a folder.",
        "real/nope/x": "No such folder: 'real/nope'.",
        "real/nope.csv": "No such file: 'real/nope.csv'.",
        "real": "'real' is a folder, not a file: use list_files to see what is in it.",
        ".": "'.' is the workspace folder itself; name a file in it",
        "/etc/passwd": "'/etc/passwd' is outside the workspace.",
    }
    for path, message in cases.items():
        assert str(refusal(lambda path=path: open_file(ws, file_parts(path)))).startswith(
            message
        ), path
    assert "empty" in str(refusal(lambda: open_file(ws.parent / "never", ("a",))))


def test_describe_words_the_disks_own_errors() -> None:
    full = describe(OSError(errno.ENOSPC, "No space left on device"), "write", "a.txt")
    assert str(full) == "Cannot write 'a.txt': no space left."
    assert full.errno == errno.ENOSPC
    denied = describe(PermissionError(errno.EACCES, "Permission denied"), "read", "b")
    assert str(denied) == "Cannot read 'b': permission denied."
    refused = WorkspaceError("as it was")
    assert describe(refused, "read", "c") is refused


# -- new files ----------------------------------------------------------------------------------


def test_new_files_are_numbered_never_overwritten(ws: Path) -> None:
    first, fd = create_new_file(ws, "uploads/2024", "report.csv")
    os.close(fd)
    second, fd = create_new_file(ws, "uploads/2024", "report.csv")
    with os.fdopen(fd, "wb") as file:
        file.write(b"second")
    third, fd = create_new_file(ws, "/workspace/uploads/2024/", "report.csv")
    os.close(fd)
    (ws / "uploads/2024/README").write_text("keep")
    plain, fd = create_new_file(ws, "uploads/2024", "README")
    os.close(fd)

    assert [first, second, third] == [
        "uploads/2024/report.csv", "uploads/2024/report (2).csv", "uploads/2024/report (3).csv",
    ]  # fmt: skip
    assert plain == "uploads/2024/README (2)"
    assert (ws / "uploads/2024/README").read_text() == "keep"
    assert (ws / second).read_bytes() == b"second"


def test_a_link_in_the_way_of_a_new_file_is_left_alone(ws: Path, tmp_path: Path) -> None:
    target = tmp_path / "target.png"
    target.write_bytes(b"host")
    (ws / ".outputs").mkdir()
    (ws / ".outputs/plot.png").symlink_to(target)

    relative, fd = create_new_file(ws, ".outputs", "plot.png")
    with os.fdopen(fd, "wb") as file:
        file.write(b"figure")

    assert relative == ".outputs/plot (2).png"
    assert target.read_bytes() == b"host"
    assert (ws / relative).read_bytes() == b"figure"


@pytest.mark.parametrize("name", ["a/b.png", "..", "", ".", "x\0y", "c\\d"])
def test_a_new_file_needs_a_plain_name(ws: Path, name: str) -> None:
    refusal(lambda: create_new_file(ws, "real", name))
    assert sorted(os.listdir(ws)) == ["real", "via"]
    assert sorted(os.listdir(ws / "real")) == ["data.csv"]


# -- the scan after each cell -------------------------------------------------------------------


def test_a_deep_workspace_is_scanned_whole_with_few_descriptors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workspaces, "_HELD", 8)
    ws = tmp_path / "ws"
    deep = ws.joinpath(*[f"d{i}" for i in range(30)])
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_text("b" * 10)
    (ws / "d0/d1/side.txt").write_text("s")
    (ws / "d0/d1/d2/.hidden").mkdir()
    (ws / "d0/d1/d2/.hidden/not_listed.txt").write_text("h")
    before = open_fds()
    peak = 0
    real_open = os.open

    def counting_open(*args: Any, **kwargs: Any) -> int:
        nonlocal peak
        fd = real_open(*args, **kwargs)
        peak = max(peak, open_fds() - before)
        return fd

    monkeypatch.setattr(os, "open", counting_open)
    found = scan(ws)
    monkeypatch.undo()

    bottom = "/".join([*(f"d{i}" for i in range(30)), "bottom.txt"])
    assert sorted(found.files) == sorted([bottom, "d0/d1/side.txt"])
    assert found.used >= 33 * 4096  # 31 folders and 3 files, a block each at least
    assert peak <= 8 + 3  # the held chain, one deeper folder, one scandir
    assert open_fds() == before


# -- races ----------------------------------------------------------------------------------------


@pytest.fixture
def flipping(ws: Path, tmp_path: Path) -> Iterator[Path]:
    """``ws/flip`` keeps turning from a real folder into a link to an outside folder and back;
    the outside folder, with bait, is yielded."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.csv").write_text("BAIT")
    (outside / "bait.csv").write_text("BAIT")
    (ws / "flip").mkdir()
    (ws / "flip/f.csv").write_text("inside")
    (ws / "flip_link").symlink_to(outside)
    try:
        exchange(ws / "flip", ws / "flip_link")
        exchange(ws / "flip", ws / "flip_link")
    except (OSError, AttributeError) as error:
        pytest.skip(f"no renameat2 here: {error}")
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            exchange(ws / "flip", ws / "flip_link")

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    try:
        yield outside
    finally:
        stop.set()
        flipper.join(10)


def test_a_folder_swapped_for_a_link_never_leads_out(ws: Path, flipping: Path) -> None:
    outcomes: set[str] = set()
    deadline = time.monotonic() + 1.5
    for _ in range(300):  # each round may add a "new (n).png"; at most 999 are numbered
        if time.monotonic() > deadline:
            break
        try:
            fd = open_file(ws, ("flip", "f.csv"))
        except WorkspaceError:
            outcomes.add("refused")
        else:
            with os.fdopen(fd) as file:
                assert file.read() == "inside"
            outcomes.add("read")
        try:
            _, fd = create_new_file(ws, "flip", "new.png")
        except WorkspaceError:
            outcomes.add("refused")
        else:
            os.close(fd)
            outcomes.add("created")
        assert "flip/bait.csv" not in scan(ws).files
    assert sorted(p.name for p in flipping.iterdir()) == ["bait.csv", "f.csv"]  # nothing new
    assert (flipping / "f.csv").read_text() == "BAIT"
    assert "refused" in outcomes and len(outcomes) > 1, outcomes
