"""The streaming engine under test, before (and apart from) the edge's own app.

- `serving_hub(bus, settings)`: a `StreamHub` behind a tiny Starlette app under uvicorn on a free loopback port,
  in the test's event loop. `GET /t/{task_id}?after=&format=&follow=&snapshot=` (format also by Accept) calls
  `hub.open` the way the edge's route does (Last-Event-ID wins over `after`); `Unavailable` becomes a 503.
- `publish(bus, task_id, kinds)`: a task history from event type names, returning the seqs.
- `read_stream(...)`: one HTTP stream read into frames (SSE or NDJSON) until the server ends it, `until` holds,
  or `max_events` events arrived (then the client closes the connection, as a client going away does).
- `RawClient`: a raw socket client that sends a request and then reads only when told to (a slow client).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sluice import events as ev
from sluice.bus import Bus
from sluice.errors import Unavailable
from sluice.eventlog import EventWriter
from stream_edge.streaming import StreamHub, StreamRequest, StreamSettings, encodings

__all__ = ["Frame", "HubUnderTest", "RawClient", "event_data", "publish", "read_stream", "serving_hub"]


@dataclass
class HubUnderTest:
    hub: StreamHub
    url: str
    snapshots: dict[str, ev.TaskRecord] = field(default_factory=dict)

    def events_url(self, task_id: str, **query: str) -> str:
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        return f"{self.url}/t/{task_id}" + (f"?{qs}" if qs else "")


def _app(state: dict[str, Any]) -> Starlette:
    async def events(request: Request) -> Response:
        hub: StreamHub = state["hub"]
        task_id = request.path_params["task_id"]
        q = request.query_params
        after = int(request.headers.get("last-event-id") or q.get("after") or 0)
        fmt = q.get("format") or ("ndjson" if "ndjson" in request.headers.get("accept", "") else "sse")
        snapshot = state["snapshots"].get(task_id) if q.get("snapshot") == "true" else None
        try:
            encoding = encodings.NDJSON if fmt == "ndjson" else encodings.SSE
            follow = q.get("follow", "true") != "false"
            return await hub.open(StreamRequest(task_id, encoding, after, follow, snapshot))
        except Unavailable as exc:
            return JSONResponse(
                {"error": {"code": exc.code, "message": exc.message}},
                status_code=503,
                headers={"Retry-After": str(exc.retry_after_s)},
            )

    return Starlette(routes=[Route("/t/{task_id}", events)])


@contextlib.asynccontextmanager
async def serving_hub(
    bus: Bus, settings: StreamSettings | None = None, *, sndbuf: int | None = None
) -> AsyncIterator[HubUnderTest]:
    """`sndbuf` fixes the kernel send buffer of accepted connections (no autotuning up to megabytes), so that a
    client that does not read blocks the server's sends early."""
    hub = StreamHub(bus, settings or StreamSettings())
    await hub.start()
    state: dict[str, Any] = {"hub": hub, "snapshots": {}}
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sndbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(_app(state), log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        yield HubUnderTest(hub=hub, url=f"http://127.0.0.1:{port}", snapshots=state["snapshots"])
    finally:
        await hub.stop()
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10)
        sock.close()


# ---------------------------------------------------------------------- publishing

_DATA: dict[str, Callable[[int], tuple[type[ev.Event], Any]]] = {
    "task.submitted": lambda i: (
        ev.TaskSubmitted,
        ev.TaskSubmittedData(input="hi", agent="assistant", history=[], metadata={}),
    ),
    "task.started": lambda i: (ev.TaskStarted, ev.TaskStartedData(attempt=1, runner="r")),
    "llm.started": lambda i: (ev.LlmStarted, ev.LlmStartedData(step=1, attempt=1, model="m", agent="assistant")),
    "llm.delta": lambda i: (ev.LlmDelta, ev.LlmDeltaData(step=1, attempt=1, text=f"t{i} " + "x" * (i % 50))),
    "tool.started": lambda i: (ev.ToolStarted, ev.ToolStartedData(call_id=f"c{i}", name="calc", arguments="{}")),
    "task.completed": lambda i: (ev.TaskCompleted, ev.TaskCompletedData(output="done", usage=ev.Usage())),
    "task.failed": lambda i: (
        ev.TaskFailed,
        ev.TaskFailedData(error=ev.ErrorInfo(code="x", message="y"), usage=ev.Usage()),
    ),
    "task.canceled": lambda i: (ev.TaskCanceled, ev.TaskCanceledData(reason="test")),
}


