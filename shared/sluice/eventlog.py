"""The per-task event log in SLUICE_EVENTS: writing events, and reading a task's history.

Writing: every producer builds events with `EventWriter`, which stamps `ts`, `source` and `trace_id`, sets a
`Nats-Msg-Id` chosen by the caller so that a retried publish is dropped, and returns the event id (the stream
sequence).

Reading: `read_log` uses JetStream's batched direct get (`next_by_subj` on the task's subject filter), which
costs the server no consumer and jumps straight to the task's messages however many other tasks share the
stream. With replicas, any replica answers a direct get, and a follower may not have applied the last write yet
(it learns of the commit with the leader's next message): where the replicas' answer ends, the stream leader is
asked whether anything follows, so an event whose publish was acknowledged before the read is always read.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.api import ConsumerConfig, DeliverPolicy

from sluice import subjects
from sluice.bus import Bus
from sluice.clock import now_iso
from sluice.errors import Unavailable
from sluice.events import TERMINAL_TYPES, Event, decode_event, encode, event_type
from sluice.propagation import current_trace_id

__all__ = ["EventWriter", "LogEntry", "follow_log", "oldest_event", "read_events", "read_log"]

log = logging.getLogger(__name__)

_DIRECT_GET = "$JS.API.DIRECT.GET." + subjects.EVENTS_STREAM
# How long the stream leader gets to confirm the end of a read; without a leader (an election) the replicas' view
# stands.
_CONFIRM_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One stored event as it sits in the stream: raw bytes, not yet decoded."""

    seq: int
    type: str
    payload: bytes
    headers: dict[str, str]

    def decode(self) -> Event:
        event = decode_event(self.payload)
        event.id = str(self.seq)
        return event


class EventWriter:
    """Publishes a producer's events. `trace_id` is the current span's unless the caller passes the task's."""

    def __init__(self, bus: Bus, source: str) -> None:
        self.bus = bus
        self.source = source

    def build(self, cls: type[Event], task_id: str, data: Any, *, trace_id: str | None = None) -> Event:
        return cls(  # type: ignore[call-arg]
            task_id=task_id,
            ts=now_iso(),
            source=self.source,
            trace_id=trace_id if trace_id is not None else current_trace_id(),
            data=data,
        )

    async def publish(self, event: Event, *, msg_id: str, headers: dict[str, str] | None = None) -> int:
        subject = subjects.event(event.task_id, event_type(type(event)))
        return await self.bus.publish(subject, encode(event), msg_id=msg_id, headers=headers)

    async def emit(self, cls: type[Event], task_id: str, data: Any, *, msg_id: str, trace_id: str | None = None) -> int:
        return await self.publish(self.build(cls, task_id, data, trace_id=trace_id), msg_id=msg_id)


async def read_log(
    bus: Bus,
    task_id: str,
    *,
    after: int = 0,
    batch: int = 1000,
    timeout_s: float = 5.0,
    confirm_end: bool = True,
    filter_subject: str | None = None,
) -> AsyncIterator[LogEntry]:
    """Yields the task's events with sequence > `after` that exist now, in order, then stops.

    `filter_subject`: a narrower subject of the task's (e.g. `subjects.lifecycle_of_task`); default all its events.

    `confirm_end`: when the direct gets (answered by any replica) find nothing more, ask the stream leader, and go
    on from what it has. Without it, an event acknowledged just before the call may be missed on a replica that lags.
    """
    filter_subject = filter_subject or subjects.events_of_task(task_id)
    inbox = bus.nc.new_inbox()
    sub = await bus.nc.subscribe(inbox)
    start = after + 1
    try:
        while True:
            request = json.dumps({"seq": start, "next_by_subj": filter_subject, "batch": batch}).encode()
            await bus.nc.publish(_DIRECT_GET, request, reply=inbox)
            got = more = False
            while True:
                try:
                    msg = await sub.next_msg(timeout=timeout_s)
                except nats.errors.TimeoutError:
                    raise Unavailable("nats_timeout", f"reading the log of task {task_id} timed out") from None
                headers = msg.headers or {}
                status = headers.get("Status")
                if status == "404":
                    break
                if status == "204":  # end of this batch
                    more = got and headers.get("Nats-Num-Pending", "0") != "0"
                    break
                if status is not None:
                    raise Unavailable("nats_error", f"direct get answered {status} {headers.get('Description')}")
                seq = int(headers["Nats-Sequence"])
                start, got = seq + 1, True
                yield LogEntry(
                    seq=seq,
                    type=subjects.event_type_of(headers["Nats-Subject"]),
                    payload=msg.data,
                    headers=headers,
                )
            if more:
                continue
            if not confirm_end:
                return
            entry = await _next_from_leader(bus, filter_subject, start)
            if entry is None:
                return
            start = entry.seq + 1
            yield entry
    finally:
        await sub.unsubscribe()


