"""Hostile code in the Python sandbox: real bubblewrap, real kernels, real limits.

Every attempt must end with a clear result (an error, a status, or a replaced kernel that
``state_lost`` owns up to), and the manager must keep working afterwards. Driven mostly
through ``KernelManager``; one test goes through the live server and the demo model.

The cells' own code is guarded (``_IN_SANDBOX``): should one ever run outside the sandbox it
raises before doing anything harmful. Nothing here sends traffic off the host: inside there is
no route, and 192.0.2.1 is a documentation address.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.live import (
    LiveServer,
    add_message,
    create_thread,
    peak_rss,
    peak_rss_reset,
    running,
    stream_events,
)
from workbench.config import Settings
from workbench.files.downloads import workspace_file_url
from workbench.files.signing import UrlSigner
from workbench.sandbox import manager as manager_module
from workbench.sandbox.bubblewrap import sandbox_problem
from workbench.sandbox.manager import CellRun, KernelManager, SandboxUnavailableError
from workbench.sandbox.workspace_fs import WorkspaceError, file_parts, open_file
from workbench.sandbox.workspaces import Workspaces
from workbench.store import PostgresStore

_PROBLEM = sandbox_problem()
pytestmark = pytest.mark.skipif(_PROBLEM is not None, reason=f"no sandbox here: {_PROBLEM}")

USER, THREAD, OTHER_THREAD = "user_abuse", "thr_abuse", "thr_other"
REPO = Path(__file__).resolve().parents[1]
MB = 1024 * 1024
# Prepended to every hostile cell: refuse to run anywhere but inside the sandbox.
_IN_SANDBOX = (
    "import os as _os\n"
    "assert _os.getuid() == 1000 and _os.path.isdir('/workspace'), 'not in the sandbox'\n"
)
# Short limits keep the file fast; tests override what they exercise.
_FAST: dict[str, Any] = {
    "sandbox": "bubblewrap", "kernel_pool_size": 0, "sandbox_timeout": 20.0,
    "sandbox_cpu_seconds": 20.0, "sandbox_memory_mb": 1024, "sandbox_max_processes": 32,
    "sandbox_tmp_mb": 16, "sandbox_max_file_mb": 8, "tool_output_chars": 500,
}  # fmt: skip

# Every manager this module started, to check at the end that none left anything behind.
_runtime_roots: list[Path] = []
_cgroup_parents: list[Path] = []

MakeManager = Callable[..., Awaitable[KernelManager]]


# -- helpers -------------------------------------------------------------------------------


def sandbox_processes(marker: str) -> list[psutil.Process]:
    """Live processes (anywhere on the host) whose command line names ``marker``: a kernel's
    runtime directory appears in its bwrap's and its kernel's argv, and in every fork."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        with_marker = marker in " ".join(process.info["cmdline"] or ())
        if with_marker and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


