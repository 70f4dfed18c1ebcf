"""The raw ASGI response around a `ClientStream`: pre-joined bytes go straight to `send`.

A watcher task hears the client disconnect (`receive` → `http.disconnect`) and wakes the pump. A stream cut off
while blocked in a send (a client that stopped reading) has its task cancelled by `ClientStream.abort`; that one
cancellation is swallowed here (as `asyncio.timeout` does) and the response returns without completing it, so the
server closes the connection. Any other cancellation propagates.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from stream_edge.streaming.client import ClientStream

__all__ = ["EventStreamResponse"]

_HEADERS = {"cache-control": "no-cache, no-transform", "x-accel-buffering": "no"}


class EventStreamResponse(Response):
    def __init__(self, stream: ClientStream) -> None:
        enc = stream.encoding
        self.status_code = 200
        self.media_type = enc.media_type
        self.background = None
        self.init_headers({"content-type": enc.media_type, **_HEADERS, **dict(enc.headers)})
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = self._stream
        stream.begin()
        watcher = asyncio.create_task(self._watch(receive), name=f"sluice-stream-watch-{stream.task_id}")
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await stream.pump(send)
        except asyncio.CancelledError:
            if stream.was_cut():
                return
            raise
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            stream.release()

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._stream.disconnected()
