"""Request bodies over the limit get a 413 — counted while reading, not taken from Content-Length on trust.

A pure ASGI middleware: a declared Content-Length over the limit is refused before a byte is read; otherwise the
body is read (and counted) up to the limit, then replayed to the app in one message. Bodies of this API are small
JSON documents, so holding one in memory is what the app would do anyway. After the replay, `receive` is the
server's again, so streaming responses still hear the client disconnect. A refused body is read and dropped
up to a budget before the 413 goes out, so an ordinary client sees the answer rather than a connection reset.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stream_edge.errors import error_response

__all__ = ["BodyLimitMiddleware"]


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._drain_budget = max(4 * max_body_bytes, 1 << 20)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_body_bytes:
            if int(declared) <= self._drain_budget:
                await self._discard(receive, self._drain_budget)
            await self._too_large(scope, receive, send)
            return
        if (declared is None or declared.strip() == "0") and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its body: nobody to answer
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body_bytes:
                if message.get("more_body", False):
                    await self._discard(receive, self._drain_budget)
                await self._too_large(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _discard(self, receive: Receive, budget: int) -> None:
        """Reads and drops the rest of a refused body, up to `budget` bytes: a client still sending when the
        connection closes may see a reset instead of the 413. Past the budget the connection just closes."""
        while budget > 0:
            message = await receive()
            if message["type"] != "http.request":
                return
            budget -= len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "body_too_large",
            f"the request body is larger than {self.max_body_bytes} bytes",
            {"Connection": "close"},
        )
        await response(scope, receive, send)
