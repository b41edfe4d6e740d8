"""File tools: list, read, write and delete files in the thread's workspace.

They work on the host, on the same directory the thread's kernel sees as ``/workspace``, and
that directory is shaped by sandboxed code which may plant symlinks or swap a folder for one
at any moment. So nothing here follows a link, ever: every path is checked as text (no
``..``, no absolute path but ``/workspace/...``, no NUL), then walked one component at a time
from a descriptor of the workspace with ``O_NOFOLLOW`` (``openat``-style, ``dir_fd``), and the
file is read, written (a temporary file renamed over the name) or deleted relative to the
descriptor of its folder. A symlink, wherever it is in the path, is reported, not followed;
``delete_file`` removes a link itself, never what it points to.

* ``list_files(path=".")``: files and folders below ``path``, recursively (bounded), with
  sizes. Hidden entries (a name starting with a dot, like ``.outputs`` where cell figures
  go) are skipped unless ``path`` is inside one; the model is told which. Listing a single
  file is allowed: it is how the model hands the user a download link to an existing file.
  The user sees a file-list widget with download links.
* ``read_file(path, offset=0, limit=200)``: a text file as numbered lines, bounded in lines
  and characters, saying how to read on. Binary files are described, not dumped.
* ``write_file(path, content)``: creates missing folders, writes atomically, bounded in size;
  the user sees the file with a download link. Writing over a symlink or a folder is refused.
* ``delete_file(path)``: a file, a symlink (itself) or an empty folder.

Every failure the model can cause or meet comes back as the tool's text result, never as an
exception that ends the run.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import itertools
import mimetypes
import os
import secrets
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

from agents import FunctionTool, function_tool
from agents.tool_context import ToolContext
from chatkit.icons import IconName
from chatkit.types import (
    ProgressUpdateEvent,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    WidgetItem,
)

from workbench.config import Settings
from workbench.files.downloads import workspace_file_url
from workbench.files.signing import UrlSigner
from workbench.plugins import ToolPlugin, TurnContext
from workbench.sandbox.workspaces import PathOutsideWorkspaceError, Workspaces, disk_usage
from workbench.tools.services import ToolServices
from workbench.widgets import FileView, file_list_widget, format_size

LIST_FILES = "list_files"
READ_FILE = "read_file"
WRITE_FILE = "write_file"
DELETE_FILE = "delete_file"
WIDGET_TOOLS = frozenset({LIST_FILES, WRITE_FILE})
"""File tools that show the user a widget of their own (so no workflow task for them: a
widget ends the open workflow, which would save their task still spinning)."""

MOUNT = "/workspace"  # where the kernel sees the workspace; accepted as a path prefix
NAME_MAX = 255  # bytes per path component (Linux)
PATH_MAX = 4096  # bytes per path

LIST_SCAN_LIMIT = 5000  # entries examined per listing
LIST_MAX_DEPTH = 12  # folders deeper than this are named but not entered
WIDGET_FILES = 50  # files with a download link in the widget

READ_SCAN_BYTES = 16 * 1024 * 1024  # read_file looks at most this far into a file
READ_MAX_CHARS = 16_000  # characters of lines returned (or tool_output_chars, if larger)
READ_LINE_CHARS = 2000  # characters of one line returned
READ_MAX_LIMIT = 2000  # lines per call
SNIFF_BYTES = 8192  # what binary detection looks at

WRITE_MAX_BYTES = 10 * 1024 * 1024  # or sandbox_max_file_mb, if smaller

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted in the workspace must not hang a worker thread.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_SIGNATURES: list[tuple[bytes, str]] = [
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"%PDF-", "PDF document"),
    (b"PK\x03\x04", "ZIP archive (or .xlsx/.docx/.pptx)"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"BZh", "bzip2-compressed data"),
    (b"\xfd7zXZ\x00", "xz-compressed data"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"PAR1", "Parquet file"),
    (b"ARROW1", "Arrow/Feather file"),
    (b"SQLite format 3\x00", "SQLite database"),
    (b"\x93NUMPY", "NumPy array (.npy)"),
    (b"\x89HDF\r\n\x1a\n", "HDF5 file"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "legacy Office document (.xls/.doc)"),
    (b"\x7fELF", "ELF executable"),
    (b"RIFF", "RIFF media (WAV/AVI/WebP)"),
    (b"\xff\xfe", "UTF-16 text (little-endian)"),
    (b"\xfe\xff", "UTF-16 text (big-endian)"),
]

_LIST_DESCRIPTION = f"""List files and folders in this conversation's workspace (the /workspace
folder that execute_python works in), with sizes, and show them to the user with download links.

