"""Waking a feed's waiting clients: at once after a quiet spell, in batches while the feed is busy.

Clients waiting on a feed are woken at most every WAKE_PER_CLIENT_S × clients (up to WAKE_MAX_S): the first event
after a quiet spell goes out at once, a busy feed's events go out in batches — one send per client per interval
instead of one per event, so a feed costs at most ~1/WAKE_PER_CLIENT_S sends a second however many read it.
"""

from __future__ import annotations

import asyncio

from stream_edge.streaming.ring import Subscriber

__all__ = ["Waker"]

WAKE_PER_CLIENT_S = 0.001
WAKE_MAX_S = 0.020


class Waker:
    __slots__ = ("_handle", "_last", "_waiting")

    def __init__(self) -> None:
        self._waiting: list[Subscriber] = []
        self._handle: asyncio.TimerHandle | None = None
        self._last = 0.0

    def wait(self, sub: Subscriber) -> None:
        if not sub.waiting:
            sub.waiting = True
            self._waiting.append(sub)

    def forget(self, sub: Subscriber) -> None:
        if sub.waiting:
            sub.waiting = False
            if sub in self._waiting:
                self._waiting.remove(sub)

    def notify(self, clients: int, *, at_once: bool = False) -> None:
        """Something arrived: wake the waiting clients now, or at the end of the current interval."""
        if not self._waiting or self._handle is not None:
            return
        loop = asyncio.get_running_loop()
        due = self._last + min(WAKE_MAX_S, WAKE_PER_CLIENT_S * clients)
        if at_once or loop.time() >= due:
            self._wake_all()
        else:
            self._handle = loop.call_at(due, self._wake_all)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _wake_all(self) -> None:
        self._handle = None
        self._last = asyncio.get_running_loop().time()
        waiting, self._waiting = self._waiting, []
        for sub in waiting:
            sub.waiting = False
            sub.wake()
