"""A task's live feed: one pull consumer per task and process, shared by all that task's clients.

The feed keeps what it received as parallel lists — sequence, type, stored payload, and the SSE and NDJSON bytes
made from them on first use — and hands every client the same bytes. A client is a `Subscriber`: a cursor into
those lists and the seq it sent last. Nothing is copied per client: a client's "buffer" is the stretch between
its cursor and the head, and its size is measured, not stored. When the stretch of the slowest client passes
`client_buffer_bytes` that client is cut off (it resumes with Last-Event-ID and loses nothing); the lists are
trimmed behind the slowest remaining client, keeping a small ring of recent events so that a client joining near
the head needs no trip to JetStream.

Receiving: pull requests parked on the server (long-poll with heartbeats), at least half a batch always
outstanding, answered the moment an event is stored. Continuity: the feed covers every event of the task from
`covered_from` on. It starts at a position a reader has reached (no gap behind it), and if its consumer breaks —
a missed delivery, silent heartbeats, a reconnect, the consumer deleted — it makes a new one from the last seq it
received.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from nats.aio.msg import Msg

from sluice import subjects
from sluice.errors import Unavailable
from stream_edge.streaming import frames
from stream_edge.streaming.link import AckFields, Link
from stream_edge.streaming.reader import LogReader

if TYPE_CHECKING:
    from stream_edge.streaming.hub import StreamHub

__all__ = ["TERMINAL_TYPE_BYTES", "Feed", "Format", "Subscriber"]

log = logging.getLogger(__name__)

Format = Literal["sse", "ndjson"]
TERMINAL_TYPE_BYTES = frozenset({b"task.completed", b"task.failed", b"task.canceled"})
# What a stored event costs a client besides its payload (id, event and data lines): for the buffer measure.
FRAME_OVERHEAD = 48
# Kept behind the slowest client for joiners near the head.
RING_EVENTS = 512
RING_BYTES = 512 * 1024
# One send never carries more than this; a client further behind gets several.
MAX_CHUNK_BYTES = 256 * 1024
# Clients waiting on a feed are woken at most every WAKE_PER_CLIENT_S × clients (up to WAKE_MAX_S): an event after
# a quiet spell goes out at once, a busy feed's events go out in batches — one send per client per interval
# instead of one per event, so a feed costs at most ~1/WAKE_PER_CLIENT_S sends a second however many read it.
WAKE_PER_CLIENT_S = 0.001
WAKE_MAX_S = 0.020
# When the stream allows no more consumers (JetStream's per-stream limit): poll the log this often, and try for a
# consumer again this often.
POLL_INTERVAL_S = 0.25
POLL_UPGRADE_S = 5.0
# Pull requests: size, how long one stays parked, its idle heartbeat; three silent heartbeats = consumer gone.
FEED_BATCH = 1000
FEED_EXPIRES_S = 30.0
FEED_HEARTBEAT_S = 5.0
_STALE_AFTER_S = 3 * FEED_HEARTBEAT_S


class Subscriber:
    """One client's view of a feed. The pump owns it; the feed moves `cursor`/`last_seq` only through `take`."""

    __slots__ = ("closed", "cursor", "fmt", "heartbeat_due", "in_send", "last_seq", "on_cut", "waiter", "waiting")

    def __init__(self, fmt: Format, last_seq: int, on_cut: Callable[[], None]) -> None:
        self.fmt: Format = fmt
        self.last_seq = last_seq
        self.cursor = 0
        self.waiter: asyncio.Future[None] | None = None
        self.waiting = False  # on the feed's wait list
        self.in_send = False
        self.heartbeat_due = False
        self.closed: str | None = None  # why the stream must end: disconnect, cut, shutdown
        self.on_cut = on_cut

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Request:
    """A pull request parked on the server: its reply key and how many deliveries it still has coming."""

    __slots__ = ("due", "key")

    def __init__(self, key: str, due: int) -> None:
        self.key = key
        self.due = due