def our_sandbox_children() -> list[psutil.Process]:
    """Kernels and bwraps started by this test process; an unreaped bwrap counts too."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                cmdline = child.name()  # a zombie keeps only its name
            else:
                cmdline = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "ipykernel_launcher" in cmdline or "bwrap" in cmdline:
            found.append(child)
    return found


async def eventually(check: Callable[[], bool], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def runtime_root(manager: KernelManager) -> Path:
    root: Path = manager._runtime_root
    return root


def cgroup_parent(manager: KernelManager) -> Path | None:
    parent: Path | None = manager._cgroups.parent
    return parent


def kernel_cgroups(manager: KernelManager) -> list[Path]:
    parent = cgroup_parent(manager)
    return sorted(p for p in parent.iterdir() if p.is_dir()) if parent else []


async def assert_nothing_left(manager: KernelManager) -> None:
    marker = str(runtime_root(manager))
    assert await eventually(lambda: not sandbox_processes(marker)), sandbox_processes(marker)
    assert await eventually(lambda: not our_sandbox_children()), our_sandbox_children()
    parent = cgroup_parent(manager)
    assert parent is None or not parent.exists(), list(parent.iterdir())
    assert not runtime_root(manager).exists()


def exists(path: str) -> bool:
    return Path(path).exists()


def json_out(run: CellRun) -> Any:
    assert run.output.status == "ok", (run.output.status, run.output.error, run.output.stderr)
    return json.loads(run.output.stdout.strip().splitlines()[-1])


async def still_works(manager: KernelManager, thread: str = THREAD) -> CellRun:
    """The next cell runs: the manager (and the thread's kernel, new or old) is usable."""
    run = await manager.run_cell(USER, thread, "print(6 * 7)")
    assert run.output.status == "ok", run.output
    assert run.output.stdout == "42\n"
    return run


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def nothing_left_at_the_end() -> Iterator[None]:
    yield
    for root in _runtime_roots:
        assert not sandbox_processes(str(root)), root
        assert not root.exists(), root
    for parent in _cgroup_parents:
        assert not parent.exists(), parent
    assert not list(Path("/sys/fs/cgroup/pids").glob(f"workbench-{os.getpid()}*"))
    assert not our_sandbox_children()


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[MakeManager]:
    """Start a KernelManager with fast limits (overridable); closed and checked after."""
    managers: list[KernelManager] = []

    async def make(**overrides: Any) -> KernelManager:
        data_dir = tmp_path / f"data{len(managers)}"
        settings = Settings(data_dir=data_dir, _env_file=None, **{**_FAST, **overrides})
        manager = KernelManager(settings, Workspaces(data_dir / "workspaces"))
        managers.append(manager)
        _runtime_roots.append(runtime_root(manager))
        if (parent := cgroup_parent(manager)) is not None:
            _cgroup_parents.append(parent)
        await manager.start()
        assert manager.problem is None, manager.problem
        return manager

    yield make
    for manager in managers:
        await manager.close()
        await assert_nothing_left(manager)


# -- network -------------------------------------------------------------------------------


def _host_reaches(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_no_network_not_even_the_hosts_postgres(sandbox: MakeManager) -> None:
    manager = await sandbox()
    postgres_socket = "/var/run/postgresql/.s.PGSQL.5432"
    code = (
        _IN_SANDBOX
        + f"""
import json, socket
results = {{}}
for name, address in [("postgres", ("127.0.0.1", 5432)), ("public", ("192.0.2.1", 80))]:
    sock = socket.socket()
    sock.settimeout(3)
    try:
        sock.connect(address)
        results[name] = "connected"
    except OSError as error:
        results[name] = type(error).__name__
    finally:
        sock.close()
unix = socket.socket(socket.AF_UNIX)
try:
    unix.connect({postgres_socket!r})
    results["unix"] = "connected"
except OSError as error:
    results["unix"] = type(error).__name__
results["interfaces"] = [name for _, name in socket.if_nameindex()]
print(json.dumps(results))
"""
    )
    started = time.monotonic()
    results = json_out(await manager.run_cell(USER, THREAD, code))

    # The host's own loopback (Postgres, if it listens there) is another namespace's.
    assert results["postgres"] == "ConnectionRefusedError", (results, _host_reaches(5432))
    assert results["public"] in {"OSError", "ConnectionRefusedError", "TimeoutError"}, results
    assert results["public"] != "connected"
    assert results["unix"] == "FileNotFoundError"
    assert results["interfaces"] == ["lo"]
    assert time.monotonic() - started < 10  # refused at once, no hanging connect
    await still_works(manager)


# -- the host's files ----------------------------------------------------------------------


async def test_host_files_are_out_of_sight_and_only_the_workspace_is_written(
    sandbox: MakeManager, tmp_path: Path
) -> None:
    manager = await sandbox()
    data_dir = manager.settings.data_dir
    other = manager.workspaces.ensure(USER, OTHER_THREAD)
    (other / "theirs.txt").write_text("another thread's file")
    host_dir = tmp_path / "host_dir"  # in the host's /tmp
    host_dir.mkdir()
    (host_dir / "present.txt").write_text("host file")
    own = manager.workspaces.path(USER, THREAD)
    reads = {
        "data_dir": str(data_dir), "other_thread": str(other / "theirs.txt"),
        "own_host_path": str(own), "repo_pyproject": str(REPO / "pyproject.toml"),
        "repo_src": str(REPO / "src"), "shadow": "/etc/shadow", "passwd": "/etc/passwd",
        "host_tmp_file": str(host_dir / "present.txt"),
        "sibling_via_dotdot": f"/workspace/../{OTHER_THREAD}/theirs.txt",
    }  # fmt: skip
    writes = {
        "etc": "/etc/planted", "usr": "/usr/planted", "root": "/planted", "dev": "/dev/planted",
        "venv": f"{Path(os.__file__).parent}/planted", "repo": str(REPO / "planted"),
        "host_tmp": str(host_dir / "planted"), "workspace": "/workspace/ok.txt",
    }  # fmt: skip
    code = (
        _IN_SANDBOX
        + f"""
import json, os
result = {{"read": {{}}, "write": {{}}}}
for name, path in {reads!r}.items():
    try:
        if os.path.isdir(path):
            result["read"][name] = "listed: " + ",".join(os.listdir(path))
        else:
            with open(path) as file:
                result["read"][name] = "read: " + file.read(100)
    except OSError as error:
        result["read"][name] = type(error).__name__
for name, path in {writes!r}.items():
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as file:
            file.write("planted")
        result["write"][name] = "written"
    except OSError as error:
        result["write"][name] = f"{{type(error).__name__}} {{error.errno}}"
print(json.dumps(result))
"""
    )
    run = await manager.run_cell(USER, THREAD, code)
    result = json_out(run)

    for name, outcome in result["read"].items():
        assert outcome in {"FileNotFoundError", "PermissionError"}, (name, outcome)
    writes_seen = result["write"]
    assert writes_seen.pop("workspace") == "written"
    assert (own / "ok.txt").read_text() == "planted"
    assert [info.path for info in run.changed_files] == ["ok.txt"]
    # The sandbox's own /tmp may take the host path: a private tmpfs, so not the host's.
    assert writes_seen.pop("host_tmp") in {"written", f"PermissionError {errno.EACCES}"}
    assert not (host_dir / "planted").exists()
    assert sorted(p.name for p in host_dir.iterdir()) == ["present.txt"]
    for name, outcome in writes_seen.items():
        refused = {f"OSError {errno.EROFS}", f"PermissionError {errno.EACCES}"}
        # Below /tmp a write lands in the sandbox's private tmpfs (as for a checkout in /tmp);
        # that it never reaches the host is checked right below.
        private = {"written"} if writes[name].startswith("/tmp/") else set()
        assert outcome in refused | private, name
    assert [path for path in writes.values() if exists(path)] == []  # on the host
    await still_works(manager)


async def test_the_servers_secrets_are_not_in_the_sandbox(
    sandbox: MakeManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "DATABASE_URL": "postgresql://workbench:db-secret-4711@127.0.0.1:5432/workbench",
        "OPENAI_API_KEY": "sk-test-secret-0815",
        "WORKBENCH_JWT_SECRET": "jwt-secret-1234",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    manager = await sandbox()
    needles = [*secrets.values(), "db-secret-4711"]
    # Not only the kernel's environment: every process inside (bwrap's init is pid 1).
    code = (
        _IN_SANDBOX
        + f"""
import json, os
found = [name for name in os.environ if name in {list(secrets)!r}]
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for part in ("environ", "cmdline"):
        try:
            with open(f"/proc/{{pid}}/{{part}}", "rb") as file:
                text = file.read().decode(errors="replace")
        except OSError:
            continue
        found += [f"{{pid}}/{{part}}" for needle in {needles!r} if needle in text]
print(json.dumps(found))
"""
    )
    assert json_out(await manager.run_cell(USER, THREAD, code)) == []
    await still_works(manager)


# -- processes -----------------------------------------------------------------------------


async def test_fork_bomb_is_contained_and_the_kernel_replaced(sandbox: MakeManager) -> None:
    manager = await sandbox(sandbox_max_processes=16, sandbox_cpu_seconds=5.0)
    marker = str(runtime_root(manager))
    await manager.run_cell(USER, THREAD, "x = 1")
    (first_cgroup,) = kernel_cgroups(manager)
    assert (first_cgroup / "pids.max").read_text().strip() == "16"
    baseline = len(sandbox_processes(marker))

    run = await manager.run_cell(USER, THREAD, _IN_SANDBOX + "while True:\n    _os.fork()\n")

    output = run.output
    assert output.kernel_restarted
    assert run.state_lost
    # fork() failed at the pids limit (EAGAIN), or the forks burned the CPU allowance.
    assert (output.error and output.error.name == "BlockingIOError") or output.status in {
        "cpu_limit", "timeout",
    }, output  # fmt: skip
    # Every fork is gone with the old kernel and its cgroup.
    assert await eventually(lambda: len(sandbox_processes(marker)) <= baseline)
    assert not first_cgroup.exists()
    after = await manager.run_cell(USER, THREAD, "print('alive')")
    assert after.output.stdout == "alive\n"
    assert after.output.status == "ok"
    assert len(sandbox_processes(marker)) == baseline


async def test_memory_bomb_is_a_memory_error_not_a_dead_server(sandbox: MakeManager) -> None:
    manager = await sandbox(sandbox_memory_mb=512)
    await manager.run_cell(USER, THREAD, "x = 1")
    before = psutil.Process().memory_info().rss
    peak_rss_reset()

    at_once = await manager.run_cell(USER, THREAD, _IN_SANDBOX + "b = bytearray(8 * 1024**3)")
    growing = await manager.run_cell(
        USER, THREAD,
        _IN_SANDBOX + "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 1024**2))\n",
    )  # fmt: skip

    assert at_once.output.error is not None and at_once.output.error.name == "MemoryError"
    assert not at_once.output.kernel_restarted
    assert growing.output.kernel_restarted or (
        growing.output.error is not None and growing.output.error.name == "MemoryError"
    ), growing.output
    if not growing.output.kernel_restarted:
        kept = await manager.run_cell(USER, THREAD, "del chunks\nprint(x)")
        assert kept.output.stdout == "1\n"
    # The allocations were the kernel's, never the server's.
    assert peak_rss() - before < 100 * MB, (before, peak_rss())
    await still_works(manager)


async def test_infinite_loop_is_stopped_by_the_wall_clock_and_state_survives(
    sandbox: MakeManager,
) -> None:
    manager = await sandbox(sandbox_timeout=1.5, sandbox_cpu_seconds=60.0)
    await manager.run_cell(USER, THREAD, "x = 'kept'")

    run = await manager.run_cell(USER, THREAD, "while True:\n    pass\n")

    assert run.output.status == "timeout"
    assert run.output.error is not None and run.output.error.name == "KeyboardInterrupt"
    assert not run.output.kernel_restarted and run.state_lost is None
    assert 1.5 <= run.output.duration < 6
    kept = await manager.run_cell(USER, THREAD, "print(x)")
    assert kept.output.stdout == "kept\n"
    assert kept.state_lost is None


async def test_cpu_burner_is_stopped_with_cpu_limit(sandbox: MakeManager) -> None:
    manager = await sandbox(sandbox_cpu_seconds=1.0, sandbox_timeout=30.0)
    await manager.run_cell(USER, THREAD, "x = 'kept'")

    run = await manager.run_cell(USER, THREAD, "n = 0\nwhile True:\n    n += 1\n")

    assert run.output.status == "cpu_limit"
    assert not run.output.kernel_restarted
    assert run.output.duration < 10
    kept = await manager.run_cell(USER, THREAD, "print(x, n > 0)")
    assert kept.output.stdout == "kept True\n"


# -- output --------------------------------------------------------------------------------


async def test_an_output_flood_is_cut_to_the_cap(sandbox: MakeManager) -> None:
    manager = await sandbox(tool_output_chars=200)
    cap = 200 * 4
    code = (
        "import sys\nfor i in range(200):\n"
        "    print('o' * 100_000)\n    print('e' * 10_000, file=sys.stderr)\n"
    )

    run = await manager.run_cell(USER, THREAD, code)

    output = run.output
    assert output.status == "ok"
    assert len(output.stdout) == cap and set(output.stdout) == {"o"}
    assert len(output.stderr) == cap
    assert output.cut_characters == 200 * 100_001 + 200 * 10_001 - 2 * cap
    await still_works(manager)


async def test_a_gigabyte_print_never_reaches_the_servers_memory(sandbox: MakeManager) -> None:
    # Room inside for the string and its encoding, so the kernel does send the gigabyte.
    # CPU as long as the wall clock: encoding a gigabyte takes seconds of CPU, and many more
    # when the host is taking memory back (free-page reporting); this test is about memory.
    manager = await sandbox(sandbox_memory_mb=4096, sandbox_timeout=40.0, sandbox_cpu_seconds=40.0)
    await manager.run_cell(USER, THREAD, "x = 'kept'")
    before = psutil.Process().memory_info().rss
    peak_rss_reset()

    run = await manager.run_cell(USER, THREAD, "print('x' * 10**9)\nprint('after')")

    # zmq refused the oversized message unread (the server would hold all of it, however
    # little it keeps); the cell ends anyway, says so, and the kernel keeps its state.
    assert peak_rss() - before < 200 * MB, (before, peak_rss())
    output = run.output
    assert output.status == "ok", output
    assert len(output.stdout) <= manager.settings.tool_output_chars * 4
    assert "output too large to receive was dropped" in output.stderr
    assert not output.kernel_restarted and run.state_lost is None
    kept = await manager.run_cell(USER, THREAD, "print(x)")
    assert kept.output.stdout == "kept\n"  # and the kernel is heard again
    await still_works(manager)


async def test_a_cell_cannot_write_to_the_servers_log(
    sandbox: MakeManager, capfd: pytest.CaptureFixture[str]
) -> None:
    manager = await sandbox()
    marker = "FORGED-SERVER-LOG-LINE"
    code = (
        _IN_SANDBOX
        + f"""
import sys
for stream in (sys.__stdout__, sys.__stderr__):
    stream.write({marker!r} + "\\n")
    stream.flush()
for fd in (1, 2):  # bwrap's init holds what the kernel was started with
    with open(f"/proc/1/fd/{{fd}}", "w") as file:
        file.write({marker!r} + "\\n")
"""
    )
    capfd.readouterr()

    run = await manager.run_cell(USER, THREAD, code)

    assert run.output.status == "ok", run.output
    await still_works(manager)
    captured = capfd.readouterr()
    assert marker not in captured.out + captured.err


# -- files ---------------------------------------------------------------------------------


async def test_file_size_and_tmp_are_capped(sandbox: MakeManager) -> None:
    manager = await sandbox(sandbox_max_file_mb=8, sandbox_tmp_mb=16)
    workspace = manager.workspaces.path(USER, THREAD)
    code = (
        _IN_SANDBOX
        + """
import json, os
def fill(path, megabytes):
    try:
        with open(path, "wb") as file:
            for _ in range(megabytes):
                file.write(b"\\0" * 1024**2)
        return "written"
    except OSError as error:
        return f"{type(error).__name__} {error.errno}"
result = {
    "workspace": fill("/workspace/big.bin", 100),
    "tmp_file": fill("/tmp/big.bin", 100),
    "tmp_second": fill("/tmp/second.bin", 7),
    "tmp_third": fill("/tmp/third.bin", 7),
    "shm": fill("/dev/shm/big.bin", 100),
    "shm_parts": [fill(f"/dev/shm/part{i}.bin", 7) for i in range(3)],
}
for directory in ("/tmp", "/dev/shm"):  # room again, for IPython's history in /tmp
    for name in os.listdir(directory):
        if name.endswith(".bin"):
            os.remove(os.path.join(directory, name))
print(json.dumps(result))
"""
    )
    run = await manager.run_cell(USER, THREAD, code)
    result = json_out(run)

    too_large, full = f"OSError {errno.EFBIG}", f"OSError {errno.ENOSPC}"
    assert result["workspace"] == too_large
    assert (workspace / "big.bin").stat().st_size == 8 * MB  # stopped at the cap, on disk
    assert result["tmp_file"] == too_large  # 8 MB of the 16 MB /tmp
    assert [result["tmp_second"], result["tmp_third"]] == ["written", full]
    assert result["shm"] == too_large
    assert result["shm_parts"] == ["written", full, full]
    assert [info.path for info in run.changed_files] == ["big.bin"]
    await still_works(manager)


async def test_a_cell_that_fills_the_workspace_is_stopped_at_its_quota(
    sandbox: MakeManager,
) -> None:
    manager = await sandbox(workspace_quota_mb=20, sandbox_max_file_mb=8)
    workspace = manager.workspaces.path(USER, THREAD)
    await manager.run_cell(USER, THREAD, "x = 'kept'")
    fill = _IN_SANDBOX + (
        "import time\n"
        "for i in range(100_000):\n"
        "    with open(f'/workspace/fill{i}.bin', 'wb') as file:\n"
        "        file.write(b'\\1' * 2**21)\n"
        "    time.sleep(0.01)\n"
    )

    run = await manager.run_cell(USER, THREAD, fill)

    assert run.output.status == "disk_quota", (run.output.status, run.output.error)
    written = sum(path.stat().st_size for path in workspace.glob("fill*.bin"))
    # Stopped within a few polls of passing 20 MB, not after 200 GB.
    assert 20 * MB < written < 400 * MB, written
    # Over its quota, the workspace still runs cells that do not grow it: to clean up.
    kept = await manager.run_cell(USER, THREAD, "print(x)")
    assert (kept.output.status, kept.output.stdout.strip()) == ("ok", "kept")
    # The overshoot does not become the next cell's limit, however short that cell is.
    grow = "open('/workspace/more.bin', 'wb').write(b'1' * 2**20)"
    assert (await manager.run_cell(USER, THREAD, grow)).output.status == "disk_quota"
    cleanup = "import glob, os\nfor name in glob.glob('/workspace/*.bin'): os.remove(name)"
    assert (await manager.run_cell(USER, THREAD, cleanup)).output.status == "ok"
    small = await manager.run_cell(USER, THREAD, grow)
    assert small.output.status == "ok"
    # A short cell that writes past the quota before any measurement is caught as it ends.
    burst = "for i in range(4): open(f'/workspace/b{i}.bin', 'wb').write(b'1' * 8 * 2**20)"
    assert (await manager.run_cell(USER, THREAD, burst)).output.status == "disk_quota"
    # Bytes that arrive between cells (an attachment copied in) may pass the quota.
    assert (await manager.run_cell(USER, THREAD, cleanup)).output.status == "ok"
    (workspace / "upload.bin").write_bytes(b"u" * 30 * MB)
    assert (await manager.run_cell(USER, THREAD, "print(x)")).output.status == "ok"
    assert (await manager.run_cell(USER, THREAD, grow)).output.status == "disk_quota"
    await still_works(manager)


# -- killing things from inside ------------------------------------------------------------


async def test_killing_the_parent_pid_1_or_itself(sandbox: MakeManager) -> None:
    manager = await sandbox()
    await manager.run_cell(USER, THREAD, "x = 'kept'")

    for target in ("_os.getppid()", "1"):
        run = await manager.run_cell(USER, THREAD, _IN_SANDBOX + f"_os.kill({target}, 9)")
        # The kernel's parent is bwrap's init, pid 1 of the sandbox's pid namespace: the
        # kernel ignores SIGKILL to a namespace's init from inside it. Were it ever to die,
        # the kernel goes with it and must be replaced, and said so.
        if run.output.kernel_restarted:
            assert run.state_lost
        else:
            assert run.output.status == "ok", run.output
            kept = await manager.run_cell(USER, THREAD, "print(x)")
            assert kept.output.stdout == "kept\n"
        await still_works(manager)

    run = await manager.run_cell(USER, THREAD, _IN_SANDBOX + "_os.kill(_os.getpid(), 9)")

    assert run.output.status == "crashed"
    assert run.output.kernel_restarted and run.state_lost
    after = await still_works(manager)
    assert after.state_lost  # said again by the first cell in the new kernel
    gone = await manager.run_cell(USER, THREAD, "print(x)")
    assert gone.output.error is not None and gone.output.error.name == "NameError"


# -- symlinks against host-side code -------------------------------------------------------

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


async def test_planted_symlinks_do_not_lead_host_code_out(
    sandbox: MakeManager, tmp_path: Path
) -> None:
    manager = await sandbox()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret")
    workspace = manager.workspaces.path(USER, THREAD)
    show_png = f"from IPython.display import Image, display\ndisplay(Image(data={PNG!r}))\n"

    shown = await manager.run_cell(USER, THREAD, show_png)
    assert len(shown.output.images) == 1  # images are saved when .outputs is a real directory
    assert (workspace / shown.output.images[0]).read_bytes() == PNG

    plant = (
        _IN_SANDBOX
        + f"""
_os.symlink("/etc/passwd", "leak")
_os.symlink("/", "root")
_os.symlink({str(outside / "secret.txt")!r}, "secret.csv")
_os.rename(".outputs", "old_outputs")
_os.symlink({str(outside)!r}, ".outputs")
with open("real.txt", "w") as file:
    file.write("fine")
"""
        + show_png
    )
    run = await manager.run_cell(USER, THREAD, plant)

    assert run.output.status == "ok", run.output
    # The image could not be saved through the planted .outputs link, so it was dropped.
    assert run.output.images == []
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    # Snapshots list regular files only, never through a link.
    changed = sorted(info.path for info in run.changed_files)
    assert changed == sorted(["real.txt", f"old_outputs/{Path(shown.output.images[0]).name}"])
    # What host-side readers (downloads, CSV previews) open refuses every planted link.
    for relative in ("leak", "root/etc/passwd", "secret.csv", ".outputs/secret.txt"):
        with pytest.raises(WorkspaceError, match="is a symbolic link"):
            os.close(open_file(workspace, file_parts(relative)))
    descriptor = open_file(workspace, file_parts("real.txt"))
    with os.fdopen(descriptor) as file:
        assert file.read() == "fine"

    # Deleting the thread removes the links, not what they point to.
    await manager.forget_thread(USER, THREAD)
    assert not workspace.exists()
    assert (outside / "secret.txt").read_text() == "host secret"
    assert exists("/etc/passwd")
    await still_works(manager)


# -- shutdown ------------------------------------------------------------------------------


async def test_close_leaves_no_process_and_no_cgroup(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", _env_file=None, **_FAST)
    manager = KernelManager(settings, Workspaces(settings.data_dir / "workspaces"))
    _runtime_roots.append(runtime_root(manager))
    try:
        await manager.start()
        for thread in (THREAD, OTHER_THREAD):
            # A thread left running in the kernel, and the cgroup's processes, must all go.
            sleeper = "import threading, time\nthreading.Thread(target=time.sleep, args=[600])"
            run = await manager.run_cell(USER, thread, sleeper + ".start()")
            assert run.output.status == "ok"
        marker = str(runtime_root(manager))
        assert len(sandbox_processes(marker)) >= 2 * 3  # per kernel: two bwraps, the kernel
        assert len(kernel_cgroups(manager)) == 2
    finally:
        await manager.close()

    await assert_nothing_left(manager)


# -- over HTTP -----------------------------------------------------------------------------


def _assistant_texts(events: list[Any]) -> list[str]:
    done = [e.item for e in events if e.type == "thread.item.done"]
    return [item.content[0].text for item in done if item.type == "assistant_message"]


async def test_abuse_over_http_leaves_the_server_healthy(
    database_url: str, tmp_path: Path, store: PostgresStore, http: httpx.AsyncClient
) -> None:
    settings = Settings(
        database_url=database_url, data_dir=tmp_path / "data", _env_file=None,
        **{**_FAST, "sandbox_max_processes": 16, "sandbox_cpu_seconds": 5.0},
    )  # fmt: skip
    with running(LiveServer(settings)) as live:
        bomb = "Run this:\n```python\n" + _IN_SANDBOX + "while True:\n    _os.fork()\n```"
        events = await stream_events(http, live.url, create_thread(bomb))
        assert [e for e in events if e.type == "error"] == []
        thread_id = events[0].thread.id
        (reply,) = _assistant_texts(events)
        assert re.search(r"status: (error|cpu_limit|timeout)", reply), reply
        assert "NOTE:" in reply and "kernel had to be restarted" in reply

        assert (await http.get(f"{live.base}/healthz")).json() == {"status": "ok"}

        plant = (
            "```python\n" + _IN_SANDBOX + "_os.symlink('/etc/passwd', 'leak')\n"
            "_os.symlink('/', 'root')\nopen('ok.txt', 'w').write('fine')\nprint(6 * 7)\n```"
        )
        events = await stream_events(http, live.url, add_message(thread_id, plant))
        (reply,) = _assistant_texts(events)
        assert "status: ok" in reply and "42" in reply, reply
        (files,) = [line for line in reply.splitlines() if line.startswith("files created")]
        assert files.endswith(": ok.txt (4 bytes)"), files

        owner = await store.owner_of_thread(thread_id)
        assert owner is not None
        signer: UrlSigner = live.app.state.signer

        def url(relative: str) -> str:
            return workspace_file_url(signer, live.base, owner, thread_id, relative)

        assert (await http.get(url("ok.txt"))).content == b"fine"
        for relative in ("leak", "root/etc/passwd"):
            assert (await http.get(url(relative))).status_code == 404, relative

        events = await stream_events(
            http, live.url, create_thread("```python\nprint('new thread', 6 * 7)\n```")
        )
        (reply,) = _assistant_texts(events)
        assert "new thread 42" in reply
        manager: KernelManager = live.app.state.kernels
        marker = str(runtime_root(manager))
        _runtime_roots.append(runtime_root(manager))
        if (parent := cgroup_parent(manager)) is not None:
            _cgroup_parents.append(parent)
    assert await eventually(lambda: not sandbox_processes(marker))


async def test_code_is_refused_with_the_reason_when_the_sandbox_does_not_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager_module, "sandbox_problem", lambda: "`bwrap` is not installed")
    settings = Settings(data_dir=tmp_path, kernel_pool_size=0, _env_file=None)
    manager = KernelManager(settings, Workspaces(settings.data_dir / "workspaces"))
    await manager.start()
    try:
        with pytest.raises(SandboxUnavailableError, match=r"bwrap. is not installed.*SANDBOX=none"):
            await manager.run_cell(USER, THREAD, "print('never runs')")
        assert manager.live_kernels == 0
    finally:
        await manager.close()
