"""stream-edge under test: in-process on a real socket (fast), or as a `sluice edge` subprocess (signals, restarts).

- `running_edge(common_config, bus)`: `create_app` under uvicorn on a free loopback port in the test's event loop,
  with an httpx client bound to it. Streams are real HTTP streams (no ASGITransport buffering).
- `edge_process(tmp_path, nats_url)`: a started `ServiceProcess` for `sluice edge` (waits for /readyz).
- `published(bus)`: the last sequence of every Sluice stream and the task bucket — compare before/after a
  rejected request to prove nothing was written.
- `collect_stream(...)`: read an SSE / NDJSON response into parsed frames until a condition holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from nats.aio.msg import Msg
from opentelemetry.sdk.trace import TracerProvider

from sluice import subjects
from sluice.bus import Bus
from sluice.config import CommonConfig
from stream_edge.app import HubFactory, create_app
from stream_edge.server import EdgeServer
from stream_edge.settings import EdgeSettings
from support.nats_server import free_port
from support.procs import ServiceProcess, base_env

__all__ = [
    "EdgeUnderTest",
    "FrameReader",
    "StreamFrame",
    "collect_stream",
    "edge_process",
    "published",
    "record_watch_opened",
    "running_edge",
]


@dataclass
class EdgeUnderTest:
    url: str
    app: FastAPI
    server: EdgeServer
    client: httpx.AsyncClient
    settings: EdgeSettings
    tracer_provider: TracerProvider | None = None


@contextlib.asynccontextmanager
async def running_edge(
    common_config: CommonConfig,
    bus: Bus | None = None,
    *,
    hub_factory: HubFactory | None = None,
    tracer_provider: TracerProvider | None = None,
    **overrides: Any,
) -> AsyncIterator[EdgeUnderTest]:
    """`create_app` served by uvicorn on a free port in this event loop; yields once it answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    # Tests that play a runner by hand leave tasks that a reconciler would move: on only where a test asks for it.
    overrides.setdefault("reconcile_interval_s", 0)
    # The session's NATS server outlives each test, and so do the tasks a test leaves unfinished: no tenant limits
    # unless a test asks for them.
    for limit in ("tenant_max_active", "tenant_rate", "tenant_max_streams"):
        overrides.setdefault(limit, 0)
    settings = EdgeSettings(host="127.0.0.1", port=port, common=common_config, **overrides)
    app = create_app(settings, bus, hub_factory=hub_factory, tracer_provider=tracer_provider)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on", ws="none",
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 2,
    )  # fmt: skip
    server = EdgeServer(config, app, handle_signals=False)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    url = f"http://127.0.0.1:{port}"
    try:
        while not server.started:
            if serving.done():
                serving.result()
                raise RuntimeError("the edge stopped during start-up")
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
            yield EdgeUnderTest(url, app, server, client, settings, tracer_provider)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=30)
        sock.close()


def edge_process(log_dir: Path, nats_url: str, **env: str) -> tuple[ServiceProcess, str]:
    """`sluice edge` as a subprocess on a free port, started and ready; returns it and its base URL."""
    port = free_port()
    process = ServiceProcess(
        "edge",
        base_env(SLUICE_NATS_URL=nats_url, SLUICE_HTTP_PORT=str(port), SLUICE_HTTP_HOST="127.0.0.1", **env),
        log_dir / f"edge-{port}.log",
    )
    url = f"http://127.0.0.1:{port}"
    process.start(ready_url=f"{url}/readyz")
    return process, url


# ---------------------------------------------------------------- what was published


_BUCKET_STREAMS = (f"KV_{subjects.TASKS_BUCKET}", f"KV_{subjects.CONTEXTS_BUCKET}")


async def published(bus: Bus) -> dict[str, int]:
    """The last sequence of each Sluice stream (and the task and context buckets): any write moves one of them."""
    out: dict[str, int] = {}
    for name in (subjects.EVENTS_STREAM, subjects.WORK_STREAM, subjects.TOOLS_STREAM, *_BUCKET_STREAMS):
        info = await bus.js.stream_info(name)
        out[name] = int(info.state.last_seq or 0)
    return out


