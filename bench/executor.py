"""Executor benchmark: what a cell costs in the sandboxed, stateful kernel.

Prints, from one run with a ``KernelManager`` running kernels under bubblewrap:
* the p50 round trip of a trivial cell (``x = 1`` / ``x + 1``, alternating) in a thread whose
  kernel is warm (target <= 15 ms);
* the first cell of a new thread with the pre-warmed pool full (target <= 100 ms p50), and
  the same with no pool (a cold start) for comparison;
* a cell importing pandas and drawing a matplotlib plot, run 5 times in one thread (its kernel
  from the pool), against the same work as a fresh ``python -c`` each time (target: the
  kernel >= 5x faster in total); and, for comparison, in a kernel started on demand.

Exit code 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.config import Settings
from workbench.sandbox.manager import CellRun, KernelManager
from workbench.sandbox.workspaces import Workspaces

USER = "bench"
WARM_ROUNDS = 200
POOL_SAMPLES = 10
COLD_SAMPLES = 3
PLOT_RUNS = 5
WARM_TARGET = 0.015
POOL_TARGET = 0.100
PLOT_RATIO_TARGET = 5.0

PLOT_CELL = (
    "import pandas as pd, matplotlib.pyplot as plt\n"
    "df = pd.DataFrame({'x': range(100), 'y': range(100)})\n"
    "df.plot()\n"
    "plt.show()\n"
)
PLOT_SCRIPT = (
    "import pandas as pd, matplotlib.pyplot as plt\n"
    "df = pd.DataFrame({'x': range(100), 'y': range(100)})\n"
    "df.plot()\n"
    "plt.savefig({path!r})\n"
)

_threads = (f"thr_bench_{n:04d}" for n in itertools.count())


def new_manager(data_dir: Path, pool_size: int) -> KernelManager:
    settings = Settings(
        data_dir=data_dir,
        kernel_pool_size=pool_size,
        max_kernels=1000,  # no eviction during the run
        _env_file=None,
    )
    return KernelManager(settings, Workspaces(data_dir / "workspaces"))


async def run(manager: KernelManager, thread: str, code: str) -> CellRun:
    result = await manager.run_cell(USER, thread, code)
    if result.output.status != "ok":
        raise RuntimeError(f"cell failed: {result.output}")
    return result


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


async def pool_full(manager: KernelManager) -> None:
    for _ in range(1200):
        if manager.pooled_kernels >= manager.settings.kernel_pool_size:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the kernel pool did not fill up within 60 s")


async def warm_cells(manager: KernelManager) -> list[float]:
    thread = next(_threads)
    await run(manager, thread, "x = 1")
    for _ in range(20):  # warm up
        await run(manager, thread, "x + 1")
    codes = itertools.cycle(["x = 1", "x + 1"])
    return [await timed(lambda: run(manager, thread, next(codes))) for _ in range(WARM_ROUNDS)]


async def first_cells(manager: KernelManager, samples: int, *, pooled: bool) -> list[float]:
    times = []
    for _ in range(samples):
        if pooled:
            await pool_full(manager)
        thread = next(_threads)
        start = time.perf_counter()
        await run(manager, thread, "x = 1")
        times.append(time.perf_counter() - start)
        await manager.forget_thread(USER, thread)
    return times


def plot_in_subprocesses(directory: Path) -> float:
    env = {**os.environ, "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(directory / "mpl")}
    total = 0.0
    for n in range(PLOT_RUNS):
        script = PLOT_SCRIPT.replace("{path!r}", repr(str(directory / f"plot{n}.png")))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", script], env=env, check=True)
        total += time.perf_counter() - start
    return total


async def plot_in_kernel(manager: KernelManager) -> float:
    thread = next(_threads)
    await run(manager, thread, "pass")  # the kernel's start is not what this times
    await pool_full(manager)  # nor the start of the spare that replaces it
    total = 0.0
    for _ in range(PLOT_RUNS):
        start = time.perf_counter()
        result = await run(manager, thread, PLOT_CELL)
        total += time.perf_counter() - start
        if not result.output.images:
            raise RuntimeError("the plot cell showed no figure")
    return total


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


async def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="workbench-bench-") as tmp:
        root = Path(tmp)
        pooled = new_manager(root / "pooled", pool_size=1)
        cold = new_manager(root / "cold", pool_size=0)
        try:
            await pooled.start()
            await cold.start()
            if pooled.problem:
                print(f"sandbox unavailable: {pooled.problem}")
                return 1
            warm = await warm_cells(pooled)
            pool_times = await first_cells(pooled, POOL_SAMPLES, pooled=True)
            cold_times = await first_cells(cold, COLD_SAMPLES, pooled=False)
            kernel_plot = await plot_in_kernel(pooled)
            cold_kernel_plot = await plot_in_kernel(cold)
        finally:
            await pooled.close()
            await cold.close()
        # A warm-up run fills the OS page cache, as the kernel's imports already did.
        plot_in_subprocesses(root)
        subprocess_plot = plot_in_subprocesses(root)

    warm_p50 = statistics.median(warm)
    pool_p50 = statistics.median(pool_times)
    cold_p50 = statistics.median(cold_times)
    ratio = subprocess_plot / kernel_plot
    warm_ok, pool_ok, plot_ok = (
        warm_p50 <= WARM_TARGET,
        pool_p50 <= POOL_TARGET,
        ratio >= PLOT_RATIO_TARGET,
    )
    print(
        f"warm cell round trip ({WARM_ROUNDS} cells, one thread): p50 {ms(warm_p50)}, "
        f"p90 {ms(statistics.quantiles(warm, n=10)[-1])} "
        f"(target <= {ms(WARM_TARGET)}) {verdict(warm_ok)}"
    )
    print(
        f"first cell of a new thread, pool full ({POOL_SAMPLES} threads): p50 {ms(pool_p50)}, "
        f"max {ms(max(pool_times))} (target <= {ms(POOL_TARGET)}) {verdict(pool_ok)}"
    )
    print(
        f"first cell of a new thread, cold start ({COLD_SAMPLES} threads): p50 {ms(cold_p50)} "
        f"= {cold_p50 / pool_p50:.0f}x the pooled first cell"
    )
    print(
        f"pandas + matplotlib plot, {PLOT_RUNS} runs: kernel {ms(kernel_plot)} total / "
        f"fresh `python -c` {ms(subprocess_plot)} total = {ratio:.1f}x faster "
        f"(target >= {PLOT_RATIO_TARGET:g}x) {verdict(plot_ok)}"
    )
    print(
        f"  (in a kernel started on demand, without the pool's warm-up imports: "
        f"{ms(cold_kernel_plot)} total = {subprocess_plot / cold_kernel_plot:.1f}x)"
    )
    return 0 if warm_ok and pool_ok and plot_ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
