"""The bubblewrap command line a kernel runs under, and a check that it works on this host.

Inside: no network (an empty network namespace), no capabilities, uid 1000, the host's system
and Python read-only, size-capped ``/tmp`` and ``/dev/shm``, and only those and the thread's
workspace (at ``/workspace``) writable. Around it: ``prlimit`` for address space and file
size, and a cgroup for the process count where the host offers one (see ``cgroups.py``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from workbench.config import Settings

SANDBOX_UID = 1000
WORKSPACE = "/workspace"
# System paths a Python kernel needs, read-only; missing ones are skipped.
_SYSTEM_PATHS = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc/alternatives",
    "/etc/ld.so.cache", "/etc/localtime", "/etc/mime.types", "/etc/ssl/certs",
    "/etc/fonts",
]  # fmt: skip


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    max_processes: int
    tmp_bytes: int
    max_file_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        mb = 1024 * 1024
        return cls(
            memory_bytes=settings.sandbox_memory_mb * mb,
            max_processes=settings.sandbox_max_processes,
            tmp_bytes=settings.sandbox_tmp_mb * mb,
            max_file_bytes=settings.sandbox_max_file_mb * mb,
        )


def python_roots() -> list[Path]:
    """Where this interpreter and its packages live (the venv and the base install)."""
    roots = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    roots.add(Path(sys.executable).resolve().parent.parent)
    # A nested root is covered by its parent's bind.
    return sorted(r for r in roots if not any(o != r and o in r.parents for o in roots))


def bwrap_command(
    workspace: Path, runtime_dir: Path, limits: Limits, matplotlib_cache: Path | None
) -> list[str]:
    """Everything before the kernel's own argv."""
    command = [
        # bwrap's --clearenv clears only the kernel's environment: bwrap itself, pid 1 inside,
        # would keep the server's (keys, database URL) readable at /proc/1/environ.
        "env", "-i", shutil.which("prlimit") or "prlimit", f"--as={limits.memory_bytes}",
        f"--fsize={limits.max_file_bytes}", f"--nproc={limits.max_processes}", "--",
        shutil.which("bwrap") or "bwrap", "--unshare-all", "--unshare-user", "--disable-userns",
        "--cap-drop", "ALL", "--new-session", "--die-with-parent", "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_UID), "--hostname", "workbench", "--clearenv",
    ]  # fmt: skip
    for path in _SYSTEM_PATHS:
        command += ["--ro-bind-try", path, path]
    command += ["--proc", "/proc", "--dev", "/dev"]
    # bwrap's own / and /dev are tmpfs without a size limit, writable from inside: files there
    # are memory RLIMIT_AS does not count. Both are made read-only at the end; /dev/shm
    # (multiprocessing's semaphores) gets a capped tmpfs of its own.
    command += ["--size", str(limits.tmp_bytes), "--tmpfs", "/dev/shm"]
    # The tmpfs first: binds below /tmp must land on top of it, not under it.
    command += ["--size", str(limits.tmp_bytes), "--tmpfs", "/tmp", "--dir", "/tmp/home"]
    # After the tmpfs: a checkout (and its venv) under /tmp must not vanish beneath it.
    for root in python_roots():
        command += ["--ro-bind", str(root), str(root)]
    if matplotlib_cache is not None:
        # A writable config dir holding a prebuilt, read-only font list: without it every
        # kernel rebuilds matplotlib's font cache (~0.3 s) on first plot.
        for cached in sorted(matplotlib_cache.glob("*.json")):
            command += ["--ro-bind", str(cached), f"/tmp/matplotlib/{cached.name}"]
    command += ["--bind", str(runtime_dir), str(runtime_dir)]
    command += ["--bind", str(workspace), WORKSPACE, "--chdir", WORKSPACE]
    for name, value in SANDBOX_ENVIRONMENT.items():
        command += ["--setenv", name, value]
    # Last, once every mount point exists; not recursive, so /tmp and /workspace stay writable.
    command += ["--remount-ro", "/dev", "--remount-ro", "/"]
    return [*command, "--"]


# The whole environment inside: nothing of the server's (keys, database URLs) leaks in.
SANDBOX_ENVIRONMENT = {
    "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp/home",
    "LANG": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",
    # One BLAS thread: less address space per kernel, and fair on a shared host.
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    # glibc reserves 64 MiB of address space per thread arena: an idle kernel's 8 threads
    # would take ~740 MiB of RLIMIT_AS (a 512 MiB limit could not even start one), ~215 with 2.
    "MALLOC_ARENA_MAX": "2",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "MPLCONFIGDIR": "/tmp/matplotlib",
    # ipykernel's parent is bwrap's init, pid 1 here: it skips watching its parent (bwrap's
    # --die-with-parent does that), and without a parent pid it prints a console banner to
    # the server's stdout at every start.
    "JPY_PARENT_PID": "1",
}


def sandbox_problem() -> str | None:
    """Why sandboxed kernels cannot run on this host, or None when they can."""
    for tool in ("bwrap", "prlimit"):
        if shutil.which(tool) is None:
            package = "bubblewrap" if tool == "bwrap" else "util-linux"
            return f"`{tool}` is not installed (apt-get install {package})"
    probe = Path("/tmp")
    limits = Limits(512 * 1024 * 1024, 16, 16 * 1024 * 1024, 16 * 1024 * 1024)
    command = [*bwrap_command(probe, probe, limits, None), sys.executable, "-c", "print('ok')"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bubblewrap could not start: {error}"
    if result.returncode != 0 or result.stdout.strip() != "ok":
        detail = (result.stderr or result.stdout).strip().splitlines()
        return "bubblewrap failed: " + (detail[-1] if detail else f"exit {result.returncode}")
    return None
