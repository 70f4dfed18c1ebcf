"""A task's live feed: one pull consumer per task and process, shared by all that task's clients.

The feed puts its parts together — the ring of received events and the clients' cursors (`ring.py`), the consumer
that fills it (`consumer.py`) or the poller while JetStream allows no consumer (`poller.py`), the coalesced waking
of waiting clients (`waker.py`) — and applies one rule: a client further behind than `client_buffer_bytes` is cut
off (it resumes with Last-Event-ID and loses nothing), and the ring is trimmed behind the slowest of the rest.

Continuity: the feed covers every event of the task from `covered_from` on. It starts at a position a reader has
reached (no gap behind it), and its consumer is always re-made from the last seq received.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from stream_edge.streaming.consumer import FeedConsumer, Spawn
from stream_edge.streaming.frames import TERMINAL_TYPE_BYTES
from stream_edge.streaming.link import Link
from stream_edge.streaming.poller import Poller
from stream_edge.streaming.ring import EventRing, Subscriber
from stream_edge.streaming.waker import Waker

__all__ = ["Feed", "FeedDeps", "Subscriber"]

# When the stream allows no more consumers (JetStream's per-stream limit): poll the log this often, and try for a
# consumer again this often.
POLL_INTERVAL_S = 0.25
POLL_UPGRADE_S = 5.0


@dataclass(frozen=True, slots=True)
class FeedDeps:
    """What a feed needs from whoever keeps it: one instance shared by every feed of a process."""

    link: Link
    spawn: Spawn  # runs a background task the keeper owns (and cancels at stop)
    client_buffer_bytes: int
    linger_s: float  # a feed outlives its last client this long: a reconnecting client finds it
    retire: Callable[[Feed], None]  # the last client left and the linger ran out


class Feed:
    __slots__ = ("_check_at", "_deps", "_linger", "_poller", "_ring", "_waker", "closed", "consumer", "ended",
                 "last_seq", "start_seq", "subs", "task_id")  # fmt: skip

    def __init__(self, task_id: str, start_seq: int, deps: FeedDeps) -> None:
        self.task_id = task_id
        self.start_seq = start_seq  # every event of the task from here on reaches the feed
        self.last_seq = start_seq - 1  # the last seq received
        self.ended = False  # the terminal event is in
        self.closed = False
        self.subs: set[Subscriber] = set()
        self.consumer = FeedConsumer(deps.link, task_id, self, deps.spawn, POLL_UPGRADE_S)
        self._deps = deps
        self._ring = EventRing()
        self._waker = Waker()
        self._poller = Poller(deps.link, task_id, self, deps.spawn, POLL_INTERVAL_S)
        self._check_at = 0  # recheck client lags once the ring's total passes this
        self._linger: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ coverage and attachment

    @property
    def covered_from(self) -> int:
        """Every event of the task with seq >= this is in the ring or still to come."""
        return max(self.start_seq, self._ring.trimmed_through + 1)

    def covers(self, last_seq: int) -> bool:
        """Can a client that has sent everything up to `last_seq` continue from the feed alone?"""
        return last_seq >= self.covered_from - 1

    def attach(self, sub: Subscriber) -> None:
        """Adds a client positioned at its first event after `sub.last_seq` (the caller checked `covers`)."""
        ring = self._ring
        sub.cursor = ring.position_after(sub.last_seq)
        self.subs.add(sub)
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._check_at = min(self._check_at, ring.bytes_before(sub.cursor) + self._deps.client_buffer_bytes)

    def detach(self, sub: Subscriber) -> None:
        self.subs.discard(sub)
        self._waker.forget(sub)
        if not self.subs and not self.closed and self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(self._deps.linger_s, self._linger_over)

    def pending(self, sub: Subscriber) -> bool:
        return sub.cursor < self._ring.head

    def finished(self, sub: Subscriber) -> bool:
        """Has the client sent the terminal event (or everything, after the task ended)?"""
        return self.ended and sub.cursor >= self._ring.head

    def wait_for_more(self, sub: Subscriber) -> None:
        self._waker.wait(sub)

    def take(self, sub: Subscriber) -> tuple[bytes, int]:
        """The client's next bytes and how many events they cover; advances its cursor."""
        return self._ring.take(sub)

    # ------------------------------------------------------------------ what the consumer and poller deliver

    @property
    def next_seq(self) -> int:
        return self.last_seq + 1

    @property
    def wanted(self) -> bool:
        return not self.closed and not self.ended

    def deliver(self, seq: int, type_b: bytes, payload: bytes) -> None:
        """One more event, if it is the next one (from the consumer, or from polling)."""
        if seq <= self.last_seq or self.ended:
            return
        ring = self._ring
        ring.append(seq, type_b, payload)
        self.last_seq = seq
        if type_b in TERMINAL_TYPE_BYTES:
            self.ended = True
            self.consumer.drop()
            self._poller.stop()
        self._waker.notify(len(self.subs), at_once=self.ended)
        if ring.total > self._check_at:
            self._enforce_limits()
        elif ring.over_ring():
            self._trim()

    def start_polling(self, reason: str) -> None:
        self._poller.start(reason)

    def stop_polling(self) -> None:
        self._poller.stop()

    @property
    def polling(self) -> bool:
        return self._poller.active

    # ------------------------------------------------------------------ lifecycle

    def connect(self) -> None:
        self.consumer.reset()

    def request_reset(self) -> None:
        """A new consumer from the last seq received (after a reconnect, a missed delivery, a silent consumer)."""
        self.consumer.reset()

    def check_alive(self, now: float) -> None:
        self.consumer.check_alive(now)

    def close(self) -> None:
        """Leaves the registry: the consumer is deleted, remaining clients are woken (they end or re-join)."""
        if self.closed:
            return
        self.closed = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._waker.cancel()
        self._poller.stop()
        self.consumer.drop()
        for sub in list(self.subs):
            sub.wake()

    def _linger_over(self) -> None:
        self._linger = None
        if not self.subs:
            self._deps.retire(self)

    # ------------------------------------------------------------------ bounds

    def _enforce_limits(self) -> None:
        """Cuts off clients further behind than the buffer limit; trims behind the slowest of the rest."""
        ring, limit = self._ring, self._deps.client_buffer_bytes
        lowest = ring.total
        for sub in list(self.subs):
            if ring.lag_bytes(sub) > limit:
                self.subs.discard(sub)
                self._waker.forget(sub)
                sub.on_cut()
            else:
                lowest = min(lowest, ring.bytes_before(sub.cursor))
        self._check_at = lowest + limit
        self._trim()

    def _trim(self) -> None:
        keep_from = self._ring.ring_start()
        for sub in self.subs:
            keep_from = min(keep_from, sub.cursor)
        self._ring.trim(keep_from)
