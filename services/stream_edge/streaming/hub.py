"""The stream hub: every event stream of one edge process, the task feeds they share, and their lifecycle.

open()   reserves a slot (or raises Unavailable), reads the first catch-up batch, returns the response
feeds    the `FeedRegistry`: task id → Feed, shared by that task's clients on this process
ticker   one task: heartbeats for idle streams, silent feed consumers, streams prepared but never served
stop()   ends every stream within the grace period, then cuts what is left; deletes the feed consumers

The hub is the only part that knows all the others; streams and feeds get narrow collaborators
(`StreamContext`, `FeedDeps`) and never reach back into it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from typing import Any

from starlette.responses import Response

from sluice.bus import Bus
from sluice.errors import Unavailable
from stream_edge.streaming import natsfast
from stream_edge.streaming.client import ClientStream, StreamContext
from stream_edge.streaming.counters import Counters
from stream_edge.streaming.feeds import FeedRegistry
from stream_edge.streaming.link import Link
from stream_edge.streaming.request import StreamRequest
from stream_edge.streaming.response import EventStreamResponse
from stream_edge.streaming.settings import StreamSettings

__all__ = ["StreamHub"]

log = logging.getLogger(__name__)


class StreamHub:
    feed_linger_s = 2.0  # a feed outlives its last client this long: a reconnecting client finds it

    def __init__(self, bus: Bus, settings: StreamSettings) -> None:
        self.bus = bus
        self.settings = settings
        self.link = Link(bus)
        self.counters = Counters()
        self.feeds = FeedRegistry(
            self.link,
            self.spawn,
            self.counters,
            client_buffer_bytes=settings.client_buffer_bytes,
            linger_s=self.feed_linger_s,
        )
        self._context = StreamContext(self.link, self.feeds, self.counters, settings.retry_ms, self.release)
        self._streams: set[ClientStream] = set()
        self._on_end: dict[ClientStream, Callable[[], None]] = {}  # what to call when each stream ends
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False
        self._no_streams: asyncio.Event | None = None
        self._tick_s = min(1.0, settings.heartbeat_s / 4)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._started:
            return
        natsfast.install(self.bus.nc)
        await self.link.start()
        self._no_streams = asyncio.Event()
        self._no_streams.set()
        self._ticker = asyncio.create_task(self._tick_forever(), name="sluice-stream-hub-ticker")
        self.bus.state.listeners.append(self._on_bus_event)
        self._started = True

    async def stop(self) -> None:
        """Ends every stream within `shutdown_grace_s` (clients resume elsewhere with Last-Event-ID), cuts the
        rest, and deletes the feed consumers."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        for stream in list(self._streams):
            stream.end_gracefully("shutdown")
        await self._wait_for_no_streams(self.settings.shutdown_grace_s)
        for stream in list(self._streams):
            stream.end("shutdown")
        await self._wait_for_no_streams(1.0)
        self.feeds.close_all()
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        if self._tasks:  # mostly consumer deletions: give them a moment, then cancel
            await asyncio.wait(self._tasks, timeout=2.0)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.link.stop()
        if self._on_bus_event in self.bus.state.listeners:
            self.bus.state.listeners.remove(self._on_bus_event)

    async def _wait_for_no_streams(self, timeout_s: float) -> None:
        assert self._no_streams is not None
        try:
            async with asyncio.timeout(timeout_s):
                await self._no_streams.wait()
        except TimeoutError:
            pass

    # ------------------------------------------------------------------ opening a stream

    async def open(self, request: StreamRequest, *, on_end: Callable[[], None] | None = None) -> Response:
        """The task's event stream as `request` says (CONTRACT §5). The route parsed and checked the request (the
        task exists, the caller may read it); the hub only decides whether it has room. `on_end` is called once
        when the stream ends, however it ends (or if it never opens): what the route counted for it is given back."""
        refused = not self._started or self._stopping or len(self._streams) >= self.settings.max_streams
        if refused and on_end is not None:
            on_end()
        if not self._started or self._stopping:
            raise Unavailable("shutting_down", "this edge is not serving streams; reconnect elsewhere", retry_after_s=1)
        if len(self._streams) >= self.settings.max_streams:
            raise Unavailable(
                "too_many_streams",
                f"this edge serves its limit of {self.settings.max_streams} streams; retry shortly",
                retry_after_s=2,
            )
        stream = ClientStream(self._context, request)
        self._streams.add(stream)
        if on_end is not None:
            self._on_end[stream] = on_end
        assert self._no_streams is not None
        self._no_streams.clear()
        try:
            await stream.prepare(request.snapshot, request.first_seq)
        except BaseException:
            stream.release()
            raise
        self.counters.streams_opened += 1
        return EventStreamResponse(stream)

    def release(self, stream: ClientStream) -> None:
        self._streams.discard(stream)
        on_end = self._on_end.pop(stream, None)
        if on_end is not None:
            on_end()
        if not self._streams and self._no_streams is not None:
            self._no_streams.set()

    # ------------------------------------------------------------------ background work

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """A background task the hub owns (consumer creation, polling); cancelled at stop."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("stream hub background task failed", exc_info=task.exception())

    def _on_bus_event(self, what: str) -> None:
        if what != "reconnected" or self._stopping:
            return
        # The server may have restarted and lost the in-memory feed consumers: re-create them from the last
        # seq each feed received. Catch-up requests in flight may be lost: ask again.
        self.feeds.reset_all()
        for stream in list(self._streams):
            stream.reconnected()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                self._tick()
            except Exception:
                # A bug met by one stream or feed must not end the heartbeats and liveness checks of all of them.
                log.exception("stream hub tick failed; ticking on")

    def _tick(self) -> None:
        now = time.monotonic()
        idle_s = self.settings.heartbeat_s - self._tick_s
        for stream in list(self._streams):
            stream.tick(now, idle_s)
        self.feeds.check_alive(now)

    # ------------------------------------------------------------------ figures

    @property
    def stats(self) -> dict[str, int | float]:
        figures: dict[str, int | float] = dict(asdict(self.counters))
        figures["active_streams"] = len(self._streams)
        figures["active_feeds"] = len(self.feeds)
        figures["feed_subscribers"] = self.feeds.subscribers
        figures["feeds_polling"] = self.feeds.polling
        return figures
