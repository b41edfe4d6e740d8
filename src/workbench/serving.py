"""How uvicorn serves the app, in `workbench serve`, the tests and the benchmarks alike."""

from __future__ import annotations

from typing import Any

MAX_HEAD_KIB = 64  # request line and headers (and chunked trailers); browsers send a few KiB

UVICORN_OPTIONS: dict[str, Any] = {
    # h11 bounds what it buffers of a request head, trailers or chunk header. The C parser
    # (httptools) takes upload bodies about a third faster, but uvicorn's protocol for it
    # buffers a head or trailers of any size: one connection could hold gigabytes.
    "http": "h11",
    "h11_max_incomplete_event_size": MAX_HEAD_KIB * 1024,
    # The standard loop, not whatever "auto" finds installed: the kernels' zmq sockets and
    # every test run on it.
    "loop": "asyncio",
    # Longer than browsers' and proxies' idle keep-alive, so a request never goes out on a
    # connection the server is just closing (uvicorn's default is 5 s).
    "timeout_keep_alive": 75,
}
