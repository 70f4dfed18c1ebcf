"""The record a client's answer is checked against, once it has caught up with the question in the log.

The agent-runner publishes `task.input_required` a moment before it records the task as `input-required`, and a
client answers the question it has just been streamed. An answer that arrives in between waits (briefly, on the
record's KV watch) for the record to catch up instead of being refused — on every route that takes answers
(`POST /v1/tasks/{id}/input`, A2A messages with a `taskId`).
"""

from __future__ import annotations

import asyncio

import nats.errors

from sluice.bus import Bus
from sluice.errors import Unavailable
from sluice.eventlog import LogEntry
from sluice.events import TaskRecord, decode_record
from sluice.records import TaskStore
from stream_edge import logview

__all__ = ["ASK_SETTLE_S", "settled"]

# How long an answer waits for the record of a task that has just asked to say `input-required`.
ASK_SETTLE_S = 10.0


async def settled(bus: Bus, store: TaskStore, record: TaskRecord) -> tuple[TaskRecord, LogEntry | None]:
    """The record (caught up with an unanswered question the log already holds, or as it is) and that question."""
    ask = await logview.last_of_type(bus, record.id, "task.input_required")
    if record.state not in ("submitted", "working") or ask is None:
        return record, ask
    answered = await logview.last_of_type(bus, record.id, "task.resumed")
    if answered is not None and answered.seq > ask.seq:
        return record, ask  # that question was answered: the task is simply working
    try:
        async with asyncio.timeout(ASK_SETTLE_S):
            watcher = await store.kv.watch(record.id)
            try:
                async for entry in watcher:
                    if entry is None or entry.value is None:
                        continue
                    record = decode_record(entry.value)
                    if record.state not in ("submitted", "working"):
                        break
            finally:
                await watcher.stop()
    except TimeoutError:
        pass  # the runner has not recorded it: the caller refuses, and the client may retry
    except nats.errors.Error as exc:
        raise Unavailable("nats_unavailable", f"watching task {record.id}: {type(exc).__name__}") from exc
    return record, ask
