"""ASGI responses the demo model needs beyond Starlette's: a paced SSE stream, and bodies cut on purpose.

A paced stream sends each chunk as an SSE frame, sleeping between frames, and ends with ``[DONE]``. It
races the send loop against the client's disconnect in one task group; whichever ends first cancels the
other, and every send has a deadline. To *cut* a response (a fault), the response returns without
completing it: the server then closes the connection, so the client sees a truncated body — for a chunked
stream an incomplete chunked read, for a fixed-length body fewer bytes than ``Content-Length`` promised.
(uvicorn logs "ASGI callable returned without completing response." for each cut; that is expected.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import anyio
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from demo_llm.sse import DONE_FRAME, data_frame

__all__ = ["CutShortResponse", "PacedEventStream"]

logger = logging.getLogger(__name__)

SEND_TIMEOUT_S = 30.0

_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class PacedEventStream(Response):
    """Streams JSON ``chunks`` as SSE frames plus ``[DONE]``, or drops the connection after ``cut_after``."""

    media_type = "text/event-stream"

    def __init__(
        self,
        chunks: Sequence[bytes],
        *,
        chunk_delay_s: float = 0.0,
        stall_s: float = 0.0,
        cut_after: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers({**_STREAM_HEADERS, **(headers or {})})
        self._frames = [data_frame(chunk) for chunk in chunks] + [DONE_FRAME]
        self._chunk_delay_s = chunk_delay_s
        self._stall_s = stall_s
        self._cut_after = cut_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tasks:

            async def stream_then_stop() -> None:
                await self._stream(send)
                tasks.cancel_scope.cancel()

            tasks.start_soon(stream_then_stop)
            await _until_disconnect(receive)
            logger.debug("client disconnected from a stream")
            tasks.cancel_scope.cancel()

    async def _stream(self, send: Send) -> None:
        try:
            await _send(send, {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            last = len(self._frames) - 1
            for index, frame in enumerate(self._frames):
                if self._cut_after is not None and index >= self._cut_after:
                    logger.warning("fault: cutting the stream after %d chunks", index)
                    return
                await _send(send, {"type": "http.response.body", "body": frame, "more_body": True})
                if index == 0 and self._stall_s > 0:
                    logger.info("fault: stalling the stream for %.3f s", self._stall_s)
                    await anyio.sleep(self._stall_s)
                if self._chunk_delay_s > 0 and index < last:
                    await anyio.sleep(self._chunk_delay_s)
            await _send(send, {"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            logger.warning("stream send timed out after %.0f s; dropping the connection", SEND_TIMEOUT_S)


class CutShortResponse(Response):
    """Promises all of ``content`` in ``Content-Length``, sends the first half, and drops the connection."""

    def __init__(self, content: bytes, media_type: str = "application/json") -> None:
        super().__init__(content=content, media_type=media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        half = self.body[: len(self.body) // 2]
        await _send(send, {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await _send(send, {"type": "http.response.body", "body": half, "more_body": True})
        logger.warning("fault: cutting the response after %d of %d bytes", len(half), len(self.body))


async def _send(send: Send, message: Message) -> None:
    with anyio.fail_after(SEND_TIMEOUT_S):
        await send(message)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
