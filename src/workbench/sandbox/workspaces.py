"""Workspace directories: one per thread, owned by the thread's user.

``$WORKBENCH_DATA_DIR/workspaces/<user key>/<thread id>/`` is what the thread's sandboxed
kernel sees as ``/workspace`` and what the file tools and download links read. The user key
is a hash, so a user id never becomes a path component.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from workbench.sandbox.workspace_fs import DIR_FLAGS, open_folder, open_root

_BLOCK = 4096
_HELD = 64  # folder descriptors a scan keeps open


class PathOutsideWorkspaceError(ValueError):
    pass


@dataclass(frozen=True)
class FileInfo:
    path: str  # relative to the workspace, with forward slashes
    size: int
    modified_ns: int


class Workspaces:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, user_id: str, thread_id: str) -> Path:
        if not thread_id or "/" in thread_id or thread_id in {".", ".."} or "\0" in thread_id:
            raise PathOutsideWorkspaceError(f"not a thread id: {thread_id!r}")
        user_key = hashlib.sha256(user_id.encode()).hexdigest()[:32]
        return self.root / user_key / thread_id

    def ensure(self, user_id: str, thread_id: str) -> Path:
        directory = self.path(user_id, thread_id)
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def remove(self, user_id: str, thread_id: str) -> None:
        shutil.rmtree(self.path(user_id, thread_id), ignore_errors=True)


@dataclass(frozen=True)
class WorkspaceScan:
    files: dict[str, FileInfo]  # regular files outside hidden folders, at most FILES_LISTED
    used: int  # bytes on disk: every entry, hidden ones too, at least one block each


FILES_LISTED = 10_000


def scan(workspace: Path, *, list_files: bool = True) -> WorkspaceScan:
    """One walk of ``workspace``, links not followed: what files it holds, what disk it takes.

    Each entry counts at least one block, so a flood of empty files counts too; hidden
    folders (``.outputs``, a virtualenv) count like any other, but what is in them is not
    listed. Folders are opened like every host access to a workspace (``workspace_fs``): from
    a descriptor of their parent, never through a link swapped in after they were listed.
    """
    files: dict[str, FileInfo] = {}
    used = 0
    try:
        chain = _Chain(open_root(workspace))
    except OSError:
        return WorkspaceScan(files, used)
    folders: list[tuple[tuple[str, ...], bool]] = [((), list_files)]
    try:
        while folders:
            parts, listed = folders.pop()
            with contextlib.suppress(OSError):  # swapped for a link or gone meanwhile
                used += _scan_folder(chain.enter(parts), parts, listed, folders, files)
    finally:
        chain.close()
    return WorkspaceScan(files, used)


def _scan_folder(
    fd: int,
    parts: tuple[str, ...],
    listed: bool,
    folders: list[tuple[tuple[str, ...], bool]],
    files: dict[str, FileInfo],
) -> int:
    """Bytes the entries of the folder ``fd`` take; its folders are queued, its files noted."""
    used = 0
    with os.scandir(fd) as entries:
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone since it was listed
            used += max(info.st_blocks * 512, _BLOCK)
            inner = (*parts, entry.name)
            if stat.S_ISDIR(info.st_mode):
                folders.append((inner, listed and entry.name[0] != "."))
            elif listed and stat.S_ISREG(info.st_mode) and len(files) < FILES_LISTED:
                relative = "/".join(inner)
                files[relative] = FileInfo(relative, info.st_size, info.st_mtime_ns)
    return used


class _Chain:
    """Descriptors of the folders from the workspace down to the one entered last.

    A depth-first walk enters a child of that folder, or of one of its ancestors, next: one
    ``openat`` each. At most ``_HELD`` are kept open, so a deeply nested workspace does not
    use up the server's descriptors; folders deeper than that are walked to from the deepest.
    """

    def __init__(self, root: int) -> None:
        self._fds = [root]
        self._parts: tuple[str, ...] = ()
        self._extra: int | None = None  # a folder deeper than _HELD, open for one scandir

    def enter(self, parts: tuple[str, ...]) -> int:
        self._close_extra()
        keep = 0
        while keep < min(len(parts), len(self._fds) - 1) and parts[keep] == self._parts[keep]:
            keep += 1
        while len(self._fds) > keep + 1:
            os.close(self._fds.pop())
        self._parts = parts[:keep]
        for part in parts[keep:_HELD]:
            self._fds.append(os.open(part, DIR_FLAGS, dir_fd=self._fds[-1]))
            self._parts += (part,)
        if len(parts) <= _HELD:
            return self._fds[-1]
        self._extra = open_folder(self._fds[-1], parts[_HELD:])
        return self._extra

    def close(self) -> None:
        self._close_extra()
        while self._fds:
            os.close(self._fds.pop())

    def _close_extra(self) -> None:
        if self._extra is not None:
            os.close(self._extra)
            self._extra = None


def disk_usage(workspace: Path) -> int:
    return scan(workspace, list_files=False).used
