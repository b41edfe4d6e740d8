"""A pids cgroup per kernel, where the host lets us make one.

``RLIMIT_NPROC`` does not hold a fork bomb here: the sandbox's uid maps to the server's, and
for root the kernel ignores that limit. A cgroup's ``pids.max`` holds whatever the uid, and
listing the cgroup's members is how a kernel's every process is found and killed — nothing
started inside survives the kernel. Both cgroup v2 and the v1 ``pids`` hierarchy are handled;
without either, the rlimit is all there is (``workbench doctor`` says so).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import time
from pathlib import Path

logger = logging.getLogger(__name__)

_V2_ROOT = Path("/sys/fs/cgroup")
_V1_PIDS_ROOT = Path("/sys/fs/cgroup/pids")
_factories = itertools.count(1)


class Cgroup:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def pids(self) -> list[int]:
        try:
            return [int(line) for line in self.procs_file.read_text().split()]
        except OSError:
            return []

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL every member until none is left (new forks included)."""
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        self.kill()
        with contextlib.suppress(OSError):
            self.path.rmdir()


class CgroupFactory:
    """Makes ``<hierarchy>/workbench-<pid>-<n>/<name>`` cgroups with a pids limit.

    One parent per factory: two in one process (two servers in a test run, ``doctor``) must
    not share cgroups, or closing one would kill the other's kernels.
    """

    def __init__(self) -> None:
        self.parent = self._make_parent()

    @property
    def available(self) -> bool:
        return self.parent is not None

    def create(self, name: str, max_processes: int) -> Cgroup | None:
        if self.parent is None:
            return None
        path = self.parent / name
        try:
            path.mkdir(exist_ok=True)
            (path / "pids.max").write_text(str(max_processes))
        except OSError as error:
            logger.warning("could not create cgroup %s: %s", path, error)
            return None
        return Cgroup(path)

    def close(self) -> None:
        if self.parent is None:
            return
        for child in self.parent.iterdir():
            if child.is_dir():
                Cgroup(child).remove()
        with contextlib.suppress(OSError):
            self.parent.rmdir()

    @staticmethod
    def _make_parent() -> Path | None:
        name = f"workbench-{os.getpid()}-{next(_factories)}"
        candidates = []
        if (_V2_ROOT / "cgroup.controllers").exists():
            own = _own_v2_cgroup()
            if own is not None:
                candidates.append(own)
        if (_V1_PIDS_ROOT / "pids.max").exists() or (_V1_PIDS_ROOT / "cgroup.procs").exists():
            candidates.append(_V1_PIDS_ROOT)
        for base in candidates:
            _remove_abandoned(base)
            parent = base / name
            try:
                parent.mkdir(exist_ok=True)
                if base != _V1_PIDS_ROOT:
                    (parent / "cgroup.subtree_control").write_text("+pids")
                (parent / "probe").mkdir(exist_ok=True)
                (parent / "probe" / "pids.max").write_text("1")
                (parent / "probe").rmdir()
                return parent
            except OSError:
                with contextlib.suppress(OSError):
                    parent.rmdir()
        return None


def _remove_abandoned(base: Path) -> None:
    """Cgroups left by a server that died without closing them (their kernels died with it)."""
    for stale in base.glob("workbench-*"):
        pid = stale.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            for child in [*stale.iterdir(), stale]:
                if child.is_dir():
                    Cgroup(child).remove()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _own_v2_cgroup() -> Path | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return _V2_ROOT / line[3:].lstrip("/")
    except OSError:
        pass
    return None


def join_command(cgroup: Cgroup | None) -> list[str]:
    """A prefix that moves the process into ``cgroup`` before it execs the rest."""
    if cgroup is None:
        return []
    return ["sh", "-c", 'echo $$ > "$1" && shift && exec "$@"', "sh", str(cgroup.procs_file)]
