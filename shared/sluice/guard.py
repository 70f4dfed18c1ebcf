"""The one guard every write to a task's log goes through: nothing after the terminal event, nothing from behind.

A `LogGuard` belongs to one writer of one task and remembers the last event of the task's log it knows of. Each
publish states it to JetStream (expected last subject sequence over a subject filter of the task), so the server
stores the event only if nothing else was written there since — a check and a write in one step, with no window
between them. When something was, the guard reads what (after the last event it knew), and decides:

    an event under our own msg id ──▶ it is ours (a retry whose first answer was lost): done, that is its id
    a terminal event ───────────────▶ TaskEnded: the task is over, nothing more may be written (nor another end)
    `judge(entry)` raises ──────────▶ e.g. Superseded: a later attempt of the task started (a frozen runner woke up)
    anything else ──────────────────▶ another writer's event (a tool result, a takeover's task.started): it is
                                       known now, and the publish is tried again

Filters: the agent-runner guards over the task's whole log (`sluice.evt.<task>.>`), so that a runner that was
superseded cannot write even one token; writers that only need "not after the end" (tool-runners, the edge) guard
over the task's lifecycle events (`sluice.evt.<task>.task.>`), which other writers' tokens and tool events never
move, so they rarely retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sluice import subjects
from sluice.bus import MSG_ID, Bus
from sluice.errors import LogMovedOn, TaskEnded, Unavailable
from sluice.eventlog import EventWriter, LogEntry, read_log
from sluice.events import TERMINAL_TYPES, Event, event_type

__all__ = ["EXPECTED_LAST_SEQ", "EXPECTED_LAST_SEQ_SUBJECT", "LogGuard"]

log = logging.getLogger(__name__)

EXPECTED_LAST_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
# A refusal the log read cannot explain (a replica behind the one that refused): read again, a bounded number of times.
_UNEXPLAINED_RETRIES = 20
_UNEXPLAINED_PAUSE_S = 0.05


class LogGuard:
    """Guarded publishing for one writer of one task. `last_seq` None: look the log up before the first write."""

    def __init__(
        self,
        bus: Bus,
        writer: EventWriter,
        task_id: str,
        *,
        last_seq: int | None = None,
        whole_log: bool = False,
        judge: Callable[[LogEntry], None] | None = None,
    ) -> None:
        self.bus = bus
        self.writer = writer
        self.task_id = task_id
        self.last_seq = last_seq
        self.whole_log = whole_log
        self.filter_subject = subjects.events_of_task(task_id) if whole_log else subjects.lifecycle_of_task(task_id)
        self.judge = judge

    async def check(self) -> int:
        """Brings `last_seq` up to date; raises TaskEnded if the task has ended (or what `judge` raises)."""
        await self._catch_up(None)
        return self.last_seq or 0

    async def publish(self, event: Event, *, msg_id: str) -> int:
        """Stores `event` unless the task ended or `judge` objects; returns its id. Raises TaskEnded (with the
        terminal event's id), what `judge` raises, or Unavailable."""
        if self.last_seq is None and (mine := await self._catch_up(msg_id)) is not None:
            return mine
        unexplained = 0
        while True:
            headers = {EXPECTED_LAST_SEQ: str(self.last_seq or 0), EXPECTED_LAST_SEQ_SUBJECT: self.filter_subject}
            try:
                seq = await self.writer.publish(event, msg_id=msg_id, headers=headers)
            except LogMovedOn:
                before = self.last_seq
                mine = await self._catch_up(msg_id)
                if mine is not None:
                    return mine
                if self.last_seq == before:
                    unexplained += 1
                    if unexplained > _UNEXPLAINED_RETRIES:
                        raise Unavailable("log_unreadable", f"task {self.task_id}: the log moved on unseen") from None
                    await asyncio.sleep(_UNEXPLAINED_PAUSE_S * unexplained)
                continue
            if self.whole_log or event_type(type(event)).startswith("task."):  # our event is under the filter
                self.last_seq = max(self.last_seq or 0, seq)  # a duplicate answers with the original (older) id
            return seq

    async def _catch_up(self, msg_id: str | None) -> int | None:
        """Reads what was written after `last_seq`; returns the id of our own event if it is there."""
        async for entry in read_log(
            self.bus, self.task_id, after=self.last_seq or 0, filter_subject=self.filter_subject
        ):
            if msg_id is not None and entry.headers.get(MSG_ID) == msg_id:
                self.last_seq = entry.seq
                return entry.seq
            if entry.type in TERMINAL_TYPES:
                self.last_seq = entry.seq
                raise TaskEnded("task_terminal", f"task {self.task_id} has ended ({entry.type})", seq=entry.seq)
            if self.judge is not None:
                self.judge(entry)
            self.last_seq = entry.seq
        return None