async def publish(bus: Bus, task_id: str, kinds: Sequence[str], *, start: int = 0) -> list[int]:
    """Publishes one event per type name; msg ids are `{task}:{n}` from `start`. Returns their seqs."""
    writer = EventWriter(bus, "test")
    seqs = []
    for n, kind in enumerate(kinds, start=start):
        cls, data = _DATA[kind](n)
        seqs.append(await writer.emit(cls, task_id, data, msg_id=f"{task_id}:{n}"))
    return seqs


# ---------------------------------------------------------------------- reading


@dataclass
class Frame:
    id: str | None
    type: str
    data: dict[str, Any]  # the envelope as served
    comment: bool = False  # an SSE comment (keep-alive) or an NDJSON heartbeat


def event_data(frames: Sequence[Frame]) -> list[Frame]:
    return [f for f in frames if not f.comment]


def _parse_sse(block: str) -> Frame | None:
    fields: dict[str, str] = {}
    comment = False
    for line in block.split("\n"):
        if line.startswith(":"):
            comment = True
            continue
        name, _, value = line.partition(": ")
        fields[name] = value
    if "data" not in fields:
        return Frame(None, "comment", {}, comment=True) if comment else None
    data = json.loads(fields["data"])
    return Frame(fields.get("id"), fields.get("event", "message"), data)


def _parse_ndjson(line: str) -> Frame:
    data = json.loads(line)
    return Frame(data.get("id"), data["type"], data, comment=data["type"] == "heartbeat")


@dataclass
class StreamResult:
    status: int
    headers: httpx.Headers
    frames: list[Frame]
    raw: bytes
    ended_by_server: bool

    @property
    def events(self) -> list[Frame]:
        return event_data(self.frames)


async def read_stream(
    url: str,
    *,
    fmt: str = "sse",
    last_event_id: str | None = None,
    max_events: int | None = None,
    until: Callable[[list[Frame]], bool] | None = None,
    timeout_s: float = 15.0,
) -> StreamResult:
    headers = {"Accept": "text/event-stream" if fmt == "sse" else "application/x-ndjson"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    frames: list[Frame] = []
    raw = bytearray()
    ended = False
    async with (
        asyncio.timeout(timeout_s),
        httpx.AsyncClient(timeout=httpx.Timeout(timeout_s)) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        if response.status_code != 200:
            await response.aread()
            return StreamResult(response.status_code, response.headers, [], bytes(response.content), True)
        buffer = ""
        try:
            async for chunk in response.aiter_text():
                raw.extend(chunk.encode())
                buffer += chunk
                separator = "\n\n" if fmt == "sse" else "\n"
                while separator in buffer:
                    block, buffer = buffer.split(separator, 1)
                    if fmt == "sse" and block.startswith("retry:"):
                        continue
                    frame = _parse_sse(block) if fmt == "sse" else _parse_ndjson(block)
                    if frame is None:
                        continue
                    frames.append(frame)
                    if max_events is not None and len(event_data(frames)) >= max_events:
                        return StreamResult(200, response.headers, frames, bytes(raw), False)
                    if until is not None and until(frames):
                        return StreamResult(200, response.headers, frames, bytes(raw), False)
            ended = True
        except httpx.RemoteProtocolError:
            ended = True  # cut off mid-stream (a slow client, a shutdown)
        return StreamResult(200, response.headers, frames, bytes(raw), ended)


class RawClient:
    """An HTTP/1.1 client on a plain socket with a small receive buffer, that reads only when asked."""

    def __init__(self, url: str, path: str, *, rcvbuf: int = 4096, headers: dict[str, str] | None = None) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect((host, int(port)))
        self.sock.setblocking(False)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
        self.received = bytearray()

    async def read_all(self, timeout_s: float = 10.0) -> bytes:
        """Reads until the server closes the connection."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            while True:
                chunk = await loop.sock_recv(self.sock, 65536)
                if not chunk:
                    return bytes(self.received)
                self.received.extend(chunk)

    def close(self) -> None:
        self.sock.close()

    def sse_events(self) -> list[Frame]:
        """The complete SSE events in what was received (HTTP chunk framing removed)."""
        _, _, body = bytes(self.received).partition(b"\r\n\r\n")
        text = _dechunk(body).decode(errors="replace")
        frames = []
        for block in text.split("\n\n")[:-1]:
            if block.startswith("retry:"):
                continue
            frame = _parse_sse(block)
            if frame is not None and not frame.comment:
                frames.append(frame)
        return frames


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, sep, rest = body.partition(b"\r\n")
        if not sep:
            break
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out.extend(rest[:size])
        body = rest[size + 2 :]
    return bytes(out)
