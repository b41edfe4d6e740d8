"""One sandboxed Jupyter kernel: start it, run cells in it, stop it and everything it started."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import zmq
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager

from workbench.sandbox.bubblewrap import Limits, bwrap_command
from workbench.sandbox.cgroups import Cgroup, CgroupFactory, join_command
from workbench.sandbox.display import TABLE_MIME
from workbench.sandbox.outputs import CellOutput, CellStatus, Collector

logger = logging.getLogger(__name__)


_INTERRUPT_GRACE = 5.0

# Largest message part taken from a kernel: room for the largest image, base64-encoded. A
# bigger one (``print('x' * 10**9)``) is refused by zmq before it is read into the server's
# memory (it would be whole, however little of it is kept); the cell then ends without it.
_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
# zmq drops the connection with a refused message, and the cell's idle status may go with
# it: a cell whose execute_reply came this long ago with the iopub silent since is over.
_IDLE_AFTER_REPLY = 2.0
_DROPPED_NOTE = "[output too large to receive was dropped]\n"

# Run once in every kernel: DataFrames and Series also render as a small JSON table, which
# the cell widget shows as a table preview.
_BOOTSTRAP = f"""
def _workbench_setup():
    from IPython import get_ipython
    from IPython.core.formatters import JSONFormatter
    from traitlets import ObjectName, Unicode

    class TableFormatter(JSONFormatter):
        format_type = Unicode("{TABLE_MIME}")
        print_method = ObjectName("_repr_workbench_table_")

    display = get_ipython().display_formatter
    formatter = TableFormatter(parent=display)
    display.formatters[formatter.format_type] = formatter
    if formatter.format_type not in display.active_types:
        display.active_types = [*display.active_types, formatter.format_type]

    def frame(df, rows=20):
        head = df.head(rows)
        return {{
            "columns": [str(c) for c in head.columns],
            "rows": [[str(v) for v in row] for row in head.itertuples(index=False)],
            "shape": list(df.shape),
        }}

    for module in ("pandas", "pandas.core.frame", "pandas.core.series"):  # pandas 3 and 2
        formatter.for_type_by_name(module, "DataFrame", frame)
        formatter.for_type_by_name(module, "Series", lambda s: frame(s.to_frame()))

_workbench_setup()
del _workbench_setup
"""

# Run in spare kernels while they wait for a thread: the imports most cells begin with, and
# matplotlib's first figure, cost ~0.4 s once per kernel, better paid here than in a cell.
# Only sys.modules changes; the user's namespace stays as it was.
_WARM_UP = """
def _workbench_warm_up():
    try:
        import io
        import pandas
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots()
        axes.plot([0, 1], [0, 1])
        figure.savefig(io.BytesIO(), format="png")
        plt.close(figure)
    except Exception:  # not installed, out of memory: the cell will say so if it matters
        pass

