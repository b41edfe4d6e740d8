"""What the file tools do to a workspace: list, read, write, delete, on ``workspace_fs``.

Each takes the workspace folder and a path already checked as text (``workspace_parts``) and
walks it with the primitives of ``workspace_fs``, so nothing here follows a link either:
listings show links as links, reads and writes refuse them, deleting one removes the link.
Everything is bounded: a listing in entries and depth, a read in bytes; a write keeps the
workspace within its quota. Refusals are ``WorkspaceError``s; the disk's own failures are
``OSError``s (``workspace_fs.describe`` words them).
"""

from __future__ import annotations

import codecs
import errno
import itertools
import mimetypes
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from workbench.sandbox.workspace_fs import (
    DIR_FLAGS,
    WorkspaceError,
    delete,
    joined,
    lstat_at,
    open_child,
    open_file,
    open_folder,
    open_parent,
    open_root,
    replace_file,
    shown,
    symlink_refusal,
)
from workbench.sandbox.workspaces import disk_usage
from workbench.widgets import format_size

LIST_SCAN_LIMIT = 5000  # entries examined per listing
LIST_MAX_DEPTH = 12  # folders deeper than this are named but not entered
READ_SCAN_BYTES = 16 * 1024 * 1024  # read_text looks at most this far into a file
SNIFF_BYTES = 8192  # what binary detection looks at

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

Kind = Literal["file", "folder", "link", "other"]


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


def kind_of(mode: int) -> Kind:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


# -- list -------------------------------------------------------------------------------------


def list_entries(workspace: Path, parts: Sequence[str]) -> Listing:
    """What is at ``parts``: a folder's entries, recursively (bounded), or the one file.

    Hidden entries (a name starting with a dot) are named, not entered, unless ``parts`` is
    inside one.
    """
    listing = Listing()
    try:
        root = open_root(workspace)
    except WorkspaceError:
        if parts:
            raise _no_such(parts) from None
        return listing
    try:
        parent = open_folder(root, parts[:-1])
    finally:
        os.close(root)
    try:
        if not parts:
            fd = os.dup(parent)
        else:
            info = lstat_at(parent, parts[-1])
            if info is None:
                raise _no_such(parts)
            if not stat.S_ISDIR(info.st_mode):
                if stat.S_ISLNK(info.st_mode):
                    raise symlink_refusal(parent, parts[-1], joined(parts))
                listing.is_file = True
                listing.entries.append(Entry(joined(parts), kind_of(info.st_mode), info.st_size))
                return listing
            fd = open_child(parent, parts[-1], parts)
    finally:
        os.close(parent)
    try:
        show_hidden = any(part.startswith(".") for part in parts)
        _scan(fd, "/".join(parts), 0, show_hidden, listing)
    finally:
        os.close(fd)
    return listing


def _no_such(parts: Sequence[str]) -> WorkspaceError:
    return WorkspaceError(f"No such file or folder: {shown(joined(parts))}.", errno.ENOENT)


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
        kind = kind_of(info.st_mode)
        listing.entries.append(Entry(path, kind, info.st_size if kind == "file" else 0))
        if kind != "folder":
            continue
        if depth + 1 >= LIST_MAX_DEPTH:
            listing.not_entered.append(path)
            continue
        try:
            sub = os.open(child.name, DIR_FLAGS, dir_fd=fd)
        except OSError:
            continue  # swapped for a link or gone meanwhile: not followed
        try:
            _scan(sub, path, depth + 1, show_hidden, listing)
        finally:
            os.close(sub)
        if not listing.complete:
            return


# -- read -------------------------------------------------------------------------------------


def read_text(workspace: Path, parts: Sequence[str]) -> TextPage:
    """The start of a text file (up to ``READ_SCAN_BYTES``) split into lines."""
    path = joined(parts)
    fd = open_file(workspace, parts)
    size = os.fstat(fd).st_size
    with os.fdopen(fd, "rb") as file:
        data = file.read(READ_SCAN_BYTES)
        scanned_all = len(data) < READ_SCAN_BYTES or not file.read(1)
    size = max(size, len(data))
    encoding = text_encoding(data[:SNIFF_BYTES])
    if encoding is None:
        raise WorkspaceError(
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


# -- write and delete -------------------------------------------------------------------------


def write_bytes(workspace: Path, parts: Sequence[str], data: bytes, quota: int) -> bool:
    """Write ``data`` to ``parts`` atomically, making missing folders, unless the workspace
    would then take more than ``quota`` bytes (the file it replaces no longer counting);
    True if it replaced a file."""
    parent = open_parent(workspace, parts, create=True)
    try:
        _check_quota(workspace, lstat_at(parent, parts[-1]), len(data), quota)
        return replace_file(parent, parts[-1], joined(parts), data)
    finally:
        os.close(parent)


def _check_quota(workspace: Path, replaced: os.stat_result | None, size: int, quota: int) -> None:
    used = disk_usage(workspace)
    if replaced is not None and stat.S_ISREG(replaced.st_mode):
        used -= replaced.st_blocks * 512
    if used + size > quota:
        raise WorkspaceError(
            f"The workspace uses {format_size(used)} of its {format_size(quota)}; writing "
            f"{format_size(size)} more would pass that. Delete files that are no longer "
            "needed first.",
            errno.EDQUOT,
        )


def delete_entry(workspace: Path, parts: Sequence[str]) -> Entry:
    """Delete a file, a link (itself) or an empty folder; what was deleted."""
    info = delete(workspace, parts)
    kind = kind_of(info.st_mode)
    return Entry(joined(parts), kind, info.st_size if kind == "file" else 0)
