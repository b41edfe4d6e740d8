"""Paths inside a workspace, and the only ways host code opens them.

A workspace is shaped by sandboxed code, which may plant symlinks or swap a folder for one at
any moment, while the host reads and writes it: the file tools, the download route, cell
images, attachment copies, CSV previews. All of them go through here, under one set of rules:

* A path is first checked as text (``workspace_parts``): relative to the workspace, or
  absolute under ``/workspace``; no ``..``; no NUL; valid file names; at most ``NAME_MAX``
  bytes a component and ``PATH_MAX`` in all.
* It is then walked one component at a time from a descriptor of the workspace, each opened
  relative to the previous one (``dir_fd``) with ``O_NOFOLLOW | O_CLOEXEC``. A symlink
  anywhere in the path is refused, never followed, even one that points back inside: what it
  points to may change between any check and any use.
* A file is read only if it is a regular file (opened ``O_NONBLOCK``: a FIFO planted there
  cannot hang a worker thread); created with ``O_EXCL`` (never over something that exists);
  replaced by renaming a new file over the name (the name itself is replaced, whatever was
  swapped in); deleted relative to its folder's descriptor (a link itself, never its target).

Every refusal is a ``WorkspaceError`` whose text says what is wrong and what to do instead, so
a tool can return it to the model as is. It is an ``OSError``: host code that already copes
with the disk failing (a cell image dropped, an attachment not copied) copes with a refusal the
same way. Other ``OSError``s are the disk's own; ``describe`` words either kind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

MOUNT = "/workspace"  # where the kernel sees the workspace; accepted as a path prefix
NAME_MAX = 255  # bytes per path component (Linux)
PATH_MAX = 4096  # bytes per path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NUMBERED = 1000  # "name (2).ext" ... tried before create_new_file gives up


class WorkspaceError(OSError):
    """A path the workspace refuses, or cannot serve; ``str(error)`` says why."""

    def __init__(self, message: str, code: int = errno.EPERM) -> None:
        super().__init__(code, message)

    def __str__(self) -> str:
        return str(self.strerror)


# -- paths as text --------------------------------------------------------------------------


def workspace_parts(path: str) -> tuple[str, ...]:
    """The components of ``path`` inside the workspace, or a ``WorkspaceError`` saying why not.

    Relative paths and ``/workspace/...`` are accepted; ``.`` components and repeated slashes
    are dropped, a backslash is a slash. ``..``, any other absolute path, NUL bytes, text that
    is no file name and names longer than the file system allows are refused.
    """
    if "\0" in path:
        raise WorkspaceError(f"{shown(path)}: a path cannot contain a NUL byte.")
    text = path.replace("\\", "/")
    if text == MOUNT or text.startswith(MOUNT + "/"):
        text = text[len(MOUNT) :]
    elif text.startswith("/"):
        raise WorkspaceError(
            f"{shown(path)} is outside the workspace. Use a path relative to the workspace "
            f"(such as 'data/report.csv'), or one starting with {MOUNT}/."
        )
    parts = tuple(part for part in text.split("/") if part not in {"", "."})
    if ".." in parts:
        raise WorkspaceError(
            f"{shown(path)}: '..' is not allowed; paths stay inside this conversation's workspace."
        )
    try:
        sizes = [len(os.fsencode(part)) for part in parts]
    except UnicodeEncodeError:
        raise WorkspaceError(f"{shown(path)} is not a valid file name.") from None
    if sum(sizes) + len(sizes) > PATH_MAX:
        raise WorkspaceError(
            f"{shown(path)}: the path is too long (at most {PATH_MAX} bytes).", errno.ENAMETOOLONG
        )
    for part, size in zip(parts, sizes, strict=True):
        if size > NAME_MAX:
            raise WorkspaceError(
                f"{shown(part)}: a file or folder name is at most {NAME_MAX} bytes "
                f"(this one is {size}).",
                errno.ENAMETOOLONG,
            )
    return parts


def file_parts(path: str) -> tuple[str, ...]:
    """``workspace_parts`` of a path that must name something in the workspace."""
    parts = workspace_parts(path)
    if not parts:
        raise WorkspaceError(
            f"{shown(path)} is the workspace folder itself; name a file in it "
            "(list_files shows what is there).",
            errno.EISDIR,
        )
    return parts


def shown(path: str, limit: int = 80) -> str:
    """``path`` quoted for a message: control characters escaped, long ones shortened."""
    if len(path) > limit:
        path = path[: limit - 20] + "…" + path[-19:]
    return repr(path)


def joined(parts: Sequence[str]) -> str:
    return "/".join(parts) or "."


def describe(error: OSError, verb: str, path: str) -> WorkspaceError:
    """``error``, met trying to ``verb`` ``path``, as a ``WorkspaceError`` a person can read."""
    if isinstance(error, WorkspaceError):
        return error
    if error.errno == errno.ENAMETOOLONG:
        return WorkspaceError(f"{shown(path)}: the path is too long.", error.errno)
    if error.errno in {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}:
        return WorkspaceError(f"Cannot {verb} {shown(path)}: no space left.", error.errno)
    reason = (error.strerror or str(error)).lower()
    return WorkspaceError(f"Cannot {verb} {shown(path)}: {reason}.", error.errno or errno.EIO)


# -- walking without following links --------------------------------------------------------


def open_root(workspace: Path) -> int:
    """A descriptor of the workspace folder itself."""
    try:
        return os.open(workspace, DIR_FLAGS)
    except FileNotFoundError:
        raise WorkspaceError(
            "The workspace is empty (nothing has been written yet).", errno.ENOENT
        ) from None


def open_parent(workspace: Path, parts: Sequence[str], *, create: bool = False) -> int:
    """The folder holding ``parts[-1]``; ``create`` makes missing folders on the way."""
    root = open_root(workspace)
    try:
        return open_folder(root, parts[:-1], create=create)
    finally:
        os.close(root)


def open_folder(root: int, parts: Sequence[str], *, create: bool = False) -> int:
    """A descriptor of the folder ``parts`` below ``root``, one component at a time."""
    fd = os.dup(root)
    try:
        for index, part in enumerate(parts):
            child = open_child(fd, part, parts[: index + 1], create=create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_child(parent: int, name: str, so_far: Sequence[str], *, create: bool = False) -> int:
    """The folder ``name`` in ``parent`` (``so_far``: its path, for messages)."""
    for _ in range(3):
        try:
            return os.open(name, DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise WorkspaceError(
                    f"No such folder: {shown(joined(so_far))}.", errno.ENOENT
                ) from None
            with contextlib.suppress(FileExistsError):  # made meanwhile: open it
                os.mkdir(name, 0o755, dir_fd=parent)
        except OSError as error:
            raise _not_a_folder(parent, name, joined(so_far), error) from None
    raise WorkspaceError(f"{shown(joined(so_far))} keeps changing; try again.", errno.EAGAIN)


def lstat_at(folder: int, name: str) -> os.stat_result | None:
    """What ``name`` in ``folder`` is (a link itself, not its target), or None if nothing."""
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None


def symlink_refusal(folder: int, name: str, path: str) -> WorkspaceError:
    try:
        target = shown(os.readlink(name, dir_fd=folder), 60)
    except OSError:
        target = "somewhere"
    return WorkspaceError(
        f"{shown(path)} is a symbolic link (to {target}); the file tools never follow links. "
        "Use the path it points to if that is inside the workspace.",
        errno.ELOOP,
    )


def _not_a_folder(parent: int, name: str, path: str, error: OSError) -> WorkspaceError:
    info = lstat_at(parent, name)
    if info is not None and stat.S_ISLNK(info.st_mode):
        return symlink_refusal(parent, name, path)
    if info is not None and not stat.S_ISDIR(info.st_mode):
        return WorkspaceError(f"{shown(path)} is a file, not a folder.", errno.ENOTDIR)
    return describe(error, "open the folder", path)


# -- files ------------------------------------------------------------------------------------


def open_file(workspace: Path, parts: Sequence[str]) -> int:
    """A read-only descriptor of the regular file ``parts`` (``file_parts`` of a path)."""
    path = joined(parts)
    parent = open_parent(workspace, parts)
    try:
        fd = os.open(parts[-1], _READ_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        raise WorkspaceError(f"No such file: {shown(path)}.", errno.ENOENT) from None
    except OSError as error:
        found = lstat_at(parent, parts[-1])
        if found is not None and stat.S_ISLNK(found.st_mode):
            raise symlink_refusal(parent, parts[-1], path) from None
        if found is not None and not stat.S_ISREG(found.st_mode):
            raise _not_regular(path, found.st_mode) from None
        raise describe(error, "read", path) from None
    finally:
        os.close(parent)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_regular(path, mode)
    return fd


def _not_regular(path: str, mode: int) -> WorkspaceError:
    if stat.S_ISDIR(mode):
        return WorkspaceError(
            f"{shown(path)} is a folder, not a file: use list_files to see what is in it.",
            errno.EISDIR,
        )
    return WorkspaceError(f"{shown(path)} is not a regular file.", errno.EINVAL)


def open_existing_file(workspace: Path, folder: str, name: str) -> int | None:
    """``open_file`` of ``folder/name``, or None where it would refuse (or nothing is there)."""
    try:
        return open_file(workspace, (*workspace_parts(folder), _one_name(name)))
    except OSError:
        return None


def create_new_file(workspace: Path, folder: str, name: str) -> tuple[str, int]:
    """A new file ``folder/name`` (``name (2)``, ... when taken; missing folders made): its
    path relative to the workspace and a write descriptor. Nothing is ever overwritten."""
    parts = workspace_parts(folder)
    stem, dot, extension = _one_name(name).rpartition(".")
    if not dot:
        stem, extension = name, ""
    root = open_root(workspace)
    try:
        directory = open_folder(root, parts, create=True)
    finally:
        os.close(root)
    try:
        for attempt in range(1, _NUMBERED):
            candidate = name if attempt == 1 else f"{stem} ({attempt}){dot}{extension}"
            with contextlib.suppress(FileExistsError):
                fd = os.open(candidate, _NEW_FLAGS, 0o644, dir_fd=directory)
                return joined((*parts, candidate)), fd
        raise WorkspaceError(
            f"Too many files named like {shown(name)} in {shown(joined(parts))}.", errno.EEXIST
        )
    finally:
        os.close(directory)


def _one_name(name: str) -> str:
    if workspace_parts(name) != (name,):
        raise WorkspaceError(f"{shown(name)} is not a file name.", errno.EINVAL)
    return name


def replace_file(folder: int, name: str, path: str, data: bytes) -> bool:
    """Atomically make ``name`` in ``folder`` hold ``data``; True if it replaced a file.

    Over a link, a folder or a special file it refuses (``path``: the name's, for messages).
    """
    existing = lstat_at(folder, name)
    if existing is not None:
        if stat.S_ISLNK(existing.st_mode):
            raise WorkspaceError(
                f"{shown(path)} is a symbolic link; write_file does not write through or "
                "over links. Delete it first (delete_file removes the link only) or pick "
                "another name.",
                errno.ELOOP,
            )
        if stat.S_ISDIR(existing.st_mode):
            raise WorkspaceError(f"{shown(path)} is a folder; pick a file name.", errno.EISDIR)
        if not stat.S_ISREG(existing.st_mode):
            raise WorkspaceError(f"{shown(path)} exists and is not a regular file.", errno.EINVAL)
    temp = f".wb-write-{secrets.token_hex(8)}.tmp"
    fd = os.open(temp, _NEW_FLAGS, 0o644, dir_fd=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        # rename() replaces the name itself: whatever was swapped in there meanwhile (a link,
        # say) is replaced, never followed.
        os.rename(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=folder)
        raise
    return existing is not None


def delete(workspace: Path, parts: Sequence[str]) -> os.stat_result:
    """Delete a file, a link (itself) or an empty folder; what it was."""
    path = joined(parts)
    parent = open_parent(workspace, parts)
    try:
        name = parts[-1]
        info = lstat_at(parent, name)
        if info is None:
            raise WorkspaceError(f"No such file: {shown(path)}.", errno.ENOENT)
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(name, dir_fd=parent)  # a link itself, never its target
            return info
        try:
            os.rmdir(name, dir_fd=parent)
        except OSError as error:
            if error.errno not in {errno.ENOTEMPTY, errno.EEXIST}:
                raise
            raise WorkspaceError(
                f"{shown(path)} is a folder that is not empty; delete_file removes files and "
                "empty folders only. Delete what is inside first, or remove the whole folder "
                "with execute_python (shutil.rmtree) if that is really wanted.",
                errno.ENOTEMPTY,
            ) from None
        return info
    finally:
        os.close(parent)
