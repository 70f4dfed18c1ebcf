"""A feed's JetStream pull consumer: made, kept fed with requests, watched, and re-made when it breaks.

Receiving: pull requests parked on the server (long-poll with idle heartbeats), at least half a batch always
outstanding, answered the moment an event is stored. The consumer starts where its owner says (`next_seq`: the
seq after the last one received), so a consumer re-made after a break — a missed delivery, silent heartbeats, a
reconnect, the consumer deleted — leaves no gap. When the stream allows no more consumers the owner is told to
poll (`start_polling`), and a consumer is tried again every `upgrade_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from nats.aio.msg import Msg

from sluice import subjects
from sluice.errors import Unavailable
from stream_edge.streaming import frames
from stream_edge.streaming.link import AckFields, Link

__all__ = ["ConsumerOwner", "FeedConsumer", "Spawn"]

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, Any]], None]

# Pull requests: size, how long one stays parked, its idle heartbeat; three silent heartbeats = consumer gone.
FEED_BATCH = 1000
FEED_EXPIRES_S = 30.0
FEED_HEARTBEAT_S = 5.0
_STALE_AFTER_S = 3 * FEED_HEARTBEAT_S


class ConsumerOwner(Protocol):
    """What a consumer needs of the feed it fills."""

    @property
    def next_seq(self) -> int: ...

    @property
    def wanted(self) -> bool: ...  # still open and the task not ended

    def deliver(self, seq: int, type_b: bytes, payload: bytes) -> None: ...

    def start_polling(self, reason: str) -> None: ...

    def stop_polling(self) -> None: ...


class _Request:
    """A pull request parked on the server: its reply key and how many deliveries it still has coming."""

    __slots__ = ("due", "key")

    def __init__(self, key: str, due: int) -> None:
        self.key = key
        self.due = due


class FeedConsumer:
    __slots__ = ("_connecting", "_name", "_next_dseq", "_outstanding", "_owner", "_requests", "_reset_again",
                 "_spawn", "connected", "connects", "last_activity", "link", "task_id", "upgrade_s")  # fmt: skip

    def __init__(self, link: Link, task_id: str, owner: ConsumerOwner, spawn: Spawn, upgrade_s: float) -> None:
        self.link = link
        self.task_id = task_id
        self.upgrade_s = upgrade_s
        self.connected = False
        self.connects = 0
        self.last_activity = 0.0
        self._owner = owner
        self._spawn = spawn
        self._name: str | None = None
        self._next_dseq = 1
        self._requests: list[_Request] = []  # oldest first (one or two)
        self._outstanding = 0
        self._connecting = False
        self._reset_again = False

    def reset(self) -> None:
        """Make a new consumer from the owner's next seq (also the first connect)."""
        if not self._owner.wanted:
            return
        self.connected = False
        if self._connecting:
            self._reset_again = True
            return
        self.drop()
        self._connecting = True
        self._spawn(self._connect())

    def check_alive(self, now: float) -> None:
        """Called by the hub's ticker: a consumer silent for three heartbeats is gone."""
        if self.connected and now - self.last_activity > _STALE_AFTER_S:
            log.info("feed of task %s went silent; re-creating its consumer", self.task_id)
            self.reset()

    def drop(self) -> None:
        """Forgets the consumer and its requests; the server copy is deleted in the background."""
        self.connected = False
        for request in self._requests:
            self.link.unroute(request.key)
        self._requests.clear()
        self._outstanding = 0
        if self._name is not None:
            self.link.unroute(self._name)
            self.link.delete_later(self._name)
            self._name = None

    async def _connect(self) -> None:
        delay = 0.1
        owner = self._owner
        try:
            while owner.wanted:
                self._reset_again = False
                name = self.link.new_key("c")
                self._name = name
                self._next_dseq = 1
                self.link.route_consumer(name, self)
                try:
                    await self.link.create_consumer(name, self.task_id, owner.next_seq, "feed")
                except Unavailable as exc:
                    self.drop()
                    if exc.code == "consumer_limit":  # the stream allows no more consumers: poll until one is free
                        owner.start_polling(exc.message)
                        await asyncio.sleep(self.upgrade_s)
                        continue
                    log.warning("feed of task %s: %s; retrying", self.task_id, exc.message)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                if self._name != name or self._reset_again or not owner.wanted:
                    self.drop()  # asked to start over (or to stop) while the consumer was being made
                    continue
                self.connected = True
                owner.stop_polling()
                self.last_activity = time.monotonic()
                self.connects += 1
                await self._pull()
                return
        finally:
            self._connecting = False

    async def _pull(self) -> None:
        """Parks one more request for FEED_BATCH deliveries."""
        name = self._name
        if name is None or not self.connected or not self._owner.wanted:
            return
        key = self.link.new_key("r")
        self.link.route_reply(key, self)
        self._requests.append(_Request(key, FEED_BATCH))
        self._outstanding += FEED_BATCH
        await self.link.request_fetch(key, name, FEED_BATCH, 0, expires_s=FEED_EXPIRES_S, heartbeat_s=FEED_HEARTBEAT_S)

    # ------------------------------------------------------------------ what the link routes here

    async def on_pulled(self, fields: AckFields, msg: Msg) -> None:
        consumer, seq, dseq, _ = fields
        if consumer != self._name:
            return  # a consumer we have replaced
        self.last_activity = time.monotonic()
        requests = self._requests
        if requests:  # the server answers parked requests oldest first
            self._outstanding -= 1
            head = requests[0]
            head.due -= 1
            if head.due <= 0:
                del requests[0]
                self.link.unroute(head.key)
        if dseq != self._next_dseq:
            # A delivery went missing (a slow-consumer drop, a consumer the server re-created): start over from
            # the last one received.
            log.info("feed of task %s missed deliveries; resuming from %d", self.task_id, self._owner.next_seq)
            self.reset()
            return
        self._next_dseq = dseq + 1
        self._owner.deliver(seq, frames.type_bytes(subjects.event_type_of(msg.subject)), msg.data)
        if self._outstanding < FEED_BATCH // 2:
            await self._pull()

    async def on_reply(self, key: str, msg: Msg) -> None:
        """A status on a parked request: heartbeat, expiry, or the request's end."""
        self.last_activity = time.monotonic()
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
        self.reset()
