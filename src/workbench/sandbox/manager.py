"""Kernels per thread: started on first use, kept while active, pooled ahead of need.

* One kernel per thread, created on the thread's first cell; a pre-warmed spare (kept
  ``WORKBENCH_KERNEL_POOL_SIZE`` deep) makes that first cell skip the cold start.
* Kernels unused for ``WORKBENCH_KERNEL_IDLE_SECONDS`` are shut down; beyond
  ``WORKBENCH_MAX_KERNELS`` the least recently used idle one is.
* A kernel that died, hung past its interrupt, or left processes behind is replaced, and the
  result says its state was lost so the model can redo what it needs.
* Deleting a thread stops its kernel and removes its workspace; shutting down stops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.config import Settings
from workbench.sandbox.bubblewrap import Limits, sandbox_problem
from workbench.sandbox.cgroups import CgroupFactory
from workbench.sandbox.kernel import (
    Kernel,
    KernelDiedError,
    KernelStuckError,
    StrayProcessesError,
)
from workbench.sandbox.outputs import CellOutput, CellStatus
from workbench.sandbox.workspaces import FileInfo, Workspaces, disk_usage, scan

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (user id, thread id)
_QUOTA_POLL_SECONDS = 0.25


class SandboxUnavailableError(RuntimeError):
    pass


@dataclass
class _QuotaCheck:
    limit: int  # bytes the workspace may take
    start: int  # bytes it took when the cell started
    passed: bool = False

    def measured(self, used: int) -> None:
        self.passed = self.passed or (used > self.limit and used > self.start)

    def stop_reason(self) -> CellStatus | None:
        return "disk_quota" if self.passed else None


@dataclass
class _DiskAllowance:
    limit: int  # what the last cell ran under: over the quota by what came between cells
    used_after: int  # bytes the workspace took when that cell ended


@dataclass
class CellRun:
    output: CellOutput
    changed_files: list[FileInfo] = field(default_factory=list)
    state_lost: str | None = None  # why earlier variables are gone, when they are


class KernelManager:
    def __init__(self, settings: Settings, workspaces: Workspaces) -> None:
        self.settings = settings
        self.workspaces = workspaces
        self.sandboxed = settings.sandbox == "bubblewrap"
        self.problem: str | None = None
        self._limits = Limits.from_settings(settings)
        self._cgroups = CgroupFactory()
        # Short: ipc socket paths must fit in 108 bytes.
        self._runtime_root = Path(tempfile.mkdtemp(prefix="workbench-kernels-"))
        self._spare_root = settings.data_dir / "sandbox" / "spares"
        self._matplotlib_cache = settings.data_dir / "sandbox" / "matplotlib"
        self._kernels: OrderedDict[Key, Kernel] = OrderedDict()
        self._spares: list[Kernel] = []
        self._locks: dict[Key, asyncio.Lock] = {}
        self._ended: dict[Key, str] = {}  # threads whose kernel went away, and why
        self._disk: dict[Key, _DiskAllowance] = {}  # per workspace, between cells
        self._names = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.sandboxed:
            self.problem = await asyncio.to_thread(sandbox_problem)
            if self.problem:
                logger.error("Python sandbox unavailable, code execution refused: %s", self.problem)
                return
        else:
            logger.warning(
                "WORKBENCH_SANDBOX=none: model-written code runs UNSANDBOXED with the server's "
                "rights. Only for a trusted, single-user machine."
            )
        if not self._cgroups.available:
            logger.warning("no cgroup for kernels: the process limit is an rlimit only")
        await asyncio.to_thread(self._build_matplotlib_cache)
        self._spawn(self._reap_idle_kernels())
        self._spawn(self._refill_pool())

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        kernels = [*self._kernels.values(), *self._spares]
        self._kernels.clear()
        self._spares.clear()
        await asyncio.gather(*(kernel.shutdown() for kernel in kernels))
        await asyncio.to_thread(self._cgroups.close)
        shutil.rmtree(self._runtime_root, ignore_errors=True)
        shutil.rmtree(self._spare_root, ignore_errors=True)

    @property
    def live_kernels(self) -> int:
        return len(self._kernels)

    @property
    def pooled_kernels(self) -> int:
        """Spare kernels started and waiting for a thread."""
        return len(self._spares)

    # -- cells --------------------------------------------------------------------------------

    async def run_cell(
        self,
        user_id: str,
        thread_id: str,
        code: str,
        *,
        on_starting: Callable[[], Awaitable[None]] | None = None,
    ) -> CellRun:
        if self.problem:
            raise SandboxUnavailableError(
                f"Code execution is disabled on this server: the sandbox does not work here "
                f"({self.problem}). The operator can fix it or set WORKBENCH_SANDBOX=none."
            )
        key = (user_id, thread_id)
        async with self._locks.setdefault(key, asyncio.Lock()):
            kernel = self._kernels.get(key)
            state_lost = None
            if kernel is not None and not await kernel.alive():
                await self._retire(key, "the Python kernel crashed")
                kernel = None
            if kernel is None:
                if on_starting is not None:
                    await on_starting()
                kernel = await self._kernel_for(key)
                state_lost = self._ended.pop(key, None)
            self._kernels.move_to_end(key)
            before = await asyncio.to_thread(scan, kernel.workspace)
            quota = self._quota_check(key, before.used)
            try:
                output = await self._execute(key, kernel, quota)(code)
            finally:  # a cut-short cell's bytes count towards the next one's limit too
                after = await asyncio.to_thread(scan, kernel.workspace)
                self._settle_quota(key, quota, after.used)
            if quota.passed and output.status == "ok":
                output.status = "disk_quota"  # ended before a measurement caught it
            if output.kernel_restarted:
                state_lost = "the cell's kernel had to be restarted"
            changed = [
                info for path, info in sorted(after.files.items()) if before.files.get(path) != info
            ]
            return CellRun(output, changed, state_lost)

    def _execute(
        self, key: Key, kernel: Kernel, quota: _QuotaCheck
    ) -> Callable[[str], Awaitable[CellOutput]]:
        async def run(code: str) -> CellOutput:
            try:
                async with self._watching(kernel.workspace, quota):
                    return await kernel.execute(
                        code,
                        time_limit=self.settings.sandbox_timeout,
                        cpu_seconds=self.settings.sandbox_cpu_seconds,
                        max_chars=self.settings.tool_output_chars * 4,
                        stop_when=quota.stop_reason,
                    )
            except KernelDiedError:
                await self._retire(key, "the Python kernel stopped unexpectedly")
                return CellOutput(status="crashed", kernel_restarted=True)
            except KernelStuckError as stuck:
                await self._retire(key, "the kernel did not respond to an interrupt")
                return CellOutput(status=stuck.reason, kernel_restarted=True)
            except StrayProcessesError as strays:
                await self._retire(key, "the cell left processes running")
                strays.output.kernel_restarted = True
                return strays.output

        return run

    # -- the workspace's disk quota -----------------------------------------------------------
    #
    # A soft limit against runaway cells: the file system has no per-folder quota, so usage is
    # measured before a cell, a few times a second while it runs (less often when the walk
    # itself is slow) and once it ends. A cell that writes fast overshoots by what it writes
    # in that time, within RLIMIT_FSIZE per file. Bytes that arrive between cells (an
    # attachment copied in) may take a workspace over its quota; a cell's own overshoot never
    # raises the limit for the next one. A workspace over its limit still runs cells that do
    # not grow it, to clean up, say.

    def _quota_check(self, key: Key, used: int) -> _QuotaCheck:
        quota = self.settings.workspace_quota_mb * 1024 * 1024
        excess = max(0, used - quota)
        previous = self._disk.get(key)
        if previous is not None:
            grown_between_cells = max(0, used - previous.used_after)
            excess = min(excess, previous.limit - quota + grown_between_cells)
        return _QuotaCheck(limit=quota + excess, start=used)

    def _settle_quota(self, key: Key, check: _QuotaCheck, used_after: int) -> None:
        check.measured(used_after)
        self._disk[key] = _DiskAllowance(check.limit, used_after)

    @contextlib.asynccontextmanager
    async def _watching(self, workspace: Path, check: _QuotaCheck) -> AsyncIterator[None]:
        async def watch() -> None:
            pause = _QUOTA_POLL_SECONDS
            while not check.passed:
                await asyncio.sleep(pause)
                began = time.monotonic()
                check.measured(await asyncio.to_thread(disk_usage, workspace))
                pause = max(_QUOTA_POLL_SECONDS, 4 * (time.monotonic() - began))

        watcher = asyncio.ensure_future(watch())
        try:
            yield
        finally:
            watcher.cancel()
            await asyncio.wait([watcher])  # a Stop arriving meanwhile still cancels us
            if not watcher.cancelled() and (error := watcher.exception()) is not None:
                # The cell's outcome matters more than a failed measurement.
                logger.error("measuring the workspace %s failed", workspace, exc_info=error)

    async def forget_thread(self, user_id: str, thread_id: str) -> None:
        """The thread is gone: stop its kernel and delete its workspace."""
        key = (user_id, thread_id)
        kernel = self._kernels.pop(key, None)
        if kernel is not None:
            await kernel.shutdown()
        self._ended.pop(key, None)
        self._disk.pop(key, None)
        self._locks.pop(key, None)
        await asyncio.to_thread(self.workspaces.remove, user_id, thread_id)

    # -- kernels ------------------------------------------------------------------------------

    async def _kernel_for(self, key: Key) -> Kernel:
        await self._make_room()
        workspace = self.workspaces.path(*key)
        if self._spares:
            kernel = self._spares.pop()
            try:
                await asyncio.to_thread(_adopt_workspace, kernel.workspace, workspace)
            except BaseException:  # cancelled too: the spare is no one's now
                await asyncio.shield(kernel.shutdown())
                raise
            kernel.workspace = workspace
        else:
            workspace.mkdir(parents=True, exist_ok=True)
            kernel = self._new_kernel(workspace)
            await kernel.start()
        self._kernels[key] = kernel
        self._spawn(self._refill_pool())
        return kernel

    def _new_kernel(self, workspace: Path) -> Kernel:
        name = f"k{next(self._names)}"
        return Kernel(
            name, workspace, self._runtime_root / name, self._limits, self._cgroups,
            self._matplotlib_cache, sandboxed=self.sandboxed,
        )  # fmt: skip

    async def _make_room(self) -> None:
        while len(self._kernels) >= self.settings.max_kernels:
            idle = [key for key, kernel in self._kernels.items() if not kernel.busy]
            if not idle:
                return  # all busy: run one over the cap rather than stall a user
            await self._retire(idle[0], "its kernel was stopped to make room for others")

    async def _retire(self, key: Key, reason: str) -> None:
        kernel = self._kernels.pop(key, None)
        if kernel is not None:
            await kernel.shutdown()
            self._ended[key] = reason

    async def _reap_idle_kernels(self) -> None:
        interval = min(5.0, self.settings.kernel_idle_seconds / 4)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for key, kernel in list(self._kernels.items()):
                if not kernel.busy and now - kernel.last_used > self.settings.kernel_idle_seconds:
                    await self._retire(key, "its kernel was shut down after being idle")

    async def _refill_pool(self) -> None:
        while not self._closing and len(self._spares) < self.settings.kernel_pool_size:
            workspace = self._spare_root / f"spare-{next(self._names)}"
            workspace.mkdir(parents=True, exist_ok=True)
            kernel = self._new_kernel(workspace)
            try:
                await kernel.start()
                await kernel.warm_up()
            except asyncio.CancelledError:  # closing
                await asyncio.shield(kernel.shutdown())
                raise
            except Exception:
                logger.exception("could not start a spare kernel")
                await kernel.shutdown()
                shutil.rmtree(workspace, ignore_errors=True)
                return
            if self._closing:
                await kernel.shutdown()
                return
            self._spares.append(kernel)

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _build_matplotlib_cache(self) -> None:
        """Build matplotlib's font list once on the host; kernels mount it read-only."""
        if any(self._matplotlib_cache.glob("fontlist-*.json")):
            return
        self._matplotlib_cache.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [sys.executable, "-c", "import matplotlib.font_manager"],
                env={"MPLCONFIGDIR": str(self._matplotlib_cache), "PATH": "/usr/bin:/bin"},
                capture_output=True, timeout=120, check=False,
            )  # fmt: skip


def _adopt_workspace(spare: Path, workspace: Path) -> None:
    """Make the spare kernel's directory the thread's workspace, keeping existing files.

    A rename keeps the inode the spare's sandbox has mounted at /workspace, so the running
    kernel sees the thread's files at once.
    """
    workspace.parent.mkdir(parents=True, exist_ok=True)
    if workspace.exists():
        for entry in workspace.iterdir():
            entry.rename(spare / entry.name)
        workspace.rmdir()
    spare.rename(workspace)
