"""The stream hub: every event stream of one edge process, the task feeds they share, and their lifecycle.

open()   reserves a slot (or raises Unavailable), reads the first catch-up batch, returns the response
feeds    task id → Feed: created by the first client that reaches the live head, retired a moment after the
         last client leaves (or the terminal event, for its consumer)
ticker   one task: heartbeats for idle streams, silent feed consumers, streams prepared but never served
stop()   ends every stream within the grace period, then cuts what is left; deletes the feed consumers
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass
from typing import Any, Literal

from starlette.responses import Response

from sluice.bus import Bus
from sluice.clock import now_iso
from sluice.errors import InvalidInput, Unavailable
from sluice.events import TaskRecord
from sluice.ids import parse_task_id
from stream_edge.streaming import frames, natsfast
from stream_edge.streaming.client import ClientStream, EventStreamResponse
from stream_edge.streaming.feed import Feed, Format
from stream_edge.streaming.link import Link
from stream_edge.streaming.settings import StreamSettings

__all__ = ["StreamHub"]

log = logging.getLogger(__name__)

_MEDIA_TYPES: dict[Format, str] = {"sse": frames.SSE_CONTENT_TYPE, "ndjson": frames.NDJSON_CONTENT_TYPE}


@dataclass
class Counters:
    events_delivered: int = 0
    catchup_replays: int = 0
    catchup_lag_events: int = 0  # events the last caught-up stream replayed from JetStream
    catchup_lag_events_sum: int = 0
    catchup_lag_events_count: int = 0
    catchup_lag_events_max: int = 0
    catchup_bulk: int = 0  # catch-ups long enough to read through a pull consumer
    slow_clients_cut: int = 0
    gaps_served: int = 0
    streams_opened: int = 0
    feeds_created: int = 0


class StreamHub:
    feed_linger_s = 2.0  # a feed outlives its last client this long: a reconnecting client finds it

    def __init__(self, bus: Bus, settings: StreamSettings) -> None:
        self.bus = bus
        self.settings = settings
        self.link = Link(bus)
        self.feeds: dict[str, Feed] = {}
        self.counters = Counters()
        self._streams: set[ClientStream] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False
        self._no_streams: asyncio.Event | None = None
        self._tick_s = min(1.0, settings.heartbeat_s / 4)
        self._ndjson_heartbeat = frames.ndjson_heartbeat(now_iso())

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
        assert self._no_streams is not None
        for stream in list(self._streams):
            stream.end_gracefully("shutdown")
        await self._wait_for_no_streams(self.settings.shutdown_grace_s)
        for stream in list(self._streams):
            stream.end("shutdown")
        await self._wait_for_no_streams(1.0)
        for feed in list(self.feeds.values()):
            feed.close()
        self.feeds.clear()
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

    async def open(
        self,
        task_id: str,
        *,
        after: int,
        fmt: Literal["sse", "ndjson"],
        follow: bool = True,
        snapshot: TaskRecord | None = None,
    ) -> Response:
        """The task's event stream from after `after` (CONTRACT §5). The caller checked that the task exists."""
        if not self._started or self._stopping:
            raise Unavailable("shutting_down", "this edge is not serving streams; reconnect elsewhere", retry_after_s=1)
        task_id = parse_task_id(task_id)
        if fmt not in _MEDIA_TYPES:
            raise InvalidInput("invalid_format", "format must be sse or ndjson")
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise InvalidInput("invalid_event_id", "after must be a non-negative event id")
        if len(self._streams) >= self.settings.max_streams:
            raise Unavailable(
                "too_many_streams",
                f"this edge serves its limit of {self.settings.max_streams} streams; retry shortly",
                retry_after_s=2,
            )
        stream = ClientStream(self, task_id, fmt, after, follow)
        self._add(stream)
        try:
            await stream.prepare(snapshot)
        except BaseException:
            stream.release()
            raise
        self.counters.streams_opened += 1
        return EventStreamResponse(stream, _MEDIA_TYPES[fmt])

    def _add(self, stream: ClientStream) -> None:
        self._streams.add(stream)
        assert self._no_streams is not None
        self._no_streams.clear()

    def release(self, stream: ClientStream) -> None:
        self._streams.discard(stream)
        if not self._streams and self._no_streams is not None:
            self._no_streams.set()

    # ------------------------------------------------------------------ feeds

    def feed_for(self, task_id: str, last_seq: int) -> Feed:
        """The task's feed; a new one starts right after `last_seq`, a position its creator has reached."""
        feed = self.feeds.get(task_id)
        if feed is None or feed.closed:
            feed = Feed(self, self.link, task_id, start_seq=last_seq + 1)
            self.feeds[task_id] = feed
            self.counters.feeds_created += 1
            feed.connect()
        return feed

    def retire_feed(self, feed: Feed) -> None:
        if self.feeds.get(feed.task_id) is feed:
            del self.feeds[feed.task_id]
        feed.close()

    # ------------------------------------------------------------------ shared services

    @property
    def now(self) -> float:
        return time.monotonic()

    def heartbeat(self, fmt: Format) -> bytes:
        return frames.SSE_KEEPALIVE if fmt == "sse" else self._ndjson_heartbeat

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """A background task the hub owns (consumer creation and deletion); cancelled at stop."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("stream hub background task failed", exc_info=task.exception())

    def record_catchup(self, events: int, *, bulk: bool = False) -> None:
        c = self.counters
        c.catchup_bulk += bulk
        c.catchup_lag_events = events
        c.catchup_lag_events_sum += events
        c.catchup_lag_events_count += 1
        c.catchup_lag_events_max = max(c.catchup_lag_events_max, events)

    def _on_bus_event(self, what: str) -> None:
        if what != "reconnected" or self._stopping:
            return
        # The server may have restarted and lost the in-memory feed consumers: re-create them from the last
        # seq each feed received. Catch-up requests in flight may be lost: ask again.
        for feed in list(self.feeds.values()):
            feed.request_reset()
        for stream in list(self._streams):
            if stream.reader is not None:
                stream.reader.reconnected()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                self._tick()
            except Exception:
                # A bug met by one stream or feed must not end the heartbeats and liveness checks of all of them.
                log.exception("stream hub tick failed; ticking on")

    def _tick(self) -> None:
        now = self.now
        self._ndjson_heartbeat = frames.ndjson_heartbeat(now_iso())
        idle_s = self.settings.heartbeat_s - self._tick_s
        for stream in list(self._streams):
            stream.tick(now, idle_s)
        for feed in list(self.feeds.values()):
            feed.check_alive(now)

    # ------------------------------------------------------------------ figures

    @property
    def stats(self) -> dict[str, int | float]:
        figures: dict[str, int | float] = dict(asdict(self.counters))
        figures["active_streams"] = len(self._streams)
        figures["active_feeds"] = len(self.feeds)
        figures["feed_subscribers"] = sum(len(feed.subs) for feed in self.feeds.values())
        figures["feeds_polling"] = sum(feed.polling for feed in self.feeds.values())
        return figures