async def _next_from_leader(bus: Bus, filter_subject: str, start: int) -> LogEntry | None:
    """The first event at or after `start` on `filter_subject`, as the stream leader has it (not a direct get: only
    the leader answers); None if there is none, or if no leader answers in time."""
    leader_get = bus.nc.jetstream(timeout=_CONFIRM_TIMEOUT_S).get_msg  # not direct: only the leader answers
    try:
        msg = await leader_get(subjects.EVENTS_STREAM, seq=start, subject=filter_subject, next=True)
    except nats.js.errors.NotFoundError:
        return None
    except (nats.errors.Error, TimeoutError) as exc:
        log.debug("the end of a log read was not confirmed by the stream leader: %r", exc)
        return None
    seq = int(msg.seq or 0)
    subject = msg.subject or ""
    headers = {**(msg.headers or {}), "Nats-Sequence": str(seq), "Nats-Subject": subject}
    return LogEntry(seq=seq, type=subjects.event_type_of(subject), payload=msg.data or b"", headers=headers)


async def read_events(bus: Bus, task_id: str, *, after: int = 0) -> list[Event]:
    """The task's history decoded, each event with its `id` set."""
    return [entry.decode() async for entry in read_log(bus, task_id, after=after)]


async def oldest_event(bus: Bus, task_id: str) -> LogEntry | None:
    """The oldest event the stream still holds for the task, or None if it holds none."""
    async for entry in read_log(bus, task_id, batch=1):
        return entry
    return None


async def follow_log(
    bus: Bus,
    task_id: str,
    *,
    after: int = 0,
    until: frozenset[str] = TERMINAL_TYPES,
    idle_timeout_s: float | None = None,
) -> AsyncIterator[LogEntry]:
    """Yields the task's events with sequence > `after`, in order, each once: first what is stored (`read_log`),
    then the live ones through an ordered push consumer that starts right after the last one read (deduplicated
    by sequence). Ends after an event whose type is in `until` (the terminal one by default), or when
    `idle_timeout_s` (None: never) passes without an event; a caller that wants less closes the iterator.

    For one-off readers (the A2A endpoint, tools): one consumer per call. The edge's stream hub has its own
    shared, byte-level feed.
    """
    last = after
    async for entry in read_log(bus, task_id, after=after):
        last = entry.seq
        yield entry
        if entry.type in until:
            return
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=last + 1)
    try:
        sub = await bus.js.subscribe(
            subjects.events_of_task(task_id), stream=subjects.EVENTS_STREAM, ordered_consumer=True, config=config
        )
    except (nats.errors.Error, TimeoutError) as exc:
        raise Unavailable("nats_unavailable", f"following task {task_id}: {type(exc).__name__}") from exc
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=idle_timeout_s)
            except (nats.errors.TimeoutError, TimeoutError):
                return
            seq = msg.metadata.sequence.stream
            if seq <= last:
                continue
            last = seq
            subject_type = subjects.event_type_of(msg.subject)
            yield LogEntry(seq=seq, type=subject_type, payload=msg.data, headers=msg.headers or {})
            if subject_type in until:
                return
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
