"""`EventSink` over NATS: one task's events published in order, and its tool calls sent and waited for.

Events go through `EventWriter` with the protocol's msg ids, one at a time per task (a lock), each stamped with
the task's trace id. A tool call is a `ToolCallMessage` on `sluice.tool.<name>.<task>` (msg id
`{task}:call:{call_id}`); its answer is the `tool.completed` event in the task's log. The wait has no race: it
subscribes to the task's `tool.completed` subject first (a wake-up only), then reads the log from the step's
`llm.completed` on, and re-reads it on each wake-up, so a result published before, during or after the dispatch
is found, and what the sink returns is what the log holds. A call that was already answered is not sent again.
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

from agent_runner.metrics import TOOL_CALLS
from agent_runner.ports import ToolDispatch
from sluice import msgids, subjects
from sluice.bus import Bus
from sluice.eventlog import EventWriter, read_log
from sluice.events import Event, ToolCompleted, ToolCompletedData, encode
from sluice.messages import ToolCallMessage

__all__ = ["NatsSink"]

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)


class NatsSink:
    def __init__(
        self, bus: Bus, writer: EventWriter, task_id: str, trace_id: str, *, tool_wait_extra_s: float = 40.0
    ) -> None:
        self.bus = bus
        self.writer = writer
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
        event = self.writer.build(cls, self.task_id, data, trace_id=self.trace_id)
        async with self._lock:
            seq = await self.writer.publish(event, msg_id=msg_id)
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
        cursor = after_seq
        wake = asyncio.Event()

        async def on_result(_msg: Any) -> None:
            wake.set()

        async def collect() -> None:
            nonlocal cursor
            async for entry in read_log(self.bus, self.task_id, after=cursor):
                cursor = entry.seq
                if entry.type == "tool.completed":
                    event = entry.decode()
                    assert isinstance(event, ToolCompleted)
                    if event.data.call_id in wanted:
                        found.setdefault(event.data.call_id, event)

        sub = await self.bus.nc.subscribe(subjects.event(self.task_id, "tool.completed"), cb=on_result)
        try:
            await self.bus.nc.flush(timeout=5)
            await collect()
            loop = asyncio.get_running_loop()
            deadlines: dict[str, float] = {}
            for call_id, dispatch in wanted.items():
                deadlines[call_id] = loop.time() + dispatch.deadline_s + self.tool_wait_extra_s
                if call_id not in found:
                    await self._send(dispatch)
            while True:
                wake.clear()
                await collect()
                missing = [c for c in wanted if c not in found]
                if not missing:
                    break
                now = loop.time()
                for call_id in [c for c in missing if deadlines[c] <= now]:
                    found[call_id] = await self._give_up(wanted[call_id])
                if any(c not in found for c in missing):
                    timeout = min(deadlines[c] for c in missing if c not in found) - now
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), max(0.0, timeout))
        finally:
            await sub.unsubscribe()
        results = [found[call_id] for call_id in wanted]
        for result in results:
            TOOL_CALLS.labels(result.data.name, str(result.data.ok).lower()).inc()
        return results

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
