"""Catch-up: a task's stored events after a position, read with batched direct gets, one batch ahead.

No consumer on the server: each batch is one `$JS.API.DIRECT.GET` request (`next_by_subj` on the task's subjects)
answered by up to `batch` messages and an end-of-batch status. The pump takes a batch and asks for the next one
before it encodes and sends the current one, so the server's work and the network overlap the pump's. A request
that gets no answer (a reconnect, a lost reply) is asked again after a timeout from the last event received;
late replies to the old request are ignored (each request has its own route key).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from nats.aio.msg import Msg

from sluice import subjects
from sluice.errors import SluiceError, Unavailable
from stream_edge.streaming.frames import type_bytes
from stream_edge.streaming.link import Link

__all__ = ["Batch", "LogReader"]

BATCH_EVENTS = 1000
BATCH_BYTES = 256 * 1024
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
        self.exhausted = False
        self.error: SluiceError | None = None
        self.last_seq = 0
        self.events_read = 0
        self.requests = 0

    def start(self, after: int) -> None:
        """Read from after + 1 on (again)."""
        self._cancel_request()
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

    @property
    def waiting(self) -> bool:
        """A request is out, or one will go out after a back-off."""
        return self._key is not None or self._timer is not None

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
        key = self.link.new_key("r")
        self.link.route_reader(key, self)
        self._key = key
        self.requests += 1
        self._timer = loop.call_later(REQUEST_TIMEOUT_S, self._timed_out, key)
        await self.link.request_batch(key, self._filter, self._next, BATCH_EVENTS, BATCH_BYTES)

    def reconnected(self) -> None:
        """The connection came back: a request in flight may be lost, ask again now."""
        if self._key is not None:
            self._end_request()
            self._wake()

    def close(self) -> None:
        self._cancel_request()
        self._ready.clear()

    async def on_reply(self, msg: Msg) -> None:
        headers = msg.headers
        status = headers.get("Status") if headers else None
        if status is None and headers is not None:
            seq = int(headers["Nats-Sequence"])
            current = self._current
            current.seqs.append(seq)
            current.types.append(type_bytes(subjects.event_type_of(headers["Nats-Subject"])))
            current.payloads.append(msg.data)
            self._next = seq + 1
            self.last_seq = seq
            self.events_read += 1
            return
        self._end_request()
        if status == "204":
            if headers is not None and headers.get("Nats-Num-Pending", "0") == "0":
                self.exhausted = True
        elif status == "404":
            self.exhausted = True
        elif status in ("408", "503"):
            # No responders (JetStream restarting, a leader election) or a timeout: ask again shortly.
            self._not_before = asyncio.get_running_loop().time() + _RETRY_DELAY_S
        else:
            description = headers.get("Description", "") if headers else ""
            self.error = Unavailable("nats_error", f"direct get answered {status} {description}")
        self._wake()

    # ------------------------------------------------------------------ internals

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
            self._wake()

    def _backoff_over(self) -> None:
        self._timer = None
        self._wake()
