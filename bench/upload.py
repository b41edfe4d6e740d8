"""Upload benchmark: a 200 MB file into the local blob store, memory and speed.

Runs ``python -m workbench serve`` as a separate process (a throwaway database, a temporary
data dir), then uploads one 200 MB file, streamed from disk by an httpx client, two ways:

* two-phase: ``attachments.create``, then a raw PUT of the bytes to the upload URL;
* direct: a multipart POST to ``/files/upload``.

Prints, for each: the server's RSS growth while the upload runs (sampled every few ms with
psutil, the maximum over the upload minus the RSS just before it; target <= 30 MB), and
the upload's throughput against a plain local copy of the same file measured in the same run
(target >= 50%). The copy is a read/write loop in 1 MiB chunks into the same file system —
what the server must do with the bytes, minus HTTP; ``shutil.copyfile`` (which the kernel may
do without the bytes ever reaching user space) is printed too, for reference. Each figure
is the best of five uploads (the file is checked byte for byte after each); both sides run on
this machine, so client, server and disk share its cores.

Exit code 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psutil
from tests.live import free_port
from tests.postgres_server import admin_server, throwaway_database

SIZE = 200 * 1024 * 1024
CHUNK = 1024 * 1024
MIME = "application/octet-stream"
ROUNDS = 5  # each measurement's best of five: the machine's noise is not the server's cost
RSS_TARGET = 30 * 1024 * 1024
SPEED_TARGET = 0.5


@dataclass
class Upload:
    seconds: float
    rss_growth: int


def make_file(path: Path) -> None:
    """200 MB that compress to nothing useful and contain every byte value."""
    seed = os.urandom(CHUNK)
    with path.open("wb") as file:
        for n in range(SIZE // CHUNK):
            file.write(seed[n:] + seed[:n])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def chunked_copy(source: Path, target: Path) -> None:
    with source.open("rb") as reader, target.open("wb") as writer:
        while chunk := reader.read(CHUNK):
            writer.write(chunk)


def timed_copy(copy: Callable[[Path, Path], object], source: Path, target: Path) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        target.unlink(missing_ok=True)
        start = time.perf_counter()
        copy(source, target)
        best = min(best, time.perf_counter() - start)
    target.unlink()
    return best


class RssSampler:
    """The maximum RSS of a process while a block runs, sampled from another thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            yield chunk


def two_phase(client: httpx.Client, base: str, path: Path, pid: int) -> tuple[Upload, str]:
    params = {"name": path.name, "size": path.stat().st_size, "mime_type": MIME}
    created = client.post(f"{base}/chatkit", json={"type": "attachments.create", "params": params})
    created.raise_for_status()
    url = created.json()["upload_descriptor"]["url"]
    headers = {"Content-Type": MIME, "Content-Length": str(path.stat().st_size)}
    with RssSampler(pid) as rss:
        start = time.perf_counter()
        response = client.put(url, content=file_chunks(path), headers=headers)
        seconds = time.perf_counter() - start
    response.raise_for_status()
    return Upload(seconds, rss.growth), str(response.json()["id"])


def direct(client: httpx.Client, base: str, path: Path, pid: int) -> tuple[Upload, str]:
    with path.open("rb") as file, RssSampler(pid) as rss:
        start = time.perf_counter()
        response = client.post(f"{base}/files/upload", files={"file": (path.name, file, MIME)})
        seconds = time.perf_counter() - start
    response.raise_for_status()
    return Upload(seconds, rss.growth), str(response.json()["id"])


@contextmanager
def workbench_server(database_url: str, data_dir: Path) -> Iterator[tuple[str, int]]:
    """``python -m workbench serve`` in its own process; its base URL and pid."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "WORKBENCH_DATA_DIR": str(data_dir),
        "WORKBENCH_PORT": str(port),
        "WORKBENCH_UPLOAD_MAX_MB": "300",
        "WORKBENCH_UPLOAD_MIME_TYPES": MIME,
        "WORKBENCH_KERNEL_POOL_SIZE": "0",
        "WORKBENCH_LOG_LEVEL": "warning",
    }
    for name in ("OPENAI_API_KEY", "WORKBENCH_CHAT_COMPLETIONS_BASE_URL", "WORKBENCH_AUTH"):
        env.pop(name, None)
    log = data_dir.parent / "server.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "workbench", "serve"], env=env, stderr=output
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {server.returncode}:\n{log.read_text()}"
                )
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.1)
        yield base, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


def mb(n: float) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


def main() -> int:
    with (
        tempfile.TemporaryDirectory(prefix="workbench-bench-upload-") as tmp,
        admin_server() as admin_url,
        throwaway_database(admin_url, prefix="workbench_bench") as database_url,
    ):
        root = Path(tmp)
        source = root / "payload.bin"
        make_file(source)
        digest = sha256_of(source)
        copy_seconds = timed_copy(chunked_copy, source, root / "copy.bin")
        kernel_copy_seconds = timed_copy(shutil.copyfile, source, root / "copy.bin")
        print(f"file: {mb(SIZE)} in {root}")
        print(f"plain copy, 1 MiB read/write loop: {mb(SIZE / copy_seconds)}/s")
        print(f"plain copy, shutil.copyfile:       {mb(SIZE / kernel_copy_seconds)}/s (reference)")

        data_dir = root / "data"
        ok = True
        with (
            workbench_server(database_url, data_dir) as (base, pid),
            httpx.Client(timeout=httpx.Timeout(300.0)) as client,
        ):
            # One small upload each way first: imports and pools warm before measuring.
            warm = root / "warm.bin"
            warm.write_bytes(os.urandom(1024 * 1024))
            for upload in (two_phase, direct):
                upload(client, base, warm, pid)
            for label, upload in (("two-phase PUT", two_phase), ("direct multipart", direct)):
                runs: list[Upload] = []
                for _ in range(ROUNDS):
                    result, attachment_id = upload(client, base, source, pid)
                    blob = data_dir / "blobs" / attachment_id
                    if blob.stat().st_size != SIZE or sha256_of(blob) != digest:
                        print(f"{label}: the stored file differs from the one sent")
                        return 1
                    blob.unlink()
                    runs.append(result)
                seconds = min(run.seconds for run in runs)
                growth = max(run.rss_growth for run in runs)
                ratio = copy_seconds / seconds
                met = growth <= RSS_TARGET and ratio >= SPEED_TARGET
                ok &= met
                print(
                    f"{label}: {mb(SIZE / seconds)}/s = {ratio:.0%} of the plain copy "
                    f"(target >= {SPEED_TARGET:.0%}); server RSS growth {mb(growth)} "
                    f"(target <= {mb(RSS_TARGET)}; per run: "
                    f"{', '.join(mb(run.rss_growth) for run in runs)}); "
                    f"median {statistics.median(run.seconds for run in runs):.2f} s"
                    + ("" if met else "  <-- MISSED")
                )
    print("targets met" if ok else "targets missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
