"""`EventSink` over NATS: one task's events published in order, and its tool calls sent and waited for.

Events go through the attempt's `LogGuard` (fenced: refused once a later attempt started or the task ended)
with the protocol's msg ids, one at a time per task (a lock), each stamped with the task's trace id.

A tool call is a `ToolCallMessage` on `sluice.tool.<name>.<task>` (msg id `{task}:call:{call_id}`); its answer is
the `tool.completed` event in the task's log. The log is read from the step's `llm.completed` on first, so a call
that was already answered is not sent again; then the answers are awaited through an ordered JetStream consumer
on the task's `tool.completed` subject starting right after that `llm.completed`. JetStream delivers to it only
what it has stored, every stored message once, in order — whether published before, during or after the
dispatch — so no answer can be missed. (A core-NATS wake-up followed by a log read could: the wake-up is
delivered as the publish arrives, before JetStream has stored it, and a read that comes in between finds
nothing; with both cores busy that window is wide enough to leave a task waiting for its tool's deadline.)
If no answer comes by the tool's deadline plus the ack wait (a tool-runner that died is redelivered after it)
plus a margin, the sink publishes `tool.completed` ok=false itself under the tool-runner's msg id
(`{task}:tool:{call_id}:done`), so whichever lands first is the only one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, TypeVar, cast

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from agent_runner.metrics import TOOL_CALLS
from agent_runner.ports import ToolDispatch
from sluice import msgids, subjects
from sluice.bus import Bus
from sluice.errors import Unavailable
from sluice.eventlog import LogEntry, read_log
from sluice.events import Event, ToolCompleted, ToolCompletedData, encode
from sluice.guard import LogGuard
from sluice.messages import ToolCallMessage

__all__ = ["NatsSink"]

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)


class NatsSink:
    def __init__(
        self, bus: Bus, guard: LogGuard, task_id: str, trace_id: str, *, tool_wait_extra_s: float = 40.0
    ) -> None:
        self.bus = bus
        self.guard = guard
        self.task_id = task_id
        self.trace_id = trace_id
        self.tool_wait_extra_s = tool_wait_extra_s
        self._lock = asyncio.Lock()

    async def emit(self, cls: type[E], data: Any, *, msg_id: str) -> E:
        event = await self._emit(cls, data, msg_id=msg_id)
        if isinstance(event, ToolCompleted):
            TOOL_CALLS.labels(event.data.name, str(event.data.ok).lower()).inc()
        return event

    async def _emit(self, cls: type[E], data: Any, *, msg_id: str) -> E:
        event = self.guard.writer.build(cls, self.task_id, data, trace_id=self.trace_id)
        async with self._lock:
            seq = await self.guard.publish(event, msg_id=msg_id)
        if cls is ToolCompleted:
            # A tool result may already be stored under this msg id (the tool-runner's): the stored one counts.
            stored = await self._event_at(seq)
            if stored is not None:
                return cast(E, stored)
        event.id = str(seq)
        return cast(E, event)

    async def _event_at(self, seq: int) -> Event | None:
        async for entry in read_log(self.bus, self.task_id, after=seq - 1, batch=1):
            return entry.decode() if entry.seq == seq else None
        return None

    async def run_tools(self, calls: Sequence[ToolDispatch], *, after_seq: int) -> list[ToolCompleted]:
        wanted = {d.call.call_id: d for d in calls}
        found: dict[str, ToolCompleted] = {}

        def keep(entry: LogEntry) -> None:
            if entry.type == "tool.completed":
                event = entry.decode()
                assert isinstance(event, ToolCompleted)
                if event.data.call_id in wanted:
                    found.setdefault(event.data.call_id, event)

        async for entry in read_log(self.bus, self.task_id, after=after_seq):
            keep(entry)
        answers = await self._answers(after_seq)
        try:
            loop = asyncio.get_running_loop()
            deadlines: dict[str, float] = {}
            for call_id, dispatch in wanted.items():
                deadlines[call_id] = loop.time() + dispatch.deadline_s + self.tool_wait_extra_s
                if call_id not in found:
                    await self._send(dispatch)
            while missing := [c for c in wanted if c not in found]:
                timeout = min(deadlines[c] for c in missing) - loop.time()
                if timeout <= 0:
                    for call_id in [c for c in missing if deadlines[c] <= loop.time()]:
                        found[call_id] = await self._give_up(wanted[call_id])
                    continue
                try:
                    msg = await answers.next_msg(timeout=timeout)
                except nats.errors.TimeoutError:
                    continue
                seq = msg.metadata.sequence.stream
                keep(LogEntry(seq=seq, type="tool.completed", payload=msg.data, headers=msg.headers or {}))
        finally:
            with contextlib.suppress(nats.errors.Error):
                await answers.unsubscribe()
        results = [found[call_id] for call_id in wanted]
        for result in results:
            TOOL_CALLS.labels(result.data.name, str(result.data.ok).lower()).inc()
        return results

    async def _answers(self, after_seq: int) -> JetStreamContext.PushSubscription:
        """Every `tool.completed` of the task stored after `after_seq`, as JetStream stores them."""
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1)
        subject = subjects.event(self.task_id, "tool.completed")
        try:
            return await self.bus.js.subscribe(
                subject, stream=subjects.EVENTS_STREAM, ordered_consumer=True, config=config
            )
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable("nats_unavailable", f"waiting for tool results: {type(exc).__name__}") from exc

    async def _send(self, dispatch: ToolDispatch) -> None:
        call = dispatch.call
        message = ToolCallMessage(
            task_id=self.task_id,
            call_id=call.call_id,
            name=call.name,
            arguments=call.arguments,
            deadline_s=dispatch.deadline_s,
        )
        subject = subjects.tool_call(call.name, self.task_id)
        await self.bus.publish(subject, encode(message), msg_id=msgids.tool_call(self.task_id, call.call_id))

    async def _give_up(self, dispatch: ToolDispatch) -> ToolCompleted:
        call = dispatch.call
        waited = dispatch.deadline_s + self.tool_wait_extra_s
        log.warning("no answer for tool call %s (%s) after %.1fs", call.call_id, call.name, waited)
        data = ToolCompletedData(
            call_id=call.call_id,
            name=call.name,
            ok=False,
            error=f"the {call.name} tool did not answer within {waited:g}s",
            duration_ms=round(waited * 1000, 3),
        )
        return await self._emit(ToolCompleted, data, msg_id=msgids.tool_completed(self.task_id, call.call_id))