`path` is a folder relative to the workspace ("." for all of it; "/workspace/..." works too).
Folders are listed recursively (up to {LIST_SCAN_LIMIT} entries). Hidden entries (names starting
with a dot, such as .outputs where figures are saved) are skipped unless `path` is inside one.
Symbolic links are shown, never followed. To give the user a download link to a file that
already exists, list that file's path."""

_READ_DESCRIPTION = f"""Read a text file from the workspace as numbered lines.

`offset` is how many lines to skip (0: from the start), `limit` how many lines to return (at
most {READ_MAX_LIMIT}). Long output is cut and says how to continue. Binary files (images,
spreadsheets, archives, ...) are described, not shown: use execute_python for them."""

_WRITE_DESCRIPTION = """Create or replace a text file in the workspace with `content` (UTF-8).

Missing folders are created; the file is replaced atomically. The user is shown the file with a
download link. Writing over a folder or a symbolic link is refused."""

_DELETE_DESCRIPTION = """Delete a file, a symbolic link (the link itself, never what it points
to) or an empty folder from the workspace. Folders that are not empty are refused."""

T = TypeVar("T")
P = ParamSpec("P")
Kind = Literal["file", "folder", "link", "other"]


class FileToolError(Exception):
    """A problem to tell the model about: ``str(error)`` is the tool's result."""


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the workspace, with forward slashes
    kind: Kind
    size: int = 0


@dataclass
class Listing:
    entries: list[Entry] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)  # hidden entries skipped
    not_entered: list[str] = field(default_factory=list)  # folders deeper than the limit
    complete: bool = True  # False once LIST_SCAN_LIMIT entries were examined
    is_file: bool = False  # the path named a file, not a folder


@dataclass(frozen=True)
class TextPage:
    lines: list[str]  # of the whole scanned text, without line ends
    size: int
    encoding: str
    scanned_all: bool


# -- paths ---------------------------------------------------------------------------------


def workspace_parts(path: str) -> tuple[str, ...]:
    """The components of ``path`` inside the workspace, or a ``FileToolError`` saying why not.

    Relative paths and ``/workspace/...`` are accepted; ``.`` components and repeated slashes
    are dropped. ``..``, any other absolute path, NUL bytes, text that is no file name and
    names longer than the file system allows are refused.
    """
    if "\0" in path:
        raise FileToolError(f"{shown(path)}: a path cannot contain a NUL byte.")
    text = path.replace("\\", "/")
    if text == MOUNT or text.startswith(MOUNT + "/"):
        text = text[len(MOUNT) :]
    elif text.startswith("/"):
        raise FileToolError(
            f"{shown(path)} is outside the workspace. Use a path relative to the workspace "
            f"(such as 'data/report.csv'), or one starting with {MOUNT}/."
        )
    parts = tuple(part for part in text.split("/") if part not in {"", "."})
    if ".." in parts:
        raise FileToolError(
            f"{shown(path)}: '..' is not allowed; paths stay inside this conversation's workspace."
        )
    try:
        sizes = [len(os.fsencode(part)) for part in parts]
    except UnicodeEncodeError:
        raise FileToolError(f"{shown(path)} is not a valid file name.") from None
    if sum(sizes) + len(sizes) > PATH_MAX:
        raise FileToolError(f"{shown(path)}: the path is too long (at most {PATH_MAX} bytes).")
    for part, size in zip(parts, sizes, strict=True):
        if size > NAME_MAX:
            raise FileToolError(
                f"{shown(part)}: a file or folder name is at most {NAME_MAX} bytes "
                f"(this one is {size})."
            )
    return parts