async def task_message_counts(bus: Bus, task_id: str) -> tuple[int, int]:
    """(events, work messages ever stored) for one task."""
    events = await bus.js.stream_info(subjects.EVENTS_STREAM, subjects_filter=subjects.events_of_task(task_id))
    work = await bus.js.stream_info(subjects.WORK_STREAM, subjects_filter=subjects.work(task_id))
    return sum((events.state.subjects or {}).values()), sum((work.state.subjects or {}).values())


# ---------------------------------------------------------------- reading streams


@dataclass
class StreamFrame:
    """One SSE event or NDJSON line, parsed."""

    id: str | None
    type: str | None
    data: dict[str, Any] = field(default_factory=dict)
    comment: str | None = None


def _parse_sse(block: str) -> StreamFrame | None:
    frame = StreamFrame(id=None, type=None)
    data_lines: list[str] = []
    for line in block.split("\n"):
        if line.startswith(":"):
            frame.comment = line[1:].strip()
        elif line.startswith("id:"):
            frame.id = line[3:].strip()
        elif line.startswith("event:"):
            frame.type = line[6:].strip()
        elif line.startswith("data:"):
            data_lines.append(line[5:].lstrip())
        elif line.startswith("retry:"):
            frame.comment = "retry:" + line[6:].strip()
    if data_lines:
        frame.data = json.loads("\n".join(data_lines))
        frame.type = frame.type or frame.data.get("type")
    if frame.id is None and frame.type is None and frame.comment is None:
        return None
    return frame


class FrameReader:
    """Reads an SSE / NDJSON response frame by frame (comments and heartbeats skipped); can be read in parts."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.sse = response.headers.get("content-type", "").startswith("text/event-stream")
        self.frames: list[StreamFrame] = []
        self._chunks = response.aiter_text()
        self._buffer = ""
        self.ended = False

    async def next(self) -> StreamFrame | None:
        """The next event frame, or None once the response has ended."""
        separator = "\n\n" if self.sse else "\n"
        while True:
            while separator in self._buffer:
                block, self._buffer = self._buffer.split(separator, 1)
                if not block.strip():
                    continue
                frame: StreamFrame | None
                if self.sse:
                    frame = _parse_sse(block)
                else:
                    data = json.loads(block)
                    frame = StreamFrame(id=data.get("id"), type=data.get("type"), data=data)
                if frame is None or frame.type in (None, "heartbeat"):
                    continue
                self.frames.append(frame)
                return frame
            try:
                self._buffer += await self._chunks.__anext__()
            except StopAsyncIteration:
                self.ended = True
                return None

    async def read(
        self, *, until: Callable[[list[StreamFrame]], bool] | None = None, timeout_s: float = 10.0
    ) -> list[StreamFrame]:
        """Frames read by this call, until `until(all frames so far)` holds or the response ends."""
        got: list[StreamFrame] = []

        async def loop() -> None:
            while (frame := await self.next()) is not None:
                got.append(frame)
                if until is not None and until(self.frames):
                    return

        await asyncio.wait_for(loop(), timeout=timeout_s)
        return got


async def collect_stream(
    response: httpx.Response,
    *,
    until: Callable[[list[StreamFrame]], bool] | None = None,
    timeout_s: float = 10.0,
) -> list[StreamFrame]:
    """Reads frames until the stream ends or `until` holds (one-shot; use FrameReader to read in parts)."""
    return await FrameReader(response).read(until=until, timeout_s=timeout_s)


@contextlib.asynccontextmanager
async def record_watch_opened(bus: Bus, task_id: str) -> AsyncIterator[asyncio.Future[None]]:
    """A future set when someone opens a KV watch on the task's record: the JetStream consumer request is the event
    that says an edge is now waiting for the record to change (no sleeping to guess it has started waiting)."""
    opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_consumer_create(msg: Msg) -> None:
        if task_id in msg.data.decode() and not opened.done():
            opened.set_result(None)

    create = f"$JS.API.CONSUMER.CREATE.KV_{subjects.TASKS_BUCKET}"
    subs = [await bus.nc.subscribe(s, cb=on_consumer_create) for s in (create, f"{create}.>")]
    await bus.nc.flush()
    try:
        yield opened
    finally:
        for sub in subs:
            await sub.unsubscribe()
