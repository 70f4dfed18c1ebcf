"""Catch-up: a task's stored events after a position, in batches, one batch ahead of the pump.

Two ways to read, both paced by the pump (a batch is asked for only when the previous one has been taken):

    direct get   `$JS.API.DIRECT.GET` with `next_by_subj` on the task's subjects, `batch` and `max_bytes`: no
                 state on the server, the first bytes at once. Every reply carries six `Nats-*` headers, and
                 parsing headers is most of what a direct get costs the Python client.
    pull         for a long history (the first direct-get batch reports more than BULK_AFTER still to come): a
                 short-lived pull consumer (no acks, in memory) from the next seq, fetched with `no_wait`
                 batches. Its deliveries carry only the stored headers — about 2.5× the events/s. It is deleted
                 when the catch-up ends (and expires by itself if the edge dies).

A request that gets no answer (a reconnect, a lost reply) is asked again after a timeout from the last event
received, by direct get (a pull consumer without acks may already have moved past what was lost); late replies to
an old request are ignored (each request has its own route key).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from nats.aio.msg import Msg

from sluice import subjects
from sluice.errors import SluiceError, Unavailable
from stream_edge.streaming.frames import type_bytes
from stream_edge.streaming.link import AckFields, Link

__all__ = ["Batch", "LogReader"]

BATCH_EVENTS = 1000
BATCH_BYTES = 256 * 1024
BULK_AFTER = 2000  # still to read after the first batch: switch to a pull consumer
REQUEST_TIMEOUT_S = 5.0
_RETRY_DELAY_S = 0.5


class Batch:
    """Events as parallel lists: no object per event."""

    __slots__ = ("payloads", "seqs", "types")

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.types: list[bytes] = []
        self.payloads: list[bytes] = []

    def __len__(self) -> int:
        return len(self.seqs)


class LogReader:
    __slots__ = (
        "_consumer", "_current", "_filter", "_key", "_next", "_not_before", "_ready", "_timer", "_wake",
        "_want_pull", "error", "events_read", "exhausted", "last_seq", "link", "pulled", "requests", "task_id",
    )  # fmt: skip

    def __init__(self, link: Link, task_id: str, wake: Callable[[], None]) -> None:
        self.link = link
        self.task_id = task_id
        self._filter = subjects.events_of_task(task_id)
        self._wake = wake
        self._next = 1
        self._ready: deque[Batch] = deque()
        self._current = Batch()
        self._key: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._not_before = 0.0
        self._consumer: str | None = None  # the pull consumer, in pull mode
        self._want_pull = False
        self.exhausted = False
        self.error: SluiceError | None = None
        self.last_seq = 0
        self.events_read = 0
        self.requests = 0
        self.pulled = False  # a pull consumer was used

    def start(self, after: int) -> None:
        """Read from after + 1 on (again)."""
        self._cancel_request()
        self._drop_consumer()
        self._ready.clear()
        self._current = Batch()
        self._next = after + 1
        self.last_seq = after
        self.exhausted = False

    def take(self) -> Batch | None:
        return self._ready.popleft() if self._ready else None

    def peek(self) -> Batch | None:
        return self._ready[0] if self._ready else None

    @property
    def has_batch(self) -> bool:
        return bool(self._ready)

    async def request(self) -> None:
        """Asks for the next batch unless one is out, one is ready, or the log is exhausted."""
        if self._key is not None or self._ready or self.exhausted or self.error is not None:
            return
        loop = asyncio.get_running_loop()
        delay = self._not_before - loop.time()
        if delay > 0:
            if self._timer is None:
                self._timer = loop.call_later(delay, self._backoff_over)
            return
        if self._want_pull:
            self._want_pull = False
            await self._start_pull()
            if self._key is not None or self._ready or self.exhausted:
                return
        key = self.link.new_key("r")
        self.link.route_reply(key, self)
        self._key = key
        self.requests += 1
        self._timer = loop.call_later(REQUEST_TIMEOUT_S, self._timed_out, key)
        if self._consumer is not None:
            await self.link.request_fetch(key, self._consumer, BATCH_EVENTS, BATCH_BYTES)
        else:
            await self.link.request_batch(key, self._filter, self._next, BATCH_EVENTS, BATCH_BYTES)

    def reconnected(self) -> None:
        """The connection came back: a request in flight may be lost, ask again now (by direct get)."""
        if self._key is not None:
            self._end_request()
            self._drop_consumer()
            self._wake()

    def close(self) -> None:
        self._cancel_request()
        self._drop_consumer()
        self._ready.clear()

    async def on_pulled(self, fields: AckFields, msg: Msg) -> None:
        """A delivery of the pull consumer (its status replies come to `on_reply`)."""
        consumer, seq, _, pending = fields
        if consumer != self._consumer or self._key is None:
            return
        self._add(seq, msg.subject, msg.data)
        if pending == 0 or len(self._current) >= BATCH_EVENTS:
            self.exhausted = pending == 0
            self._end_request()
            if self.exhausted:
                self._drop_consumer()
            self._wake()

    async def on_reply(self, key: str, msg: Msg) -> None:
        headers = msg.headers
        status = headers.get("Status") if headers else None
        if status is None:
            if headers is not None and self._consumer is None:
                self._add(int(headers["Nats-Sequence"]), headers["Nats-Subject"], msg.data)
            return
        if status == "100":  # a pull request's heartbeat: not an answer
            return
        got_some = bool(self._current.seqs)
        self._end_request()
        if status == "204":  # end of a direct-get batch
            pending = int(headers.get("Nats-Num-Pending", "0")) if headers else 0
            self.exhausted = pending == 0
            if pending > BULK_AFTER and self.requests == 1:
                self._want_pull = True
        elif status == "404":  # direct get: nothing after; fetch: no messages now
            self.exhausted = True
        elif status == "408" and self._consumer is not None:  # fetch ended before the batch filled
            self.exhausted = not got_some
        elif status == "409" and self._consumer is not None:  # fetch reached max_bytes
            pass
        elif status in ("408", "503"):
            # No responders (JetStream restarting, a leader election) or a timeout: ask again shortly.
            self._not_before = asyncio.get_running_loop().time() + _RETRY_DELAY_S
        else:
            description = headers.get("Description", "") if headers else ""
            self.error = Unavailable("nats_error", f"reading the log answered {status} {description}")
        if self.exhausted:
            self._drop_consumer()
        self._wake()

    # ------------------------------------------------------------------ internals

    def _add(self, seq: int, subject: str, payload: bytes) -> None:
        if seq < self._next:
            return  # a duplicate from a request asked again
        current = self._current
        current.seqs.append(seq)
        current.types.append(type_bytes(subjects.event_type_of(subject)))
        current.payloads.append(payload)
        self._next = seq + 1
        self.last_seq = seq
        self.events_read += 1

    async def _start_pull(self) -> None:
        name = self.link.new_key("p")
        try:
            await self.link.create_consumer(name, self.task_id, self._next, "catch-up")
        except Unavailable:
            return  # stay with direct gets
        self._consumer = name
        self.pulled = True
        self.link.route_consumer(name, self)

    def _drop_consumer(self) -> None:
        self._want_pull = False
        if self._consumer is not None:
            self.link.unroute(self._consumer)
            self.link.delete_later(self._consumer)
            self._consumer = None

    def _end_request(self) -> None:
        """Closes the request in flight, keeping what it delivered."""
        self._cancel_request()
        if self._current.seqs:
            self._ready.append(self._current)
            self._current = Batch()

    def _cancel_request(self) -> None:
        if self._key is not None:
            self.link.unroute(self._key)
            self._key = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self, key: str) -> None:
        if self._key == key:
            self._timer = None
            self._end_request()
            self._drop_consumer()  # what a lost fetch carried is gone from the consumer: re-read by direct get
            self._wake()

    def _backoff_over(self) -> None:
        self._timer = None
        self._wake()