def shown(path: str, limit: int = 80) -> str:
    """``path`` quoted for a message: control characters escaped, long ones shortened."""
    if len(path) > limit:
        path = path[: limit - 20] + "…" + path[-19:]
    return repr(path)


def _joined(parts: Sequence[str]) -> str:
    return "/".join(parts) or "."


def _printable(name: str) -> bool:
    """A name safe to put in a link and a listing as is."""
    return name.isprintable() and not any(0xD800 <= ord(c) <= 0xDFFF for c in name)


def _listed(name: str) -> str:
    """A name from the disk as the model reads it: odd characters escaped."""
    return name if _printable(name) else repr(name)[1:-1]


# -- walking without following links -------------------------------------------------------


def _open_workspace(workspace: Path) -> int:
    try:
        return os.open(workspace, _DIR_FLAGS)
    except FileNotFoundError:
        raise FileToolError("The workspace is empty (nothing has been written yet).") from None


def _open_parent(workspace: Path, parts: Sequence[str], *, create: bool = False) -> int:
    """The folder holding ``parts[-1]``, opened without following any link on the way."""
    root = _open_workspace(workspace)
    try:
        return _open_folder(root, parts[:-1], create=create)
    finally:
        os.close(root)


def _open_folder(root: int, parts: Sequence[str], *, create: bool = False) -> int:
    """A descriptor of the folder ``parts`` below ``root``, one component at a time.

    ``O_NOFOLLOW`` on every component: a symlink anywhere in the path (planted, or swapped in
    for a folder at any time) is an error, never a way out. ``create`` makes missing folders.
    """
    fd = os.dup(root)
    try:
        for index, part in enumerate(parts):
            child = _open_child(fd, part, parts[: index + 1], create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_child(parent: int, name: str, so_far: Sequence[str], create: bool) -> int:
    for _ in range(3):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise FileToolError(f"No such folder: {shown(_joined(so_far))}.") from None
            with contextlib.suppress(FileExistsError):  # made meanwhile: open it
                os.mkdir(name, 0o755, dir_fd=parent)
        except OSError as error:
            raise _not_a_folder(parent, name, _joined(so_far), error) from None
    raise FileToolError(f"{shown(_joined(so_far))} keeps changing; try again.")


def _lstat(parent: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _symlink_error(parent: int, name: str, path: str) -> FileToolError:
    try:
        target = shown(os.readlink(name, dir_fd=parent), 60)
    except OSError:
        target = "somewhere"
    return FileToolError(
        f"{shown(path)} is a symbolic link (to {target}); the file tools never follow links. "
        "Use the path it points to if that is inside the workspace."
    )


def _not_a_folder(parent: int, name: str, path: str, error: OSError) -> FileToolError:
    info = _lstat(parent, name)
    if info is not None and stat.S_ISLNK(info.st_mode):
        return _symlink_error(parent, name, path)
    if info is not None and not stat.S_ISDIR(info.st_mode):
        return FileToolError(f"{shown(path)} is a file, not a folder.")
    return FileToolError(f"Cannot open the folder {shown(path)}: {_reason(error)}.")


def _reason(error: OSError) -> str:
    return (error.strerror or str(error)).lower()


# -- list ----------------------------------------------------------------------------------


def list_entries(workspace: Path, parts: Sequence[str]) -> Listing:
    listing = Listing()
    try:
        root = _open_workspace(workspace)
    except FileToolError:
        if parts:
            raise FileToolError(f"No such file or folder: {shown(_joined(parts))}.") from None
        return listing
    try:
        parent = _open_folder(root, parts[:-1])
    finally:
        os.close(root)
    try:
        if not parts:
            fd = os.dup(parent)
        else:
            info = _lstat(parent, parts[-1])
            if info is None:
                raise FileToolError(f"No such file or folder: {shown(_joined(parts))}.")
            if not stat.S_ISDIR(info.st_mode):
                if stat.S_ISLNK(info.st_mode):
                    raise _symlink_error(parent, parts[-1], _joined(parts))
                listing.is_file = True
                listing.entries.append(Entry(_joined(parts), _kind(info.st_mode), info.st_size))
                return listing
            fd = _open_child(parent, parts[-1], parts, create=False)
    finally:
        os.close(parent)
    try:
        show_hidden = any(part.startswith(".") for part in parts)
        _scan(fd, "/".join(parts), 0, show_hidden, listing)
    finally:
        os.close(fd)
    return listing


def _scan(fd: int, prefix: str, depth: int, show_hidden: bool, listing: Listing) -> None:
    room = LIST_SCAN_LIMIT - len(listing.entries) - len(listing.hidden)
    with os.scandir(fd) as found:
        children = list(itertools.islice(found, room + 1))
    if len(children) > room:
        listing.complete = False
        children = children[:room]
    for child in sorted(children, key=lambda entry: entry.name):
        path = f"{prefix}/{child.name}" if prefix else child.name
        try:
            info = child.stat(follow_symlinks=False)
        except OSError:
            continue  # gone meanwhile
        if child.name.startswith(".") and not show_hidden:
            listing.hidden.append(path + ("/" if stat.S_ISDIR(info.st_mode) else ""))
            continue
        kind = _kind(info.st_mode)
        listing.entries.append(Entry(path, kind, info.st_size if kind == "file" else 0))
        if kind != "folder":
            continue
        if depth + 1 >= LIST_MAX_DEPTH:
            listing.not_entered.append(path)
            continue
        try:
            sub = os.open(child.name, _DIR_FLAGS, dir_fd=fd)
        except OSError:
            continue  # swapped for a link or gone meanwhile: not followed
        try:
            _scan(sub, path, depth + 1, show_hidden, listing)
        finally:
            os.close(sub)
        if not listing.complete:
            return


def _kind(mode: int) -> Kind:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def listing_text(listing: Listing, parts: Sequence[str], limit: int, shown_files: int) -> str:
    where = f"{MOUNT}/{'/'.join(parts)}" if parts else MOUNT
    files = [entry for entry in listing.entries if entry.kind == "file"]
    if listing.is_file:
        [entry] = listing.entries
        if entry.kind != "file":
            return f"{where} is not a regular file; it has no download link."
        if not shown_files:
            return f"{where}: {format_size(entry.size)} (its name cannot be put in a link)."
        return f"{where}: {format_size(entry.size)}. The user was shown it with a download link."
    folders = sum(entry.kind == "folder" for entry in listing.entries)
    total = sum(entry.size for entry in files)
    header = (
        f"{where}: {len(files)} {_plural(len(files), 'file')} ({format_size(total)}), "
        f"{folders} {_plural(folders, 'folder')}"
        + ("" if listing.complete else f" (stopped after {LIST_SCAN_LIMIT} entries)")
        + (":" if listing.entries else ".")
    )
    footer: list[str] = []
    if not listing.complete:
        footer.append(
            f"Listing stopped after {LIST_SCAN_LIMIT} entries: list a subfolder to see the rest."
        )
    if listing.not_entered:
        footer.append(
            f"Folders nested deeper than {LIST_MAX_DEPTH} levels were not entered: "
            + ", ".join(_listed(path) for path in listing.not_entered[:5])
            + (" …" if len(listing.not_entered) > 5 else "")
        )
    if listing.hidden:
        names = ", ".join(_listed(path) for path in listing.hidden[:10])
        more = f" and {len(listing.hidden) - 10} more" if len(listing.hidden) > 10 else ""
        footer.append(
            f"Hidden entries not listed: {names}{more} (list one by its path to see inside)."
        )
    if shown_files:
        footer.append(
            f"The user was shown {'these' if shown_files == len(files) else shown_files} "
            "files with download links."
        )
    budget = limit - len(header) - sum(len(line) + 1 for line in footer) - 80
    lines: list[str] = []
    for index, entry in enumerate(listing.entries):
        line = _entry_line(entry)
        if len(line) + 1 > budget:
            lines.append(f"[… {len(listing.entries) - index} more entries not listed here]")
            break
        lines.append(line)
        budget -= len(line) + 1
    return "\n".join([header, *lines, *footer])


def _entry_line(entry: Entry) -> str:
    name = _listed(entry.path)
    match entry.kind:
        case "file":
            return f"{name}  {format_size(entry.size)}"
        case "folder":
            return f"{name}/"
        case "link":
            return f"{name}  (symbolic link, not followed)"
        case _:
            return f"{name}  (not a regular file)"


def _plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"


# -- read ----------------------------------------------------------------------------------


def read_text(workspace: Path, parts: Sequence[str]) -> TextPage:
    """The start of a text file (up to ``READ_SCAN_BYTES``) split into lines."""
    path = _joined(parts)
    parent = _open_parent(workspace, parts)
    try:
        try:
            fd = os.open(parts[-1], _READ_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            raise FileToolError(f"No such file: {shown(path)}.") from None
        except OSError as error:
            found = _lstat(parent, parts[-1])
            if found is not None and stat.S_ISLNK(found.st_mode):
                raise _symlink_error(parent, parts[-1], path) from None
            if found is not None and not stat.S_ISREG(found.st_mode):
                raise FileToolError(f"{shown(path)} is not a regular file.") from None
            raise FileToolError(f"Cannot read {shown(path)}: {_reason(error)}.") from None
    finally:
        os.close(parent)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise FileToolError(
                f"{shown(path)} is a folder, not a file: use list_files to see what is in it."
            )
        raise FileToolError(f"{shown(path)} is not a regular file.")
    with os.fdopen(fd, "rb") as file:
        data = file.read(READ_SCAN_BYTES)
        scanned_all = len(data) < READ_SCAN_BYTES or not file.read(1)
    size = max(info.st_size, len(data))
    encoding = text_encoding(data[:SNIFF_BYTES])
    if encoding is None:
        raise FileToolError(
            f"{shown(path)} is a binary file ({describe_binary(parts[-1], data)}, "
            f"{format_size(size)}), not text, so read_file does not show it. Use execute_python "
            "to work with it (pandas for spreadsheets, PIL for images, ...)."
        )
    text = data.decode(encoding, errors="replace").removeprefix("\ufeff")
    lines = text.split("\n")
    if not scanned_all:
        lines.pop()  # probably cut mid-line
    elif lines[-1] == "":
        lines.pop()  # the file ends with a line break
    return TextPage([line.removesuffix("\r") for line in lines], size, encoding, scanned_all)


def text_encoding(sample: bytes) -> str | None:
    """``utf-8`` or ``cp1252`` if ``sample`` (a file's start) reads as text, else None."""
    if b"\0" in sample:
        return None
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        text = sample.decode("cp1252")
    except UnicodeDecodeError:
        return None
    controls = sum(1 for c in text if ord(c) < 32 and c not in "\t\n\r\f\v\b\x1b")
    return "cp1252" if controls * 100 <= len(text) else None


def describe_binary(name: str, head: bytes) -> str:
    for magic, kind in _SIGNATURES:
        if head.startswith(magic):
            return kind
    guessed = mimetypes.guess_type(name)[0]
    return f"probably {guessed}" if guessed else "unknown type"


def page_text(page: TextPage, path: str, offset: int, limit: int, max_chars: int) -> str:
    total = len(page.lines)
    count = f"{total:,} {_plural(total, 'line')}" + ("" if page.scanned_all else "+")
    about = f"{format_size(page.size)}, {count}"
    if page.encoding != "utf-8":
        about += f", not UTF-8: read as {page.encoding}"
    if total == 0:
        return f"{shown(path)} is empty ({about})."
    if offset >= total:
        if not page.scanned_all:
            return (
                f"{shown(path)} ({about}): read_file reads only the first "
                f"{format_size(READ_SCAN_BYTES)} of a file, {total:,} lines; use execute_python "
                "for the rest."
            )
        return f"{shown(path)} has {count}; offset {offset} is past the end."
    rows: list[str] = []
    used = 0
    for number, line in enumerate(page.lines[offset : offset + limit], start=offset + 1):
        if len(line) > READ_LINE_CHARS:
            extra = len(line) - READ_LINE_CHARS
            line = line[:READ_LINE_CHARS] + f" [… {extra:,} more characters on this line]"
        row = f"{number:>6}\t{line}"
        if rows and used + len(row) + 1 > max_chars:
            break
        rows.append(row)
        used += len(row) + 1
    end = offset + len(rows)
    header = f"{shown(path)} ({about}), lines {offset + 1}–{end}:"
    notes: list[str] = []
    if end < total:
        rest = f"{total - end:,}" + ("" if page.scanned_all else "+")
        notes.append(
            f"[{rest} more {_plural(total - end, 'line')}: call read_file with offset={end} "
            "to continue]"
        )
    elif not page.scanned_all:
        notes.append(
            f"[the file goes on past the first {format_size(READ_SCAN_BYTES)}, which is all "
            "read_file reads; use execute_python for the rest]"
        )
    return "\n".join([header, *rows, *notes])


# -- write ---------------------------------------------------------------------------------


def write_bytes(workspace: Path, parts: Sequence[str], data: bytes, quota: int) -> bool:
    """Write ``data`` to ``parts`` atomically, unless the workspace would then take more than
    ``quota`` bytes (the file it replaces no longer counting); True if it replaced a file."""
    path = _joined(parts)
    parent = _open_parent(workspace, parts, create=True)
    try:
        name = parts[-1]
        existing = _lstat(parent, name)
        _check_quota(workspace, existing, len(data), quota)
        if existing is not None:
            if stat.S_ISLNK(existing.st_mode):
                raise FileToolError(
                    f"{shown(path)} is a symbolic link; write_file does not write through or "
                    "over links. Delete it first (delete_file removes the link only) or pick "
                    "another name."
                )
            if stat.S_ISDIR(existing.st_mode):
                raise FileToolError(f"{shown(path)} is a folder; pick a file name.")
            if not stat.S_ISREG(existing.st_mode):
                raise FileToolError(f"{shown(path)} exists and is not a regular file.")
        temp = f".wb-write-{secrets.token_hex(8)}.tmp"
        fd = os.open(temp, _TEMP_FLAGS, 0o644, dir_fd=parent)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            # rename() replaces the name itself: whatever was swapped in there meanwhile (a
            # link, say) is replaced, never followed.
            os.rename(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=parent)
            raise
    finally:
        os.close(parent)
    return existing is not None


def _check_quota(workspace: Path, replaced: os.stat_result | None, size: int, quota: int) -> None:
    used = disk_usage(workspace)
    if replaced is not None and stat.S_ISREG(replaced.st_mode):
        used -= replaced.st_blocks * 512
    if used + size > quota:
        raise FileToolError(
            f"The workspace uses {format_size(used)} of its {format_size(quota)}; writing "
            f"{format_size(size)} more would pass that. Delete files that are no longer "
            "needed first."
        )


# -- delete --------------------------------------------------------------------------------


def delete_entry(workspace: Path, parts: Sequence[str]) -> Entry:
    """Delete a file, a link (itself) or an empty folder; what was deleted."""
    path = _joined(parts)
    parent = _open_parent(workspace, parts)
    try:
        name = parts[-1]
        info = _lstat(parent, name)
        if info is None:
            raise FileToolError(f"No such file: {shown(path)}.")
        kind = _kind(info.st_mode)
        if kind == "folder":
            try:
                os.rmdir(name, dir_fd=parent)
            except OSError as error:
                if error.errno not in {errno.ENOTEMPTY, errno.EEXIST}:
                    raise
                raise FileToolError(
                    f"{shown(path)} is a folder that is not empty; delete_file removes files "
                    "and empty folders only. Delete what is inside first, or remove the whole "
                    "folder with execute_python (shutil.rmtree) if that is really wanted."
                ) from None
        else:
            os.unlink(name, dir_fd=parent)  # a link itself, never its target
    finally:
        os.close(parent)
    return Entry(path, kind, info.st_size if kind == "file" else 0)


# -- the tools -----------------------------------------------------------------------------


class FileTools:
    def __init__(self, workspaces: Workspaces, signer: UrlSigner, settings: Settings) -> None:
        self._workspaces = workspaces
        self._signer = signer
        self._settings = settings

    @property
    def write_limit(self) -> int:
        return min(WRITE_MAX_BYTES, self._settings.sandbox_max_file_mb * 1024 * 1024)

    def tools(self) -> list[FunctionTool]:
        @function_tool(name_override=LIST_FILES, description_override=_LIST_DESCRIPTION)
        async def list_files(context: ToolContext[TurnContext], path: str = ".") -> str:
            """
            Args:
                path: A folder or file, relative to the workspace ("." for all of it).
            """
            return await self.list_files(context.context, path)

        @function_tool(name_override=READ_FILE, description_override=_READ_DESCRIPTION)
        async def read_file(
            context: ToolContext[TurnContext], path: str, offset: int = 0, limit: int = 200
        ) -> str:
            """
            Args:
                path: The file, relative to the workspace.
                offset: Lines to skip from the start.
                limit: Lines to return.
            """
            return await self.read_file(context.context, path, offset, limit)

        @function_tool(name_override=WRITE_FILE, description_override=_WRITE_DESCRIPTION)
        async def write_file(context: ToolContext[TurnContext], path: str, content: str) -> str:
            """
            Args:
                path: The file to create or replace, relative to the workspace.
                content: The file's complete new text.
            """
            return await self.write_file(context.context, path, content)

        @function_tool(name_override=DELETE_FILE, description_override=_DELETE_DESCRIPTION)
        async def delete_file(context: ToolContext[TurnContext], path: str) -> str:
            """
            Args:
                path: The file (or empty folder) to delete, relative to the workspace.
            """
            return await self.delete_file(context.context, path)

        return [list_files, read_file, write_file, delete_file]

    # Each returns the text the model reads, errors included.

    async def list_files(self, context: TurnContext, path: str = ".") -> str:
        await _progress(context, "book-open", f"Listing {_label(path, 'files')}…")
        try:
            parts = workspace_parts(path)
            listing = await self._on_disk(context, "list", path, list_entries, parts)
        except FileToolError as error:
            return str(error)
        files = [entry for entry in listing.entries if entry.kind == "file"]
        views = [
            FileView(entry.path, self._url(context, entry.path), entry.size)
            for entry in files
            if _printable(entry.path)
        ][:WIDGET_FILES]
        if views:
            note = None
            if len(views) < len(files):
                note = f"Showing {len(views)} of {len(files)} files."
            if not listing.complete:
                note = (note + " " if note else "") + "The listing was cut short."
            title = "Files" if not parts else f"Files in {_joined(parts)}"
            await self._show(context, views, "File" if listing.is_file else title, note)
        return listing_text(listing, parts, self._settings.tool_output_chars, len(views))

    async def read_file(
        self, context: TurnContext, path: str, offset: int = 0, limit: int = 200
    ) -> str:
        await _progress(context, "document", f"Reading {_label(path, 'a file')}…")
        if offset < 0:
            return "offset must be 0 or more (the number of lines to skip)."
        if limit < 1:
            return "limit must be at least 1 (the number of lines to return)."
        try:
            parts = _file_parts(path)
            page = await self._on_disk(context, "read", path, read_text, parts)
        except FileToolError as error:
            return str(error)
        max_chars = max(READ_MAX_CHARS, self._settings.tool_output_chars)
        return page_text(page, _joined(parts), offset, min(limit, READ_MAX_LIMIT), max_chars)

    async def write_file(self, context: TurnContext, path: str, content: str) -> str:
        await _progress(context, "write", f"Writing {_label(path, 'a file')}…")
        try:
            parts = _file_parts(path)
            bad = next((part for part in parts if not _printable(part)), None)
            if bad is not None:
                raise FileToolError(
                    f"{shown(bad)}: file names cannot contain control characters (line breaks, "
                    "tabs, ...) or invalid text."
                )
            try:
                data = content.encode("utf-8")
            except UnicodeEncodeError:
                raise FileToolError("The content is not valid text (a lone surrogate).") from None
            if len(data) > self.write_limit:
                raise FileToolError(
                    f"The content is {format_size(len(data))}; write_file writes at most "
                    f"{format_size(self.write_limit)}. Write large files with execute_python."
                )
            quota = self._settings.workspace_quota_mb * 1024 * 1024
            replaced = await self._on_disk(context, "write", path, write_bytes, parts, data, quota)
        except FileToolError as error:
            return str(error)
        relative = _joined(parts)
        view = FileView(relative, self._url(context, relative), len(data))
        await self._show(context, [view], "Replaced file" if replaced else "New file", None)
        lines = content.count("\n") + (0 if content.endswith("\n") or not content else 1)
        return (
            f"{'Replaced' if replaced else 'Created'} {MOUNT}/{relative} "
            f"({format_size(len(data))}, {lines} {_plural(lines, 'line')}). The user was shown "
            "it with a download link."
        )

    async def delete_file(self, context: TurnContext, path: str) -> str:
        await _progress(context, "page-blank", f"Deleting {_label(path, 'a file')}…")
        try:
            parts = _file_parts(path)
            entry = await self._on_disk(context, "delete", path, delete_entry, parts)
        except FileToolError as error:
            return str(error)
        what = {
            "file": "the file", "folder": "the empty folder", "link": "the symbolic link",
            "other": "the special file",
        }[entry.kind]  # fmt: skip
        size = f" ({format_size(entry.size)})" if entry.kind == "file" else ""
        return f"Deleted {what} {MOUNT}/{entry.path}{size}."

    # -- helpers ---------------------------------------------------------------------------

    async def _on_disk(
        self,
        context: TurnContext,
        verb: str,
        path: str,
        operation: Callable[Concatenate[Path, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``operation(workspace, *args)`` in a worker thread; OS errors become messages."""
        user, thread = context.request_context.user_id, context.thread.id
        try:
            workspace = (
                self._workspaces.ensure(user, thread)
                if verb == "write"
                else self._workspaces.path(user, thread)
            )
            return await asyncio.to_thread(operation, workspace, *args, **kwargs)
        except PathOutsideWorkspaceError as error:
            raise FileToolError(f"This conversation has no workspace: {error}.") from None
        except OSError as error:
            if error.errno == errno.ENAMETOOLONG:
                raise FileToolError(f"{shown(path)}: the path is too long.") from None
            if error.errno in {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}:
                raise FileToolError(f"Cannot {verb} {shown(path)}: no space left.") from None
            raise FileToolError(f"Cannot {verb} {shown(path)}: {_reason(error)}.") from None

    def _url(self, context: TurnContext, relative: str) -> str:
        request = context.request_context
        return workspace_file_url(
            self._signer, request.base_url, request.user_id, context.thread.id, relative
        )

    async def _show(
        self, context: TurnContext, files: list[FileView], title: str, note: str | None
    ) -> None:
        item = WidgetItem(
            id=context.generate_id("message"),
            thread_id=context.thread.id,
            created_at=datetime.now(),
            widget=file_list_widget(files, title=title, note=note),
            copy_text="\n".join(file.name for file in files),
        )
        await context.stream(ThreadItemAddedEvent(item=item))
        await context.stream(ThreadItemDoneEvent(item=item))


def _file_parts(path: str) -> tuple[str, ...]:
    parts = workspace_parts(path)
    if not parts:
        raise FileToolError(
            f"{shown(path)} is the workspace folder itself; name a file in it "
            "(list_files shows what is there)."
        )
    return parts


def _label(path: str, fallback: str) -> str:
    """``path`` as a progress message shows it: short, printable."""
    if not path or path in {".", "./", MOUNT, MOUNT + "/"}:
        return fallback
    name = path if _printable(path) else repr(path)[1:-1]
    return name if len(name) <= 60 else "…" + name[-59:]


async def _progress(context: TurnContext, icon: IconName, text: str) -> None:
    await context.stream(ProgressUpdateEvent(icon=icon, text=text))


class FileToolPlugin(ToolPlugin):
    """One of the file tools; those with a widget of their own show no workflow task."""

    def __init__(self, tool: FunctionTool) -> None:
        self.id = tool.name
        self._tool = tool
        self._own_widget = tool.name in WIDGET_TOOLS
        self.widget_templates = ("file_list",) if self._own_widget else ()

    def tool(self) -> FunctionTool:
        return self._tool

    async def call_started(self, turn: TurnContext, item: Any) -> None:
        if not self._own_widget:
            await super().call_started(turn, item)


def plugins(services: ToolServices) -> list[ToolPlugin]:
    tools = FileTools(services.workspaces, services.signer, services.settings)
    return [FileToolPlugin(tool) for tool in tools.tools()]
