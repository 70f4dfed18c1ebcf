"""One client's event stream: the pump that fills its raw ASGI response.

    prepare()   before the response exists (errors here are HTTP errors): see opening.py
    run()       the response: headers, then the pump; a watcher task hears the client disconnect
    pump        catch-up from JetStream (reader.py) → join the task's feed at the seam → follow it (feed.py)

A stream reaches the rest of the engine only through its `StreamContext` (the link, the feed registry, the
counters, and the hand-back when it ends). Cancellation paths are drawn in ARCHITECTURE.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from enum import Enum

from starlette.types import Send

from sluice.clock import now_iso
from sluice.errors import Unavailable
from sluice.events import TaskRecord
from stream_edge.streaming import opening
from stream_edge.streaming.context import StreamContext
from stream_edge.streaming.encodings import encode_batch
from stream_edge.streaming.feed import Feed
from stream_edge.streaming.reader import Batch, LogReader
from stream_edge.streaming.request import StreamRequest
from stream_edge.streaming.ring import Subscriber

__all__ = ["ClientStream", "StreamContext"]

log = logging.getLogger(__name__)

NEVER_SERVED_S = 60.0  # a stream prepared but never run (its request died in between) is released after this


class CatchUp(Enum):
    TERMINAL = "terminal"  # the terminal event was sent
    EXHAUSTED = "exhausted"  # everything stored after the client's position was sent
    CLOSED = "closed"  # the stream must end (disconnect, cut, shutdown, error)


class ClientStream:
    __slots__ = ("_ctx", "_cut_requested", "_end_at_once", "_final", "_preamble", "_released", "_task", "encoding",
                 "feed", "follow", "last_write", "opened_at", "reader", "replayed", "started", "sub",
                 "task_id")  # fmt: skip

    def __init__(self, ctx: StreamContext, request: StreamRequest) -> None:
        self._ctx = ctx
        self.task_id = request.task_id
        self.encoding = enc = request.encoding
        self.follow = request.follow
        self.sub = Subscriber(enc, request.after, self._on_cut)
        self.reader: LogReader | None = None
        self.feed: Feed | None = None
        self.started = False
        self.opened_at = self.last_write = time.monotonic()
        self.replayed = 0
        preamble = enc.preamble(ctx.retry_ms)
        self._preamble: list[bytes] = [preamble] if preamble else []
        self._end_at_once = False
        self._final = b""  # the last bytes, sent with the end of the response
        self._task: asyncio.Task[None] | None = None
        self._cut_requested = False
        self._released = False

    # ------------------------------------------------------------------ before the response

    async def prepare(self, snapshot: TaskRecord | None, first_seq: int | None = None) -> None:
        opened = await opening.open_stream(
            self._ctx, self.sub, self.task_id, self.follow, snapshot, first_seq, self._wait_to_open
        )
        self._preamble += opened.frames
        self.feed, self.reader, self._end_at_once = opened.feed, opened.reader, opened.past_end

    # ------------------------------------------------------------------ the response (response.py runs it)

    def begin(self) -> None:
        self._task = asyncio.current_task()
        self.started = True
        self.last_write = time.monotonic()

    def disconnected(self) -> None:
        self.sub.closed = "disconnect"
        self.sub.wake()

    def was_cut(self) -> bool:
        """Was the pump cancelled by `abort` (and not by anyone else)? Swallows that one cancellation."""
        task = self._task
        return self._cut_requested and task is not None and task.uncancel() == 0

    async def pump(self, send: Send) -> None:
        sub, trailer = self.sub, self.encoding.trailer
        if self._end_at_once:
            await self._finish(send, b"".join(self._preamble) + trailer)
            return
        feed = self.feed
        if feed is None:
            state = await self._catch_up(send)
            if state is not CatchUp.EXHAUSTED or not self.follow:
                await self._finish(send, self._final + (trailer if state is CatchUp.TERMINAL else b""))
                return
            feed = await self._join_feed(send)
            if feed is None:
                await self._finish(send, self._final)
                return
        elif self._preamble:
            await self._write(send, b"".join(self._preamble))
        self._preamble = []
        while sub.closed is None and not feed.closed:
            if feed.pending(sub):
                chunk, count = feed.take(sub)
                if count:
                    self._ctx.counters.events_delivered += count
                    if feed.finished(sub):
                        await self._finish(send, chunk + trailer)
                        return
                    if chunk:
                        await self._write(send, chunk)
                continue
            if feed.finished(sub):
                break
            if sub.heartbeat_due:
                await self._write(send, self.encoding.heartbeat(now_iso()))
                continue
            feed.wait_for_more(sub)
            await self._wait()
        await self._finish(send)

    async def _catch_up(self, send: Send) -> CatchUp:
        """Sends what the reader finds until the log is exhausted, the terminal event, or the stream closes."""
        reader, sub = self.reader, self.sub
        assert reader is not None
        out = self._preamble
        self._preamble = []
        while sub.closed is None:
            batch = reader.take()
            if batch is None:
                if out:
                    await self._write(send, b"".join(out))
                    out = []
                if reader.error is not None:
                    log.warning("stream of task %s ends: %s", self.task_id, reader.error.message)
                    return CatchUp.CLOSED
                if reader.exhausted:
                    return CatchUp.EXHAUSTED
                if sub.heartbeat_due:
                    await self._write(send, self.encoding.heartbeat(now_iso()))
                    continue
                await reader.request()
                if not reader.has_batch and not reader.exhausted:
                    await self._wait()
                continue
            await reader.request()  # the next batch is on its way while this one is encoded and sent
            chunk, count, terminal = self._encode(batch)
            if count:
                if chunk:
                    out.append(chunk)
                self.replayed += count
                self._ctx.counters.events_delivered += count
            if terminal:
                self._final = b"".join(out)
                return CatchUp.TERMINAL
            if out:
                await self._write(send, b"".join(out))
                out = []
        return CatchUp.CLOSED

    async def _join_feed(self, send: Send) -> Feed | None:
        """Joins the task's feed at the client's position, reading on from JetStream until the feed covers it.

        The feed covers the task from `covered_from`. A client behind that reads on; if the log looks exhausted
        below it, the stream leader confirms nothing lies between (a replica answering direct gets may lag).
        """
        reader, sub, feeds = self.reader, self.sub, self._ctx.feeds
        assert reader is not None
        while sub.closed is None:
            feed = feeds.feed_for(self.task_id, sub.last_seq)
            if not feed.covers(sub.last_seq):
                reader.start(sub.last_seq)
                state = await self._catch_up(send)
                if state is not CatchUp.EXHAUSTED:
                    return None
                if feed.closed:
                    continue
                if not feed.covers(sub.last_seq):
                    following = await self._ctx.link.next_seq_consistent(self.task_id, sub.last_seq)
                    if feed.closed or (following is not None and following < feed.covered_from):
                        continue
            self._close_reader()  # live from here on: the reader's buffers go
            feed.attach(sub)
            self.feed = feed
            return feed
        return None

    def _encode(self, batch: Batch) -> tuple[bytes, int, bool]:
        """The batch's events after the client's position, encoded, up to and including a terminal event."""
        chunk, count, terminal, self.sub.last_seq = encode_batch(self.encoding, batch, self.sub.last_seq)
        return chunk, count, terminal

    async def _wait_to_open(self) -> None:
        """Waits for the first batch, unless the stream is ended before it began (the edge shuts down while NATS is
        slow to answer): then the request is a 503 the client retries elsewhere, not a request cut off unanswered."""
        if self.sub.closed is None:
            await self._wait()
        if self.sub.closed is not None:
            raise Unavailable(
                "shutting_down", "this edge is shutting down; reconnect with Last-Event-ID", retry_after_s=1
            )

    async def _wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self.sub.waiter = waiter
        try:
            await waiter
        finally:
            self.sub.waiter = None

    async def _write(self, send: Send, body: bytes) -> None:
        sub = self.sub
        sub.in_send = True
        try:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        finally:
            sub.in_send = False
        sub.heartbeat_due = False
        self.last_write = time.monotonic()

    async def _finish(self, send: Send, body: bytes = b"") -> None:
        sub = self.sub
        if sub.closed == "disconnect":
            return
        sub.in_send = True
        try:
            await send({"type": "http.response.body", "body": body, "more_body": False})
        finally:
            sub.in_send = False

    # ------------------------------------------------------------------ ending, from outside the pump

    def _on_cut(self) -> None:
        """The feed found this client too far behind."""
        self._ctx.counters.slow_clients_cut += 1
        self.end("cut")

    def end(self, reason: str) -> None:
        """Ends the stream as soon as possible; if it is blocked sending to a client that does not read, now."""
        if self.sub.closed is None:
            self.sub.closed = reason
        if not self.started:
            self.release()
            self.sub.wake()  # a stream still opening gives up (see _wait_to_open)
        elif self.sub.in_send:
            self.abort()
        else:
            self.sub.wake()

    def end_gracefully(self, reason: str) -> None:
        """Ends the stream after the send in progress (shutdown: the client has its grace period to read)."""
        if self.sub.closed is None:
            self.sub.closed = reason
        if not self.started:
            self.release()
        self.sub.wake()  # a stream still opening gives up (see _wait_to_open)

    def abort(self) -> None:
        if self._task is not None and not self._task.done() and not self._cut_requested:
            self._cut_requested = True
            self._task.cancel()

    def tick(self, now: float, idle_s: float) -> None:
        if self.started:
            if now - self.last_write >= idle_s and not self.sub.heartbeat_due:
                self.sub.heartbeat_due = True
                self.sub.wake()
        elif now - self.opened_at > NEVER_SERVED_S:
            self.release()

    def reconnected(self) -> None:
        """The NATS connection came back: a catch-up request in flight may be lost."""
        if self.reader is not None:
            self.reader.reconnected()

    def _close_reader(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None:
            reader.close()
            self._ctx.counters.record_catchup(self.replayed, bulk=reader.pulled)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._close_reader()
        if self.feed is not None:
            self.feed.detach(self.sub)
        self._ctx.release(self)
