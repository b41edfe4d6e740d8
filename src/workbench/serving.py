"""How uvicorn serves the app, in `workbench serve` and in the tests alike.

uvicorn's httptools protocol (its C parser) takes upload bodies about a third faster than its
pure-Python h11 one, but unlike h11 it buffers a request head of any size: one connection
sending endless header bytes would hold gigabytes. ``BoundedHeadProtocol`` adds the limit.
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; browsers send a few KiB

_TOO_LARGE = json.dumps(
    {
        "error": {
            "code": "headers_too_large",
            "message": f"The request's headers are larger than {MAX_HEAD_BYTES // 1024} KiB.",
        }
    }
).encode()


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering 431 to a request head over ``MAX_HEAD_BYTES``.

    Bytes are counted per received chunk once a head has begun in an earlier one, so the head
    held in memory stays within one chunk (256 KiB) plus the limit.
    """

    _in_head = False
    _head_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        counting = self._in_head
        super().data_received(data)
        if not (counting and self._in_head):
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._in_head = False
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TOO_LARGE), _TOO_LARGE)
            )
            self.transport.close()


UVICORN_OPTIONS: dict[str, Any] = {
    "http": BoundedHeadProtocol,
    # The standard loop, not whatever "auto" finds installed: the kernels' zmq sockets and
    # every test run on it.
    "loop": "asyncio",
    # Longer than browsers' and proxies' idle keep-alive, so a request never goes out on a
    # connection the server is just closing (uvicorn's default is 5 s).
    "timeout_keep_alive": 75,
}