_workbench_warm_up()
del _workbench_warm_up
"""


class Kernel:
    def __init__(
        self,
        name: str,
        workspace: Path,
        runtime_dir: Path,
        limits: Limits,
        cgroups: CgroupFactory,
        matplotlib_cache: Path | None,
        sandboxed: bool = True,
    ) -> None:
        self.name = name
        self.workspace = workspace
        self._runtime_dir = runtime_dir
        self._limits = limits
        self._cgroups = cgroups
        self._matplotlib_cache = matplotlib_cache
        self._sandboxed = sandboxed
        self._cgroup: Cgroup | None = None
        self._manager: AsyncKernelManager | None = None
        self._client: Any = None
        self._baseline_processes = 0
        self._abandoned: str | None = None  # a cell whose execute was cancelled, until it ends
        self.last_used = time.monotonic()
        self.busy = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, ready_within: float = 60.0) -> None:
        self._runtime_dir.mkdir(parents=True, exist_ok=True)
        self._runtime_dir.chmod(0o700)
        self._cgroup = self._cgroups.create(self.name, self._limits.max_processes)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        if self._sandboxed:
            argv = [
                *join_command(self._cgroup),
                *bwrap_command(
                    self.workspace, self._runtime_dir, self._limits, self._matplotlib_cache
                ),
                *argv,
            ]
        else:
            argv = [*join_command(self._cgroup), *argv]
        # TCP kernels never become ready inside an empty network namespace: use ipc sockets
        # in a directory both sides see. A signal interrupt would hit bwrap, not the kernel.
        manager = AsyncKernelManager(
            transport="ipc",
            ip=str(self._runtime_dir / "kernel"),
            connection_file=str(self._runtime_dir / "kernel.json"),
        )
        manager._kernel_spec = KernelSpec(
            argv=argv, display_name="Workbench", language="python", interrupt_mode="message"
        )
        self._manager = manager
        log_path = self._runtime_dir / "kernel.log"
        try:
            # The kernel's stdout and stderr go to a file of its own, capped like any file it
            # writes; inherited, the server's would let a cell flood or forge the server's log.
            with log_path.open("wb") as log:
                await manager.start_kernel(cwd=str(self.workspace), stdout=log, stderr=log)
            self._client = manager.client()
            # The client's own context: its options apply to the channels' sockets made next.
            self._client.context.setsockopt(zmq.MAXMSGSIZE, _MAX_MESSAGE_BYTES)
            self._client.start_channels()
            await self._client.wait_for_ready(timeout=ready_within)
            await self._run_silently(_BOOTSTRAP)
        except BaseException as error:  # cancelled too (a Stop during a cold start)
            if not isinstance(error, asyncio.CancelledError):
                logger.error("kernel %s did not start; its output ends:\n%s", self.name,
                             _tail(log_path))  # fmt: skip
            await asyncio.shield(self.shutdown())  # leave nothing behind
            raise
        self._baseline_processes = len(self._processes())

    async def warm_up(self) -> None:
        """Import the usual libraries ahead of need (for a spare kernel)."""
        await self._run_silently(_WARM_UP)

    async def shutdown(self) -> None:
        """Stop the kernel and kill every process it started; never raises."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.stop_channels()
        if self._manager is not None:
            with contextlib.suppress(Exception):
                await self._manager.shutdown_kernel(now=True)
        if self._cgroup is not None:
            await asyncio.to_thread(self._cgroup.remove)
        shutil.rmtree(self._runtime_dir, ignore_errors=True)
        self._manager = self._client = None

    async def alive(self) -> bool:
        return self._manager is not None and bool(await self._manager.is_alive())

    async def interrupt(self) -> None:
        if self._manager is not None:
            with contextlib.suppress(Exception):
                await self._manager.interrupt_kernel()

    # -- cells --------------------------------------------------------------------------------

    async def execute(
        self,
        code: str,
        *,
        time_limit: float,
        cpu_seconds: float,
        max_chars: int,
        on_stream: Callable[[str, str], Awaitable[None]] | None = None,
        stop_when: Callable[[], CellStatus | None] = lambda: None,
    ) -> CellOutput:
        """Run ``code``; on timeout, CPU overrun or ``stop_when()`` giving a reason, interrupt
        it and keep the kernel's state.

        Raises KernelDiedError when the kernel is gone (crashed, or killed from inside).
        """
        assert self._client is not None
        self.busy = True
        self.last_used = started = time.monotonic()
        output = CellOutput()
        collector = Collector(output, max_chars, self.workspace)
        stop_reason: CellStatus | None = None
        stop_deadline = 0.0
        message_id: str | None = None
        replied_at: float | None = None
        try:
            if self._abandoned is not None:
                await self._finish_abandoned()
                started = time.monotonic()  # the limits are this cell's own
            cpu_start = self._cpu_seconds()
            # stop_on_error=False: an error must not make the kernel drop a cell sent while
            # the erring one still ran (it would come back empty, as if it succeeded).
            message_id = self._client.execute(
                code, store_history=True, allow_stdin=False, stop_on_error=False
            )
            while True:
                now = time.monotonic()
                if stop_reason is None:
                    if now - started > time_limit:
                        stop_reason = "timeout"
                    elif self._cpu_seconds() - cpu_start > cpu_seconds:
                        stop_reason = "cpu_limit"
                    else:
                        stop_reason = stop_when()
                    if stop_reason is not None:
                        await self.interrupt()
                        stop_deadline = now + _INTERRUPT_GRACE
                elif now > stop_deadline:
                    raise KernelStuckError(stop_reason)
                try:
                    message = await self._client.get_iopub_msg(timeout=0.2)
                except queue.Empty:
                    if not await self.alive():
                        raise KernelDiedError("the Python kernel stopped unexpectedly") from None
                    if replied_at is None:
                        replied_at = await self._replied(message_id)
                    elif time.monotonic() - replied_at > _IDLE_AFTER_REPLY:
                        collector.append("stderr", _DROPPED_NOTE)
                        await self._reconnect_iopub()
                        break
                    continue
                if message["parent_header"].get("msg_id") != message_id:
                    continue
                if await collector.collect(message, on_stream):
                    break
        except asyncio.CancelledError:
            # Abandoned (a Stop, a disconnect): the cell must not run on in the kernel and
            # hold up the thread's next one. The next execute makes sure it ended.
            if message_id is not None:
                self._abandoned = message_id
                await asyncio.shield(self.interrupt())
            raise
        finally:
            self.busy = False
            self.last_used = time.monotonic()
            output.duration = self.last_used - started
        if stop_reason is not None:
            output.status = stop_reason
        if len(self._processes()) > self._baseline_processes:
            # Processes the cell started outlive it (a fork bomb, a daemon): the only sure
            # way to be rid of them is a fresh kernel.
            raise StrayProcessesError(output)
        return output

    async def _finish_abandoned(self) -> None:
        """Wait for the cell of a cancelled ``execute`` to end, interrupting it again while it
        runs: an interrupt that lands before the cell starts is lost."""
        deadline = time.monotonic() + _INTERRUPT_GRACE
        while self._abandoned is not None:
            if time.monotonic() > deadline:
                raise KernelStuckError("interrupted")
            try:
                message = await self._client.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                if not await self.alive():
                    raise KernelDiedError("the Python kernel stopped unexpectedly") from None
                await self.interrupt()
                continue
            if (
                message["parent_header"].get("msg_id") == self._abandoned
                and message["msg_type"] == "status"
                and message["content"].get("execution_state") == "idle"
            ):
                self._abandoned = None

    async def _reconnect_iopub(self) -> None:
        """A fresh iopub socket: zmq does not reconnect one it cut off for an oversized
        message, and the kernel would go unheard from then on."""
        channel = self._client.iopub_channel
        channel.close()
        channel.socket = self._client.connect_iopub()
        # A new subscriber misses what is published before its subscription arrives: wait
        # until the status of a kernel_info request comes through.
        deadline = time.monotonic() + _INTERRUPT_GRACE
        while time.monotonic() < deadline:
            request = self._client.kernel_info()
            with contextlib.suppress(queue.Empty):
                while True:
                    message = await self._client.get_iopub_msg(timeout=0.5)
                    if message["parent_header"].get("msg_id") == request:
                        return

    async def _replied(self, message_id: str) -> float | None:
        """Now, if the kernel's execute_reply to ``message_id`` has come (shell replies are
        read nowhere else while a cell runs), else None."""
        while True:
            try:
                reply = await self._client.get_shell_msg(timeout=0)
            except queue.Empty:
                return None
            if reply["parent_header"].get("msg_id") == message_id:
                return time.monotonic()

    async def _run_silently(self, code: str) -> None:
        reply = await self._client.execute_interactive(
            code, silent=True, store_history=False, timeout=30
        )
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"kernel bootstrap failed: {reply['content']}")

    def _processes(self) -> list[psutil.Process]:
        if self._cgroup is not None:
            found = []
            for pid in self._cgroup.pids():
                with contextlib.suppress(psutil.Error):
                    found.append(psutil.Process(pid))
            return found
        process = getattr(getattr(self._manager, "provisioner", None), "process", None)
        if process is None:
            return []
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(process.pid)
            return [root, *root.children(recursive=True)]
        return []

    def _cpu_seconds(self) -> float:
        total = 0.0
        for process in self._processes():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total


def _tail(path: Path, size: int = 4000) -> str:
    try:
        with path.open("rb") as file:
            file.seek(max(0, path.stat().st_size - size))
            return file.read().decode(errors="replace")
    except OSError:
        return ""


class KernelDiedError(RuntimeError):
    pass


class KernelStuckError(RuntimeError):
    """An interrupt did not end the cell."""

    def __init__(self, reason: CellStatus) -> None:
        super().__init__(reason)
        self.reason = reason


class StrayProcessesError(RuntimeError):
    def __init__(self, output: CellOutput) -> None:
        super().__init__("the cell left processes running")
        self.output = output
