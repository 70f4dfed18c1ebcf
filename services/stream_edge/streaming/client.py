"""One client's event stream: the raw ASGI response and the pump that fills it.

    prepare()   before the response exists (errors here are HTTP errors): the first catch-up batch, stream.gap,
                task.snapshot, "already past the terminal event"
    run()       the response: headers, then the pump; a watcher task hears the client disconnect
    pump        catch-up from JetStream (reader.py) → join the task's feed at the seam → follow it (feed.py)

Cancellation paths: the client disconnects → the watcher marks the stream closed and wakes the pump (a send
blocked on a full socket is released by uvicorn's connection_lost). The client falls too far behind, or the hub
stops and the grace period runs out → the pump is woken, or, if it is blocked in a send, its task is cancelled
(and the cancellation swallowed with `uncancel`, as `asyncio.timeout` does): it returns without completing the
response and the server closes the connection. Closing a stream never touches the task itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from enum import Enum
from typing import TYPE_CHECKING

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sluice import subjects
from sluice.clock import now_iso
from sluice.errors import Unavailable
from sluice.eventlog import oldest_event
from sluice.events import TERMINAL_TYPES, StreamGap, StreamGapData, TaskRecord, TaskSnapshot, encode
from sluice.ids import parse_event_id
from stream_edge.streaming import frames
from stream_edge.streaming.feed import TERMINAL_TYPE_BYTES, Feed, Format, Subscriber
from stream_edge.streaming.reader import REQUEST_TIMEOUT_S, Batch, LogReader

if TYPE_CHECKING:
    from stream_edge.streaming.hub import StreamHub

__all__ = ["ClientStream", "EventStreamResponse"]

log = logging.getLogger(__name__)

SOURCE = "stream-edge"
_SUBMITTED = b"task.submitted"


class CatchUp(Enum):
    TERMINAL = "terminal"  # the terminal event was sent
    EXHAUSTED = "exhausted"  # everything stored after the client's position was sent
    CLOSED = "closed"  # the stream must end (disconnect, cut, shutdown, error)


class ClientStream:
    __slots__ = (
        "_cut_requested", "_end_at_once", "_final", "_preamble", "_released", "_task", "feed", "fmt", "follow",
        "hub", "last_write", "opened_at", "reader", "replayed", "started", "sub", "task_id",
    )  # fmt: skip

    def __init__(self, hub: StreamHub, task_id: str, fmt: Format, after: int, follow: bool) -> None:
        self.hub = hub
        self.task_id = task_id
        self.fmt: Format = fmt
        self.follow = follow
        self.sub = Subscriber(fmt, after, self._on_cut)
        self.reader: LogReader | None = None
        self.feed: Feed | None = None
        self.started = False
        self.opened_at = hub.now
        self.last_write = hub.now
        self.replayed = 0
        self._preamble: list[bytes] = [frames.sse_retry(hub.settings.retry_ms)] if fmt == "sse" else []
        self._end_at_once = False
        self._final = b""  # the last bytes, sent with the end of the response
        self._task: asyncio.Task[None] | None = None
        self._cut_requested = False
        self._released = False

    # ------------------------------------------------------------------ before the response

    async def prepare(self, snapshot: TaskRecord | None) -> None:
        if snapshot is not None:
            self._preamble.append(self._snapshot_frame(snapshot))
            self.sub.last_seq = parse_event_id(snapshot.last_event_id or "0")
        after = self.sub.last_seq
        feed = self.hub.feeds.get(self.task_id)
        if self.follow and feed is not None and not feed.closed and feed.covers(after):
            feed.attach(self.sub)  # near the head: the feed's ring has everything after `after`
            self.feed = feed
            return
        reader = self.reader = LogReader(self.hub.link, self.task_id, self.sub.wake)
        reader.start(after)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * REQUEST_TIMEOUT_S
        while not reader.has_batch and not reader.exhausted:
            if reader.error is not None:
                raise reader.error
            if loop.time() > deadline:
                raise Unavailable("nats_timeout", f"reading the log of task {self.task_id} timed out")
            await reader.request()
            if not reader.has_batch and not reader.exhausted and reader.error is None:
                await self._wait()
        self.hub.counters.catchup_replays += 1
        first = reader.peek()
        if first is not None:
            await self._check_gap(after, first)
        elif after > 0:
            await self._check_past_terminal(after)

    async def _check_gap(self, after: int, first: Batch) -> None:
        """CONTRACT §5: if events before the client's position have expired, say so before the rest."""
        first_seq, first_type = first.seqs[0], first.types[0]
        if first_type == _SUBMITTED or first_seq == after + 1:
            return
        if after == 0:
            oldest = first_seq
        else:
            entry = await oldest_event(self.hub.bus, self.task_id)
            if entry is None or entry.type == "task.submitted":
                return
            oldest = entry.seq
        if after < oldest - 1:
            gap = StreamGap(
                task_id=self.task_id,
                ts=now_iso(),
                source=SOURCE,
                data=StreamGapData(after=str(after), oldest=str(oldest)),
            )
            body = encode(gap)
            self._preamble.append(
                frames.sse_frame(None, "stream.gap", body) if self.fmt == "sse" else frames.ndjson_line(body)
            )
            self.hub.counters.gaps_served += 1

    async def _check_past_terminal(self, after: int) -> None:
        """Nothing after `after`: if `after` is the task's terminal event, there never will be — end at once.
        (Asked of the stream leader: a lagging replica could hide the terminal event and hold the stream open.)"""
        subject = await self.hub.link.subject_at(after)
        if subject is not None and subjects.task_id_of(subject) == self.task_id:
            self._end_at_once = subjects.event_type_of(subject) in TERMINAL_TYPES

    def _snapshot_frame(self, record: TaskRecord) -> bytes:
        event_id = record.last_event_id or "0"
        body = encode(TaskSnapshot(task_id=self.task_id, ts=now_iso(), source=SOURCE, id=event_id, data=record))
        return frames.sse_frame(event_id, "task.snapshot", body) if self.fmt == "sse" else frames.ndjson_line(body)

    # ------------------------------------------------------------------ the response

    async def run(self, receive: Receive, send: Send, headers: list[tuple[bytes, bytes]]) -> None:
        task = self._task = asyncio.current_task()
        self.started = True
        self.last_write = self.hub.now
        watcher = asyncio.create_task(self._watch(receive), name=f"sluice-stream-watch-{self.task_id}")
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await self._pump(send)
        except asyncio.CancelledError:
            if self._cut_requested and task is not None and task.uncancel() == 0:
                return  # cut off while blocked in a send: return without completing; the server closes
            raise
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self.release()

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.sub.closed = "disconnect"
                self.sub.wake()
                return

    async def _pump(self, send: Send) -> None:
        sub = self.sub
        if self._end_at_once:
            await self._finish(send, b"".join(self._preamble))
            return
        feed = self.feed
        if feed is None:
            state = await self._catch_up(send)
            if state is not CatchUp.EXHAUSTED or not self.follow:
                await self._finish(send, self._final)
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
                    self.hub.counters.events_delivered += count
                    if feed.finished(sub):
                        await self._finish(send, chunk)
                        return
                    await self._write(send, chunk)
                continue
            if feed.finished(sub):
                break
            if sub.heartbeat_due:
                await self._write(send, self.hub.heartbeat(self.fmt))
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
                    await self._write(send, self.hub.heartbeat(self.fmt))
                    continue
                await reader.request()
                if not reader.has_batch and not reader.exhausted:
                    await self._wait()
                continue
            await reader.request()  # the next batch is on its way while this one is encoded and sent
            chunk, count, terminal = self._encode(batch)
            if count:
                out.append(chunk)
                self.replayed += count
                self.hub.counters.events_delivered += count
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
        reader, sub = self.reader, self.sub
        assert reader is not None
        while sub.closed is None:
            feed = self.hub.feed_for(self.task_id, sub.last_seq)
            if not feed.covers(sub.last_seq):
                reader.start(sub.last_seq)
                state = await self._catch_up(send)
                if state is not CatchUp.EXHAUSTED:
                    return None
                if feed.closed:
                    continue
                if not feed.covers(sub.last_seq):
                    following = await self.hub.link.next_seq_consistent(self.task_id, sub.last_seq)
                    if feed.closed or (following is not None and following < feed.covered_from):
                        continue
            self._close_reader()  # live from here on: the reader's buffers go
            feed.attach(sub)
            self.feed = feed
            return feed
        return None

    def _encode(self, batch: Batch) -> tuple[bytes, int, bool]:
        """The batch's events after the client's position, framed, up to and including a terminal event."""
        seqs, types, payloads = batch.seqs, batch.types, batch.payloads
        last = self.sub.last_seq
        parts: list[bytes] = []
        terminal = False
        sse = self.fmt == "sse"
        sse_event, ndjson_event = frames.sse_event, frames.ndjson_event
        for i in range(len(seqs)):
            seq = seqs[i]
            if seq <= last:
                continue
            event_type = types[i]
            parts.append(sse_event(seq, event_type, payloads[i]) if sse else ndjson_event(seq, payloads[i]))
            last = seq
            if event_type in TERMINAL_TYPE_BYTES:
                terminal = True
                break
        self.sub.last_seq = last
        return b"".join(parts), len(parts), terminal

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
        self.last_write = self.hub.now

    async def _finish(self, send: Send, body: bytes = b"") -> None:
        if self.sub.closed == "disconnect":
            return
        sub = self.sub
        sub.in_send = True
        try:
            await send({"type": "http.response.body", "body": body, "more_body": False})
        finally:
            sub.in_send = False

    # ------------------------------------------------------------------ ending, from outside the pump

    def _on_cut(self) -> None:
        """The feed found this client too far behind."""
        self.hub.counters.slow_clients_cut += 1
        self.end("cut")

    def end(self, reason: str) -> None:
        """Ends the stream as soon as possible; if it is blocked sending to a client that does not read, now."""
        if self.sub.closed is None:
            self.sub.closed = reason
        if not self.started:
            self.release()
            return
        if self.sub.in_send:
            self.abort()
        else:
            self.sub.wake()

    def end_gracefully(self, reason: str) -> None:
        """Ends the stream after the send in progress (shutdown: the client has its grace period to read)."""
        if self.sub.closed is None:
            self.sub.closed = reason
        if not self.started:
            self.release()
        else:
            self.sub.wake()

    def abort(self) -> None:
        if self._task is not None and not self._task.done() and not self._cut_requested:
            self._cut_requested = True
            self._task.cancel()

    def tick(self, now: float, idle_s: float) -> None:
        if self.started:
            if now - self.last_write >= idle_s and not self.sub.heartbeat_due:
                self.sub.heartbeat_due = True
                self.sub.wake()
        elif now - self.opened_at > 60.0:
            self.release()  # prepared but never served (the request died in between)

    def _close_reader(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None:
            reader.close()
            self.hub.record_catchup(self.replayed, bulk=reader.pulled)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._close_reader()
        if self.feed is not None:
            self.feed.detach(self.sub)
        self.hub.release(self)


class EventStreamResponse(Response):
    """A raw ASGI response around a `ClientStream`: pre-joined bytes go straight to `send`."""

    def __init__(self, stream: ClientStream, media_type: str) -> None:
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(
            {"content-type": media_type, "cache-control": "no-cache, no-transform", "x-accel-buffering": "no"}
        )
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._stream.run(receive, send, self.raw_headers)