class Feed:
    __slots__ = (
        "_base", "_check_at", "_connecting", "_consumer", "_cum", "_cum_base", "_encoded", "_joined", "_last_wake",
        "_linger", "_next_dseq", "_outstanding", "_payloads", "_polling", "_requests", "_reset_again", "_seqs",
        "_total", "_types", "_waiting", "_wake_handle", "closed", "connected", "connects", "ended", "hub",
        "last_activity", "last_seq", "link", "start_seq", "subs", "task_id", "trimmed_through",
    )  # fmt: skip

    def __init__(self, hub: StreamHub, link: Link, task_id: str, start_seq: int) -> None:
        self.hub = hub
        self.link = link
        self.task_id = task_id
        self.start_seq = start_seq  # every event of the task from here on reaches the feed
        self.trimmed_through = 0  # the highest seq dropped from the lists
        self.last_seq = start_seq - 1  # the last seq received
        self.ended = False  # the terminal event is in
        self.closed = False
        self.connected = False
        self.connects = 0
        self.subs: set[Subscriber] = set()
        self.last_activity = 0.0
        self._base = 0  # absolute position of index 0 of the lists
        self._seqs: list[int] = []
        self._types: list[bytes] = []
        self._payloads: list[bytes] = []
        self._encoded: dict[Format, list[bytes | None]] = {"sse": [], "ndjson": []}
        self._cum: list[int] = []  # cumulative measured bytes up to and including each item
        self._cum_base = 0  # cumulative bytes before index 0
        self._total = 0
        self._check_at = 0  # recheck client lags once _total passes this
        self._waiting: list[Subscriber] = []
        self._wake_handle: asyncio.TimerHandle | None = None
        self._last_wake = 0.0
        self._joined: tuple[Format, int, int, bytes] | None = None
        self._consumer: str | None = None
        self._next_dseq = 1
        self._requests: list[_Request] = []  # oldest first (one or two)
        self._outstanding = 0
        self._connecting = False
        self._reset_again = False
        self._polling = False
        self._linger: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ coverage and attachment

    @property
    def head(self) -> int:
        return self._base + len(self._seqs)

    @property
    def covered_from(self) -> int:
        """Every event of the task with seq >= this is in the lists or still to come."""
        return max(self.start_seq, self.trimmed_through + 1)

    def covers(self, last_seq: int) -> bool:
        """Can a client that has sent everything up to `last_seq` continue from the feed alone?"""
        return last_seq >= self.covered_from - 1

    def attach(self, sub: Subscriber) -> None:
        """Adds a client positioned at its first event after `sub.last_seq` (the caller checked `covers`)."""
        index = bisect_left(self._seqs, sub.last_seq + 1)
        sub.cursor = self._base + index
        self.subs.add(sub)
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._check_at = min(self._check_at, self._cum_at(sub.cursor) + self.hub.settings.client_buffer_bytes)

    def detach(self, sub: Subscriber) -> None:
        self.subs.discard(sub)
        if sub.waiting:
            sub.waiting = False
            if sub in self._waiting:
                self._waiting.remove(sub)
        if not self.subs and not self.closed and self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(self.hub.feed_linger_s, self._linger_over)

    def pending(self, sub: Subscriber) -> bool:
        return sub.cursor < self.head

    def finished(self, sub: Subscriber) -> bool:
        """Has the client sent the terminal event (or everything, after the task ended)?"""
        return self.ended and sub.cursor >= self.head

    def wait_for_more(self, sub: Subscriber) -> None:
        if not sub.waiting:
            sub.waiting = True
            self._waiting.append(sub)

    def take(self, sub: Subscriber) -> tuple[bytes, int]:
        """The client's next bytes (up to MAX_CHUNK_BYTES) and how many events they hold; advances its cursor."""
        start, head, base = sub.cursor, self.head, self._base
        seqs = self._seqs
        while start < head and seqs[start - base] <= sub.last_seq:
            start += 1
        if start >= head:
            sub.cursor = head
            return b"", 0
        end = head
        if self._cum[end - 1 - base] - self._cum_at(start) > MAX_CHUNK_BYTES:
            end = max(start + 1, base + bisect_left(self._cum, self._cum_at(start) + MAX_CHUNK_BYTES))
        chunk = self._join(sub.fmt, start, end)
        sub.cursor = end
        sub.last_seq = seqs[end - 1 - base]
        return chunk, end - start

    # ------------------------------------------------------------------ receiving

    async def on_pulled(self, fields: AckFields, msg: Msg) -> None:
        consumer, seq, dseq, _ = fields
        if consumer != self._consumer:
            return  # a consumer we have replaced
        self.last_activity = self.hub.now
        requests = self._requests
        if requests:  # the server answers parked requests oldest first
            self._outstanding -= 1
            head = requests[0]
            head.due -= 1
            if head.due <= 0:
                del requests[0]
                self.link.unroute(head.key)
        self.on_delivery(seq, dseq, msg.subject, msg.data)
        if self._outstanding < FEED_BATCH // 2:
            await self._pull()

    async def on_reply(self, key: str, msg: Msg) -> None:
        """A status on a parked request: heartbeat, expiry, or the request's end."""
        self.last_activity = self.hub.now
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "100":
            return
        self.link.unroute(key)
        for request in self._requests:
            if request.key == key:
                self._outstanding -= request.due
                self._requests.remove(request)
                break
        if status in ("408", "404"):  # expired: park another if fewer than half a batch is still asked for
            if self._outstanding < FEED_BATCH // 2:
                await self._pull()
            return
        # 409 (consumer deleted, leadership change, too many waiting requests…) or anything else: start afresh
        description = headers.get("Description", "")
        log.info("feed of task %s: request answered %s %s; re-creating", self.task_id, status, description)
        self.request_reset()

    async def _pull(self) -> None:
        """Parks one more request for FEED_BATCH deliveries."""
        consumer = self._consumer
        if consumer is None or not self.connected or self.ended or self.closed:
            return
        key = self.link.new_key("r")
        self.link.route_reply(key, self)
        self._requests.append(_Request(key, FEED_BATCH))
        self._outstanding += FEED_BATCH
        await self.link.request_fetch(
            key, consumer, FEED_BATCH, 0, expires_s=FEED_EXPIRES_S, heartbeat_s=FEED_HEARTBEAT_S
        )

    def on_delivery(self, seq: int, dseq: int, subject: str, payload: bytes) -> None:
        if dseq != self._next_dseq:
            # A delivery went missing (a slow-consumer drop, a consumer the server re-created): start over from
            # the last one we have.
            log.info("feed of task %s missed deliveries; resuming from %d", self.task_id, self.last_seq + 1)
            self.request_reset()
            return
        self._next_dseq = dseq + 1
        self.append(seq, frames.type_bytes(subjects.event_type_of(subject)), payload)

    def append(self, seq: int, type_b: bytes, payload: bytes) -> None:
        """One more event, if it is the next one (from the consumer, or from polling)."""
        if seq <= self.last_seq or self.ended:
            return
        self._seqs.append(seq)
        self._types.append(type_b)
        self._payloads.append(payload)
        self._encoded["sse"].append(None)
        self._encoded["ndjson"].append(None)
        self._total += len(payload) + FRAME_OVERHEAD
        self._cum.append(self._total)
        self.last_seq = seq
        if type_b in TERMINAL_TYPE_BYTES:
            self._end()
        if self._waiting and self._wake_handle is None:
            loop = asyncio.get_running_loop()
            due = self._last_wake + min(WAKE_MAX_S, WAKE_PER_CLIENT_S * len(self.subs))
            if loop.time() >= due or self.ended:
                self._wake_waiting()
            else:
                self._wake_handle = loop.call_at(due, self._wake_waiting)
        if self._total > self._check_at:
            self._enforce_limits()
        elif len(self._seqs) > 2 * RING_EVENTS:
            self._trim()

    # ------------------------------------------------------------------ the consumer

    def connect(self) -> None:
        self.request_reset()

    def request_reset(self) -> None:
        """Make a new consumer from the last seq received (also the first connect)."""
        if self.closed or self.ended:
            return
        self.connected = False
        if self._connecting:
            self._reset_again = True
            return
        self._drop_consumer()
        self._connecting = True
        self.hub.spawn(self._connect())

    async def _connect(self) -> None:
        delay = 0.1
        try:
            while not self.closed and not self.ended:
                self._reset_again = False
                name = self.link.new_key("c")
                self._consumer = name
                self._next_dseq = 1
                self.link.route_consumer(name, self)
                try:
                    await self.link.create_consumer(name, self.task_id, self.last_seq + 1, "feed")
                except Unavailable as exc:
                    self._drop_consumer()
                    if exc.code == "consumer_limit":
                        # The stream allows no more consumers: follow by polling until one is free.
                        if not self._polling:
                            log.warning("feed of task %s polls: %s", self.task_id, exc.message)
                            self._polling = True
                            self.hub.spawn(self._poll())
                        await asyncio.sleep(POLL_UPGRADE_S)
                        continue
                    log.warning("feed of task %s: %s; retrying", self.task_id, exc.message)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                if self._consumer != name or self._reset_again or self.closed or self.ended:
                    # Asked to start over (or to stop) while the consumer was being made.
                    self._drop_consumer()
                    continue
                self.connected = True
                self._polling = False
                self.last_activity = self.hub.now
                self.connects += 1
                await self._pull()
                return
        finally:
            self._connecting = False

    async def _poll(self) -> None:
        """Degraded mode without a consumer: read the log from the last seq every POLL_INTERVAL_S."""
        wake = asyncio.Event()
        reader = LogReader(self.link, self.task_id, wake.set)
        try:
            while self._polling and not self.closed and not self.ended:
                reader.start(self.last_seq)
                while self._polling and not reader.exhausted and reader.error is None:
                    batch = reader.take()
                    if batch is None:
                        wake.clear()
                        await reader.request()
                        if not reader.has_batch and not reader.exhausted and reader.error is None:
                            await wake.wait()
                        continue
                    for seq, type_b, payload in zip(batch.seqs, batch.types, batch.payloads, strict=True):
                        self.append(seq, type_b, payload)
                self.last_activity = self.hub.now
                await asyncio.sleep(POLL_INTERVAL_S)
        finally:
            reader.close()

    @property
    def polling(self) -> bool:
        return self._polling

    def check_alive(self, now: float) -> None:
        """Called by the hub's ticker: a consumer silent for three heartbeats is gone."""
        if self.connected and now - self.last_activity > _STALE_AFTER_S:
            log.info("feed of task %s went silent; re-creating its consumer", self.task_id)
            self.request_reset()

    def close(self) -> None:
        """Leaves the hub: the consumer is deleted, remaining clients are woken (they end or re-join)."""
        if self.closed:
            return
        self.closed = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._wake_handle is not None:
            self._wake_handle.cancel()
            self._wake_handle = None
        self._drop_consumer()
        for sub in list(self.subs):
            sub.wake()

    def _end(self) -> None:
        self.ended = True
        self._drop_consumer()

    def _drop_consumer(self) -> None:
        self.connected = False
        for request in self._requests:
            self.link.unroute(request.key)
        self._requests.clear()
        self._outstanding = 0
        if self._consumer is not None:
            self.link.unroute(self._consumer)
            self.link.delete_later(self._consumer)
            self._consumer = None

    def _wake_waiting(self) -> None:
        self._wake_handle = None
        self._last_wake = asyncio.get_running_loop().time()
        waiting, self._waiting = self._waiting, []
        for sub in waiting:
            sub.waiting = False
            sub.wake()

    def _linger_over(self) -> None:
        self._linger = None
        if not self.subs:
            self.hub.retire_feed(self)

    # ------------------------------------------------------------------ bytes and bounds

    def _cum_at(self, pos: int) -> int:
        """Measured bytes of everything before absolute position `pos`."""
        index = pos - self._base
        return self._cum[index - 1] if index > 0 else self._cum_base

    def _join(self, fmt: Format, start: int, end: int) -> bytes:
        joined = self._joined
        if joined is not None and joined[0] == fmt and joined[1] == start and joined[2] == end:
            return joined[3]
        base = self._base
        encoded = self._encoded[fmt]
        seqs, payloads = self._seqs, self._payloads
        for i in range(start - base, end - base):
            if encoded[i] is None:
                if fmt == "sse":
                    encoded[i] = frames.sse_event(seqs[i], self._types[i], payloads[i])
                else:
                    encoded[i] = frames.ndjson_event(seqs[i], payloads[i])
        chunk = b"".join(encoded[start - base : end - base])  # type: ignore[arg-type]
        self._joined = (fmt, start, end, chunk)
        return chunk

    def _enforce_limits(self) -> None:
        """Cuts off clients further behind than the buffer limit; trims behind the slowest of the rest."""
        limit = self.hub.settings.client_buffer_bytes
        lowest = self._total
        for sub in list(self.subs):
            behind_from = self._cum_at(sub.cursor)
            if self._total - behind_from > limit:
                self.subs.discard(sub)
                if sub.waiting:
                    sub.waiting = False
                    self._waiting.remove(sub)
                sub.on_cut()
            else:
                lowest = min(lowest, behind_from)
        self._check_at = lowest + limit
        self._trim()

    def _trim(self) -> None:
        head = self.head
        keep_from = max(head - RING_EVENTS, self._base + bisect_left(self._cum, self._total - RING_BYTES))
        for sub in self.subs:
            keep_from = min(keep_from, sub.cursor)
        drop = keep_from - self._base
        if drop <= 0:
            return
        self.trimmed_through = self._seqs[drop - 1]
        self._cum_base = self._cum[drop - 1]
        del self._seqs[:drop], self._types[:drop], self._payloads[:drop], self._cum[:drop]
        del self._encoded["sse"][:drop], self._encoded["ndjson"][:drop]
        self._base = keep_from
