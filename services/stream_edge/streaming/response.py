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
from stream_edge.streaming.encodings import Encoding

__all__ = ["EventStreamResponse"]

_HEADERS = {"cache-control": "no-cache, no-transform", "x-accel-buffering": "no"}


_raw_headers: dict[str, list[tuple[bytes, bytes]]] = {}  # encoding name → its response headers, made once


def _headers_of(enc: Encoding) -> list[tuple[bytes, bytes]]:
    raw = _raw_headers.get(enc.name)
    if raw is None:
        headers = {"content-type": enc.media_type, **_HEADERS, **dict(enc.headers)}
        raw = _raw_headers[enc.name] = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return raw


class EventStreamResponse(Response):
    def __init__(self, stream: ClientStream) -> None:
        enc = stream.encoding
        self.status_code = 200
        self.media_type = enc.media_type
        self.background = None
        self.raw_headers = list(_headers_of(enc))  # its own list (a caller may add headers), the shared tuples
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.start(send)
        await self.run_body(receive, send)

    async def start(self, send: Send) -> None:
        """The response's head. Split from `run_body` so that a server may send the head through its middleware and
        run the long body outside it (stream_edge/events_asgi.py)."""
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        except BaseException:
            self._stream.release()
            raise

    async def run_body(self, receive: Receive, send: Send) -> None:
        """The stream, until it ends, the client leaves or it is cut off."""
        stream = self._stream
        stream.begin()
        watcher = asyncio.create_task(self._watch(receive), name="sluice-stream-watch")
        try:
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

    def abandon(self) -> None:
        """The body will never run (the request failed after the head): the stream's slot is given back."""
        self._stream.release()

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._stream.disconnected()
