"""The stream hub's one doorway to NATS, and the one place its NATS errors become `Unavailable`.

Everything the engine receives arrives on ONE wildcard subscription, `<inbox>.>`, so an open feed or catch-up
costs a dict entry — no nats-py subscription, queue or task of its own:

    <inbox>.r<n>    replies to request <n>: a direct get's messages and end-of-batch; a pull request's status
                    messages (heartbeat, expiry, end)
    sluice.evt.…    a pull consumer's deliveries (they keep their own subject): routed by the consumer name in
                    their ack subject, $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>

Both the live feeds and long catch-ups read through pull consumers (no acks, in memory, one replica): a pull
request parks on the server and deliveries go out the moment an event is stored, to whatever reply subject the
request named — which a push consumer cannot do (it only sees interest from a subscription on its literal deliver
subject, which would need a subscription per feed).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from sluice import subjects
from sluice.bus import Bus
from sluice.errors import Unavailable
from sluice.eventlog import oldest_event

__all__ = ["AckFields", "Link", "ReplyHandler", "ack_fields"]

log = logging.getLogger(__name__)

_DIRECT_GET = "$JS.API.DIRECT.GET." + subjects.EVENTS_STREAM
_FETCH = f"$JS.API.CONSUMER.MSG.NEXT.{subjects.EVENTS_STREAM}."
# The server deletes a consumer nobody has asked for messages this long (an edge that died without cleaning up).
_INACTIVE_THRESHOLD_S = 60.0
_API_TIMEOUT_S = 3.0
_NATS_ERRORS = (nats.errors.Error, asyncio.TimeoutError, TimeoutError, OSError)
CONSUMER_LIMIT = 10026  # JetStream: "maximum consumers limit reached" (nats-server 2.15 defaults to 1000/stream)

AckFields = tuple[str, int, int, int]  # consumer name, stream seq, consumer seq, pending


def ack_fields(reply: str) -> AckFields | None:
    """(consumer, stream seq, consumer seq, pending) from a delivery's ack subject: the v1 form above, or v2 with
    <domain>.<account hash> after ACK."""
    tokens = reply.split(".")
    base = 2 if len(tokens) == 9 else 4
    if len(tokens) < base + 7 or tokens[0] != "$JS" or tokens[1] != "ACK":
        return None
    return tokens[base + 1], int(tokens[base + 3]), int(tokens[base + 4]), int(tokens[base + 6])


class ReplyHandler(Protocol):
    async def on_reply(self, key: str, msg: Msg) -> None: ...

    async def on_pulled(self, fields: AckFields, msg: Msg) -> None: ...


class Link:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._replies: dict[str, ReplyHandler] = {}
        self._consumers: dict[str, ReplyHandler] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: Subscription | None = None
        self._prefix = ""
        self._token = ""
        self._n = 0
        self._api = asyncio.Semaphore(32)  # consumer creations/deletions in flight (a reconnect resets every feed)

    async def start(self) -> None:
        inbox = self.bus.nc.new_inbox()
        self._prefix = inbox + "."
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
        """A fresh name: `r…` for a request's reply subject, `c…`/`p…` for a feed's / a catch-up's consumer."""
        self._n += 1
        return f"{kind}{self._token}{self._n}"

    def route_reply(self, key: str, handler: ReplyHandler) -> None:
        self._replies[key] = handler

    def route_consumer(self, consumer: str, handler: ReplyHandler) -> None:
        self._consumers[consumer] = handler

    def unroute(self, key: str) -> None:
        self._replies.pop(key, None)
        self._consumers.pop(key, None)

    async def _on_msg(self, msg: Msg) -> None:
        subject = msg.subject
        if subject.startswith(self._prefix):
            key = subject[len(self._prefix) :]
            handler = self._replies.get(key)
            if handler is not None:
                await handler.on_reply(key, msg)
            return
        fields = ack_fields(msg.reply) if msg.reply else None
        if fields is not None:
            consumer = self._consumers.get(fields[0])
            if consumer is not None:
                await consumer.on_pulled(fields, msg)

    # ------------------------------------------------------------------ requests

    async def request_batch(self, key: str, task_filter: str, start: int, batch: int, max_bytes: int) -> None:
        """Direct get of up to `batch` of the task's events from `start` on; the replies arrive at `key`."""
        request = b'{"seq":%d,"next_by_subj":"%s","batch":%d,"max_bytes":%d}' % (
            start,
            task_filter.encode(),
            batch,
            max_bytes,
        )
        await self._publish(_DIRECT_GET, request, key)

    async def request_fetch(
        self, key: str, consumer: str, batch: int, max_bytes: int, *, expires_s: float = 0, heartbeat_s: float = 0
    ) -> None:
        """Asks a pull consumer for up to `batch` messages: now (`no_wait`), or as they come until `expires_s`."""
        if expires_s:
            request = b'{"batch":%d,"max_bytes":%d,"expires":%d,"idle_heartbeat":%d}' % (
                batch,
                max_bytes,
                int(expires_s * 1e9),
                int(heartbeat_s * 1e9),
            )
        else:
            request = b'{"batch":%d,"max_bytes":%d,"no_wait":true}' % (batch, max_bytes)
        await self._publish(_FETCH + consumer, request, key)

    async def _publish(self, subject: str, payload: bytes, key: str) -> None:
        try:
            await self.bus.nc.publish(subject, payload, reply=self._prefix + key)
        except _NATS_ERRORS as exc:
            # The caller's timeout or heartbeat check asks again; nothing else to do here.
            log.debug("request to %s not sent: %s", subject, exc)

    async def create_consumer(self, name: str, task_id: str, start_seq: int, purpose: str) -> None:
        """A pull consumer of the task's events from `start_seq`: no acks, in memory, one replica."""
        config = ConsumerConfig(
            name=name,
            description=f"sluice stream-edge {purpose} of task {task_id}",
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
            code = "consumer_limit" if exc.err_code == CONSUMER_LIMIT else "nats_error"
            raise Unavailable(code, f"creating the {purpose} of task {task_id}: {exc.description}") from exc
        except _NATS_ERRORS as exc:
            raise Unavailable("nats_unavailable", f"creating the {purpose} of task {task_id}: {exc!r}") from exc

    async def delete_consumer(self, name: str) -> None:
        try:
            async with self._api:
                await self.bus.js.delete_consumer(subjects.EVENTS_STREAM, name)
        except nats.js.errors.NotFoundError:
            pass
        except (nats.js.errors.APIError, *_NATS_ERRORS) as exc:
            # It expires by itself after the inactive threshold.
            log.debug("consumer %s not deleted: %r", name, exc)

    def delete_later(self, name: str) -> None:
        """Deletes a consumer in the background (owned here, awaited at stop)."""
        task = asyncio.get_running_loop().create_task(self.delete_consumer(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def subject_at(self, seq: int) -> str | None:
        """The subject of the message with this seq, asked of the stream leader; None if there is none."""
        try:
            msg = await self.bus.js.get_msg(subjects.EVENTS_STREAM, seq=seq)
        except nats.js.errors.NotFoundError:
            return None
        except nats.js.errors.APIError as exc:
            raise Unavailable("nats_error", f"reading event {seq}: {exc.description}") from exc
        except _NATS_ERRORS as exc:
            raise Unavailable("nats_unavailable", f"reading event {seq}: {exc!r}") from exc
        return msg.subject

    async def oldest_seq(self, task_id: str) -> tuple[int, str] | None:
        """The seq and type of the oldest event the stream still holds for the task; None if it holds none."""
        entry = await oldest_event(self.bus, task_id)
        return None if entry is None else (entry.seq, entry.type)

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
