"""Direct NATS subscriptions to the event log, for services inside the cluster (no edge in between).

- `task_events(bus, task_id, after=0)`: one task's events after `after`, each once, in order, until its terminal
  event. It catches up with batched direct gets (`sluice.eventlog.read_log`, no consumer), then follows live with
  an ordered consumer that starts right after the last event it read — so nothing published in between is lost
  — and drops anything at or below the last sequence it yielded.
- `events_of_types(bus, types, deliver="new")`: every task's events of the given types (say, every
  `task.completed`), through one ordered consumer filtered on `sluice.evt.*.<type>` for each type, in stream order,
  forever (stop by leaving the loop).

Both yield the same typed events as the edge serves, `id` set to the stream sequence. Ordered consumers are
ephemeral, in memory, without acks: the server removes them when the subscription goes; nats.py recreates one
from the last sequence if it notices a gap or missing heartbeats.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Literal

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from sluice import subjects
from sluice.bus import Bus
from sluice.eventlog import read_log
from sluice.events import TERMINAL_TYPES, Event, decode_event, event_type
from sluice.ids import parse_task_id

__all__ = ["events_of_types", "task_events"]


async def task_events(bus: Bus, task_id: str, after: int = 0, *, follow: bool = True) -> AsyncIterator[Event]:
    """One task's events with sequence > `after`; stops after the terminal event (or, with `follow=False`,
    once what exists now has been read)."""
    task_id = parse_task_id(task_id)
    last = after
    async for entry in read_log(bus, task_id, after=after):
        last = entry.seq
        yield entry.decode()
        if entry.type in TERMINAL_TYPES:
            return
    if not follow:
        return
    sub = await bus.js.subscribe(
        subjects.events_of_task(task_id),
        stream=subjects.EVENTS_STREAM,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        config=ConsumerConfig(opt_start_seq=last + 1),
    )
    try:
        async for msg in sub.messages:
            seq = msg.metadata.sequence.stream
            if seq <= last:
                continue
            last = seq
            event = _decode(msg, seq)
            yield event
            if event_type(type(event)) in TERMINAL_TYPES:
                return
    finally:
        await sub.unsubscribe()


async def events_of_types(
    bus: Bus, types: Iterable[str], deliver: Literal["new", "all"] = "new", *, after: int | None = None
) -> AsyncIterator[Event]:
    """Every task's events of `types`, in stream order. `deliver="new"` starts with events published from now
    on, `"all"` with the oldest the stream holds; `after=` (a stream sequence) resumes where a previous run
    stopped and overrides `deliver`."""
    filters = [subjects.events_of_type(t) for t in dict.fromkeys(types)]
    if not filters:
        raise ValueError("events_of_types needs at least one event type")
    config = ConsumerConfig(filter_subjects=filters if len(filters) > 1 else None)
    if after is not None:
        policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = after + 1
    else:
        policy = DeliverPolicy.NEW if deliver == "new" else DeliverPolicy.ALL
    sub = await bus.js.subscribe(
        filters[0],
        stream=subjects.EVENTS_STREAM,
        ordered_consumer=True,
        deliver_policy=policy,
        config=config,
    )
    last = after or 0
    try:
        async for msg in sub.messages:
            seq = msg.metadata.sequence.stream
            if seq <= last:
                continue
            last = seq
            yield _decode(msg, seq)
    finally:
        await sub.unsubscribe()


def _decode(msg: Msg, seq: int) -> Event:
    event = decode_event(msg.data)
    event.id = str(seq)
    return event
