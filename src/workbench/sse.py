"""Server-sent events for the streaming ops, with cancellation that really stops the run.

The SDK's event stream runs in its own task and feeds a queue; the response only relays.
When the client disconnects (or presses stop, which closes the connection), the producer task
is cancelled once — a plain asyncio cancellation, so the SDK's cleanup (saving the partial
answer, noting the cancellation) can still await the database — and the response waits for
that cleanup before it finishes. Anything that fails once streaming has begun becomes an SSE
``error`` event with a message instead of a broken chunked response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, Callable

from chatkit.errors import CustomStreamError
from chatkit.store import NotFoundError
from chatkit.types import ErrorEvent
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def error_event(message: str, *, allow_retry: bool = False) -> bytes:
    event = ErrorEvent(code="custom", message=message, allow_retry=allow_retry)
    return b"data: " + event.model_dump_json().encode() + b"\n\n"


def late_error_event(error: Exception) -> bytes:
    match error:
        case CustomStreamError():
            return error_event(error.message, allow_retry=error.allow_retry)
        case NotFoundError():
            return error_event(f"{error}. It may have been deleted meanwhile.")
        case ValueError():
            return error_event(f"The request could not be completed: {error}")
        case _:
            return error_event(
                "The response failed unexpectedly. Retry; if it keeps failing, the server log "
                "has the details.",
                allow_retry=True,
            )


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterable[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(content=None, headers=SSE_HEADERS, media_type=self.media_type)
        # Response sets `content-length: 0` for a body-less response; a stream has none.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._events = events
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        producer = asyncio.create_task(self._produce(queue))
        disconnected = asyncio.create_task(_wait_for_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            if await self._relay(queue, disconnected, send):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            disconnected.cancel()
            producer.cancel()
            # Let the SDK finish its cancellation cleanup before the request is over.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(producer)
            self._on_close()

    async def _relay(
        self, queue: asyncio.Queue[bytes | None], disconnected: asyncio.Task[None], send: Send
    ) -> bool:
        """Send events until the stream ends (True) or the client goes away (False)."""
        while True:
            next_chunk = asyncio.ensure_future(queue.get())
            await asyncio.wait({next_chunk, disconnected}, return_when=asyncio.FIRST_COMPLETED)
            if not next_chunk.done():
                next_chunk.cancel()
                return False
            chunk = next_chunk.result()
            if chunk is None:  # the producer is done
                return True
            try:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except OSError:
                return False

    async def _produce(self, queue: asyncio.Queue[bytes | None]) -> None:
        try:
            async for chunk in self._events:
                queue.put_nowait(chunk)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.exception("stream failed after it began")
            queue.put_nowait(late_error_event(error))
        finally:
            queue.put_nowait(None)


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
