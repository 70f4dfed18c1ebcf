"""The stream hub's one doorway to NATS, and the one place its NATS errors become `Unavailable`.

<inbox A>.r<n>   replies to catch-up request <n> (direct get; or a pull consumer's fetch, whose messages keep
                 their own subject and are routed by the consumer name in their ack subject): one wildcard
                 subscription for all of them (a catch-up costs no subscription of its own)
<inbox B>.f<n>   the deliver subject of feed <n>: one subscription per feed, kept across re-created
                 consumers. (JetStream push consumers only see interest from a subscription on the literal
                 deliver subject, so feeds cannot share a wildcard; and B is not under A's wildcard, or every
                 delivery would arrive twice.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from sluice import subjects
from sluice.bus import Bus
from sluice.errors import Unavailable

__all__ = ["FEED_HEARTBEAT_S", "Link", "ReplyHandler", "ack_fields"]

log = logging.getLogger(__name__)

_DIRECT_GET = "$JS.API.DIRECT.GET." + subjects.EVENTS_STREAM
# Idle heartbeat of a feed consumer: silence for 3 of these means the consumer is gone, and the feed re-creates it.
FEED_HEARTBEAT_S = 5.0
# The server deletes a feed consumer nobody listens to after this long (an edge that died without cleaning up).
_INACTIVE_THRESHOLD_S = 30.0
_API_TIMEOUT_S = 3.0
_NATS_ERRORS = (nats.errors.Error, asyncio.TimeoutError, TimeoutError, OSError)


class ReplyHandler(Protocol):
    def on_reply(self, msg: Msg) -> Awaitable[None]: ...

    def on_pulled(self, seq: int, pending: int, consumer: str, msg: Msg) -> None: ...


def ack_fields(reply: str) -> tuple[str, int, int, int] | None:
    """(consumer name, stream seq, consumer seq, pending) from a delivery's ack subject:
    $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending> (v1), or the v2 form with
    <domain>.<account hash> after ACK."""
    tokens = reply.split(".")
    base = 2 if len(tokens) == 9 else 4
    if len(tokens) < base + 7 or tokens[0] != "$JS" or tokens[1] != "ACK":
        return None
    return tokens[base + 1], int(tokens[base + 3]), int(tokens[base + 4]), int(tokens[base + 6])


class Link:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._readers: dict[str, ReplyHandler] = {}
        self._pullers: dict[str, ReplyHandler] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: Subscription | None = None
        self._prefix = ""
        self._deliver_prefix = ""
        self._token = ""
        self._n = 0
        self._api = asyncio.Semaphore(32)  # consumer creations/deletions in flight (a reconnect resets every feed)

    async def start(self) -> None:
        inbox = self.bus.nc.new_inbox()
        self._prefix = inbox + "."
        self._deliver_prefix = self.bus.nc.new_inbox() + "."
        self._token = inbox.rsplit(".", 1)[-1][:12]
        self._sub = await self.bus.nc.subscribe(
            inbox + ".>", cb=self._on_msg, pending_msgs_limit=1_000_000, pending_bytes_limit=512 * 1024 * 1024
        )

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
            for task in self._tasks:
                task.cancel()
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except _NATS_ERRORS as exc:
                log.debug("unsubscribe failed: %s", exc)

    # ------------------------------------------------------------------ routing

    def new_key(self, kind: str) -> str:
        """A fresh name: `r…` for a catch-up request, `f…` for a feed's deliver subject, `c…` for a consumer."""
        self._n += 1
        return f"{kind}{self._token}{self._n}"

    def route_reader(self, key: str, handler: ReplyHandler) -> None:
        self._readers[key] = handler

    def route_puller(self, consumer: str, handler: ReplyHandler) -> None:
        self._pullers[consumer] = handler

    def unroute(self, key: str) -> None:
        self._readers.pop(key, None)
        self._pullers.pop(key, None)

    async def _on_msg(self, msg: Msg) -> None:
        subject = msg.subject
        if subject.startswith(self._prefix):
            reader = self._readers.get(subject[len(self._prefix) :])
            if reader is not None:
                await reader.on_reply(msg)
            return
        # A pull consumer's delivery keeps its own subject: routed by the consumer name in its ack subject.
        fields = ack_fields(msg.reply) if msg.reply else None
        if fields is not None:
            puller = self._pullers.get(fields[0])
            if puller is not None:
                puller.on_pulled(fields[1], fields[3], fields[0], msg)

    def deliver_subject(self, key: str) -> str:
        return self._deliver_prefix + key

    async def subscribe(self, subject: str, handler: Callable[[Msg], Awaitable[None]]) -> Subscription:
        try:
            return await self.bus.nc.subscribe(
                subject, cb=handler, pending_msgs_limit=100_000, pending_bytes_limit=64 * 1024 * 1024
            )
        except _NATS_ERRORS as exc:
            raise Unavailable("nats_unavailable", f"subscribing to a feed: {exc!r}") from exc

    async def unsubscribe(self, sub: Subscription) -> None:
        try:
            await sub.unsubscribe()
        except _NATS_ERRORS as exc:
            log.debug("unsubscribe failed: %r", exc)

    # ------------------------------------------------------------------ requests

    async def request_batch(self, key: str, task_filter: str, start: int, batch: int, max_bytes: int) -> None:
        """Asks for up to `batch` of the task's events from `start` on; the replies arrive at the reader `key`."""
        request = b'{"seq":%d,"next_by_subj":"%s","batch":%d,"max_bytes":%d}' % (
            start,
            task_filter.encode(),
            batch,
            max_bytes,
        )
        try:
            await self.bus.nc.publish(_DIRECT_GET, request, reply=self._prefix + key)
        except _NATS_ERRORS as exc:
            # The reader's timeout asks again; nothing else to do here.
            log.debug("direct get request not sent: %s", exc)

    async def request_fetch(self, key: str, consumer: str, batch: int, max_bytes: int) -> None:
        """Asks a pull consumer for up to `batch` messages now (no waiting); they arrive at the reader `key`."""
        request = b'{"batch":%d,"max_bytes":%d,"no_wait":true}' % (batch, max_bytes)
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{subjects.EVENTS_STREAM}.{consumer}"
        try:
            await self.bus.nc.publish(subject, request, reply=self._prefix + key)
        except _NATS_ERRORS as exc:
            log.debug("fetch request not sent: %s", exc)

    async def create_pull_consumer(self, name: str, task_id: str, start_seq: int) -> None:
        """A short-lived pull consumer for a long catch-up: its deliveries carry only the stored headers, which
        the client parses far faster than a direct get's. No acks; deleted when the catch-up ends."""
        config = ConsumerConfig(
            name=name,
            description=f"sluice stream-edge catch-up of task {task_id}",
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(1, start_seq),
            filter_subject=subjects.events_of_task(task_id),
            ack_policy=AckPolicy.NONE,
            inactive_threshold=_INACTIVE_THRESHOLD_S,
            mem_storage=True,
            num_replicas=1,
        )
        try:
            async with self._api:
                await self.bus.js.add_consumer(subjects.EVENTS_STREAM, config, timeout=_API_TIMEOUT_S)
        except nats.js.errors.APIError as exc:
            raise Unavailable("nats_error", f"creating a catch-up consumer: {exc.description}") from exc
        except _NATS_ERRORS as exc:
            raise Unavailable("nats_unavailable", f"creating a catch-up consumer: {exc!r}") from exc

    def delete_later(self, name: str) -> None:
        """Deletes a consumer in the background (owned here, awaited at stop)."""
        task = asyncio.get_running_loop().create_task(self.delete_consumer(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reply_empty(self, subject: str) -> None:
        try:
            await self.bus.nc.publish(subject, b"")
        except _NATS_ERRORS as exc:
            log.debug("flow control reply not sent: %s", exc)

    async def create_consumer(self, name: str, deliver_subject: str, task_id: str, start_seq: int) -> None:
        """A push consumer of the task's events from `start_seq`, no acks, in memory, flow-controlled."""
        config = ConsumerConfig(
            name=name,
            description=f"sluice stream-edge feed of task {task_id}",
            deliver_subject=deliver_subject,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(1, start_seq),
            filter_subject=subjects.events_of_task(task_id),
            ack_policy=AckPolicy.NONE,
            max_deliver=1,
            flow_control=True,
            idle_heartbeat=FEED_HEARTBEAT_S,
            inactive_threshold=_INACTIVE_THRESHOLD_S,
            mem_storage=True,
            num_replicas=1,
        )
        try:
            async with self._api:
                await self.bus.js.add_consumer(subjects.EVENTS_STREAM, config, timeout=_API_TIMEOUT_S)
        except nats.js.errors.APIError as exc:
            raise Unavailable("nats_error", f"creating the feed of task {task_id}: {exc.description}") from exc
        except _NATS_ERRORS as exc:
            raise Unavailable("nats_unavailable", f"creating the feed of task {task_id}: {exc!r}") from exc

    async def delete_consumer(self, name: str) -> None:
        try:
            async with self._api:
                await self.bus.js.delete_consumer(subjects.EVENTS_STREAM, name)
        except nats.js.errors.NotFoundError:
            pass
        except (nats.js.errors.APIError, *_NATS_ERRORS) as exc:
            # It expires by itself after the inactive threshold.
            log.debug("feed consumer %s not deleted: %r", name, exc)

    async def next_seq_consistent(self, task_id: str, after: int) -> int | None:
        """The seq of the task's first event after `after`, asked of the stream leader (direct gets may be answered
        by a replica that lags); None if there is none."""
        try:
            msg = await self.bus.js.get_msg(
                subjects.EVENTS_STREAM, seq=after + 1, subject=subjects.events_of_task(task_id), next=True
            )
        except nats.js.errors.NotFoundError:
            return None
        except nats.js.errors.APIError as exc:
            raise Unavailable("nats_error", f"reading the log of task {task_id}: {exc.description}") from exc
        except _NATS_ERRORS as exc:
            raise Unavailable("nats_unavailable", f"reading the log of task {task_id}: {exc!r}") from exc
        return int(msg.seq) if msg.seq is not None else None
