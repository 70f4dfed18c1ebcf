"""Point reads of the event log that the edge's commands need: one direct get each, no consumer.

NATS exceptions are translated to `Unavailable` here; "no such message" is `None`.
"""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors

from sluice import subjects
from sluice.bus import Bus
from sluice.errors import Unavailable
from sluice.eventlog import LogEntry

__all__ = ["event_at", "last_of_type", "log_end"]

_TIMEOUT_S = 3.0


def _entry(msg: object) -> LogEntry:
    subject = str(getattr(msg, "subject", ""))
    seq = getattr(msg, "seq", None)
    data = getattr(msg, "data", None)
    headers = getattr(msg, "headers", None) or {}
    return LogEntry(seq=int(seq or 0), type=subjects.event_type_of(subject), payload=data or b"", headers=dict(headers))


async def last_of_type(bus: Bus, task_id: str, event_type: str) -> LogEntry | None:
    """The task's latest event of one type (e.g. its `task.input_required`), or None."""
    subject = subjects.event(task_id, event_type)
    try:
        msg = await asyncio.wait_for(
            bus.js.get_last_msg(subjects.EVENTS_STREAM, subject, direct=True), timeout=_TIMEOUT_S
        )
    except nats.js.errors.NotFoundError:
        return None
    except (nats.errors.Error, TimeoutError) as exc:
        raise Unavailable("nats_unavailable", f"reading the log of task {task_id}: {type(exc).__name__}") from exc
    return _entry(msg)


async def event_at(bus: Bus, seq: int) -> LogEntry | None:
    """The event stored at one sequence, or None if there is none (deleted, expired, never written)."""
    try:
        msg = await asyncio.wait_for(bus.js.get_msg(subjects.EVENTS_STREAM, seq=seq, direct=True), timeout=_TIMEOUT_S)
    except nats.js.errors.NotFoundError:
        return None
    except (nats.errors.Error, TimeoutError) as exc:
        raise Unavailable("nats_unavailable", f"reading event {seq}: {type(exc).__name__}") from exc
    return _entry(msg)


async def log_end(bus: Bus) -> int:
    """The last sequence SLUICE_EVENTS has assigned: no event id above it exists yet."""
    try:
        info = await asyncio.wait_for(bus.js.stream_info(subjects.EVENTS_STREAM), timeout=_TIMEOUT_S)
    except (nats.errors.Error, TimeoutError) as exc:
        raise Unavailable("nats_unavailable", f"reading the event log's state: {type(exc).__name__}") from exc
    return int(info.state.last_seq or 0)
