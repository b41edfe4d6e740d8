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
from pathlib import Path, PurePosixPath

_BLOCK = 4096


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

    def resolve(self, workspace: Path, relative: str) -> Path:
        """``relative`` inside ``workspace``, refusing anything that would leave it.

        Absolute paths, ``..`` and symlinks pointing outside are all refused; the check is on
        the fully resolved path, so a symlink planted by code in the sandbox cannot be used to
        read the host through a download link or a file tool.
        """
        pure = PurePosixPath(relative.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts or "\0" in relative:
            raise PathOutsideWorkspaceError(f"{relative!r} is outside the workspace")
        try:
            base = workspace.resolve()
            target = (base / pure).resolve()
        except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
            raise PathOutsideWorkspaceError(f"{relative!r} cannot be resolved") from None
        if target != base and base not in target.parents:
            raise PathOutsideWorkspaceError(f"{relative!r} is outside the workspace")
        return target


@dataclass(frozen=True)
class WorkspaceScan:
    files: dict[str, FileInfo]  # regular files outside hidden folders, at most FILES_LISTED
    used: int  # bytes on disk: every entry, hidden ones too, at least one block each


FILES_LISTED = 10_000


def scan(workspace: Path, *, list_files: bool = True) -> WorkspaceScan:
    """One walk of ``workspace``, links not followed: what files it holds, what disk it takes.

    Each entry counts at least one block, so a flood of empty files counts too; hidden
    folders (``.outputs``, a virtualenv) count like any other, but what is in them is not
    listed.
    """
    files: dict[str, FileInfo] = {}
    used = 0
    folders = [(workspace, list_files)]
    while folders:
        folder, listed = folders.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    with contextlib.suppress(OSError):  # gone since it was listed
                        info = entry.stat(follow_symlinks=False)
                        used += max(info.st_blocks * 512, _BLOCK)
                        if entry.is_dir(follow_symlinks=False):
                            folders.append((Path(entry.path), listed and entry.name[0] != "."))
                        elif listed and stat.S_ISREG(info.st_mode) and len(files) < FILES_LISTED:
                            relative = Path(entry.path).relative_to(workspace).as_posix()
                            files[relative] = FileInfo(relative, info.st_size, info.st_mtime_ns)
        except OSError:
            continue
    return WorkspaceScan(files, used)


def disk_usage(workspace: Path) -> int:
    return scan(workspace, list_files=False).used


def open_existing_file(workspace: Path, folder: str, name: str) -> int | None:
    """A read descriptor of the regular file ``folder/name`` in ``workspace``, or None;
    like ``create_new_file``, never through a link (nor stuck opening a FIFO)."""
    try:
        directory = os.open(workspace / folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(name, flags, dir_fd=directory)
    except OSError:
        return None
    finally:
        os.close(directory)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def create_new_file(workspace: Path, folder: str, name: str) -> tuple[str, int]:
    """Create ``folder/name`` in ``workspace`` (``name (2)``, ... when taken); return the
    relative path and a write descriptor.

    Host-side writes into a workspace go through here: the sandbox shapes the workspace, so
    a link it planted as the folder or the file is never followed, and nothing is overwritten.
    Raises OSError (the folder is a link, say).
    """
    with contextlib.suppress(FileExistsError):
        (workspace / folder).mkdir()
    directory = os.open(workspace / folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        stem, dot, extension = name.rpartition(".")
        if not dot:
            stem, extension = name, ""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for attempt in range(1, 1000):
            candidate = name if attempt == 1 else f"{stem} ({attempt}){dot}{extension}"
            try:
                return f"{folder}/{candidate}", os.open(candidate, flags, 0o644, dir_fd=directory)
            except FileExistsError:
                continue
        raise FileExistsError(f"too many files named like {name!r} in {folder}")
    finally:
        os.close(directory)
