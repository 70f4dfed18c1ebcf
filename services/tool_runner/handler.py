"""One tool-call message from `SLUICE_TOOLS`, handled from decode to the decision about its ack.

`ToolCallHandler.handle` never acks anything itself: it returns a `Disposition`, the named ack decision the
worker carries out. The decisions, in the order they are taken:

| situation | events published | disposition |
| --- | --- | --- |
| payload does not decode, or its task id is invalid | none (logged) | `TERM` |
| no task record (never existed, or expired) | none | `ACK` |
| task record is terminal (e.g. canceled while the call waited) | none | `ACK` |
| redelivered, and the log already has its `tool.completed` | none | `ACK` |
| `max_deliver` crashes behind this delivery (its runners kept dying) | `tool.completed` ok=false | `TERM` |
| otherwise: run it | `tool.started`, then `tool.completed` | `ACK` |
| ... but the record turned terminal while it ran | `tool.started` only | `ACK` |
| ... or the task's terminal event was stored first | what was stored before the end | `ACK` |
| a tool this runner does not serve, but another live one does (the catalog) | none | `PASS_ON` (not a crash) |
| NATS unavailable (record, log or publish) | what got through | `HAND_BACK` (not a crash) |

Crashes are counted, not deliveries: a tool-runner that stops (SIGTERM) or meets a NATS outage notes the hand-back
(`sluice.handbacks`) before it naks, so only deliveries that ended in a crash count toward `max_deliver`.

Both events are published through the task's `LogGuard` (the one guard of every writer, over the task's
lifecycle events): JetStream stores them only if no terminal event is in the log, so a result that comes back
after a cancel is dropped, never stored after `task.canceled`.

Both events carry msg ids derived from the call id (`{task}:tool:{call_id}:start|done`), so JetStream drops a
second copy within its duplicate window; a redelivered call also checks the log first, so that neither a
second `tool.started` nor a second run happens after the window has passed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import msgspec
import nats.errors
from nats.aio.msg import Msg
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

from sluice import events as ev
from sluice import msgids
from sluice.bus import Bus
from sluice.errors import InvalidInput, TaskEnded, Unavailable
from sluice.eventlog import EventWriter, read_log
from sluice.guard import LogGuard
from sluice.handbacks import HandBacks
from sluice.ids import parse_task_id
from sluice.logs import task_scope
from sluice.messages import ToolCallMessage, decode_tool_call
from sluice.propagation import current_trace_id, trace_id_from_headers
from sluice.records import TaskStore
from sluice.tracing import process_span

from .execution import CallResult, Outcome, execute
from .invocable import Invocable
from .metrics import ToolMetrics
from .tools import get_tool

__all__ = ["SOURCE", "Disposition", "Skipped", "ToolCallHandler"]

log = logging.getLogger(__name__)

SOURCE = "tool-runner"
# One template for every tool: a tool name comes from a model and must not mint span attribute values.
TOOL_DESTINATION = "sluice.tool.{name}.{task_id}"
# Transient: whatever failed may work on the next delivery.
_TRANSIENT = (Unavailable, nats.errors.Error, TimeoutError)


class Skipped(StrEnum):
    """Why a message settled without a run; with `Outcome`, the values of the metrics' `outcome` label."""

    TASK_MISSING = "task_missing"
    TASK_TERMINAL = "task_terminal"
    DUPLICATE = "duplicate"
    RETRY = "retry"
    UNDECODABLE = "undecodable"
    ELSEWHERE = "elsewhere"  # a tool this runner does not serve but another live one does (the catalog says)


class Disposition(StrEnum):
    """What to tell JetStream about a message once it has been handled."""

    ACK = "ack"  # done with it: its result is in the log, or there is nothing to publish
    NAK = "nak"  # an unexpected error: deliver it again after a delay (to any tool-runner); counts as a crash
    HAND_BACK = "hand_back"  # a transient failure (NATS): a fresh message, after a delay; not a crash
    PASS_ON = "pass_on"  # another tool-runner serves this tool: back at once, for it; not a crash
    TERM = "term"  # never deliver it again: it cannot be read, or it was given up on


@dataclass(frozen=True, slots=True)
class _Seen:
    """What the log already says about a call (only looked up for a redelivered message)."""

    started: bool = False
    completed: bool = False


class ToolCallHandler:
    def __init__(
        self,
        bus: Bus,
        store: TaskStore,
        metrics: ToolMetrics,
        *,
        max_deliver: int,
        max_output_bytes: int | None = None,
        lookup: Callable[[str], Invocable | None] = get_tool,
        handbacks: HandBacks | None = None,
        served_elsewhere: Callable[[str], bool] = lambda name: False,
    ) -> None:
        self.bus = bus
        self.store = store
        self.handbacks = handbacks  # None: every earlier delivery counts as a crash
        self.metrics = metrics
        self.max_deliver = max_deliver
        self.max_output_bytes = max_output_bytes
        self.lookup = lookup
        # Tool-runners may serve different tools on the one shared consumer: a call for a tool only another live
        # runner serves is passed on to it, not answered "unknown tool".
        self.served_elsewhere = served_elsewhere
        self.writer = EventWriter(bus, SOURCE)

    async def handle(self, msg: Msg) -> Disposition:
        try:
            call = decode_tool_call(msg.data)
            parse_task_id(call.task_id)
        except (msgspec.DecodeError, InvalidInput) as exc:
            log.error("undecodable tool call; terminating it", extra={"subject": msg.subject, "error": str(exc)})
            self.metrics.settled("", Skipped.UNDECODABLE)
            return Disposition.TERM
        with (
            task_scope(call.task_id),
            process_span(
                f"execute_tool {call.name}", msg, TOOL_DESTINATION, attributes=_gen_ai_attributes(call)
            ) as span,
        ):
            trace_id = current_trace_id() or trace_id_from_headers(msg.headers)
            try:
                outcome, disposition = await self._process(call, msg, trace_id)
            except _TRANSIENT as exc:
                log.warning("tool call %s postponed: %s", call.call_id, exc, extra={"call_id": call.call_id})
                span.set_status(Status(StatusCode.ERROR, f"transient: {type(exc).__name__}"))
                outcome, disposition = Skipped.RETRY, Disposition.HAND_BACK
            span.set_attribute("sluice.tool.outcome", outcome)
            if outcome not in (Outcome.OK, Skipped.TASK_TERMINAL, Skipped.TASK_MISSING, Skipped.DUPLICATE):
                span.set_status(Status(StatusCode.ERROR, outcome))
            self.metrics.settled(call.name, outcome)
            return disposition

    async def _process(self, call: ToolCallMessage, msg: Msg, trace_id: str) -> tuple[Outcome | Skipped, Disposition]:
        deliveries = msg.metadata.num_delivered
        if (why := await self._task_gone(call.task_id)) is not None:
            log.info("tool call %s not run: %s", call.call_id, why, extra={"call_id": call.call_id})
            return why, Disposition.ACK
        if self.lookup(call.name) is None and self.served_elsewhere(call.name):
            log.info("tool call %s: %s is served by another tool-runner; passed on", call.call_id, call.name)
            return Skipped.ELSEWHERE, Disposition.PASS_ON
        seen = _Seen()
        crashes = await self.handbacks.crashes(msg) if self.handbacks is not None else deliveries - 1
        if deliveries > 1:
            seen = await self._seen(call)
            log.info(
                "tool call %s redelivered (delivery %d)", call.call_id, deliveries,
                extra={"call_id": call.call_id, "started": seen.started, "completed": seen.completed},
            )  # fmt: skip
        if seen.completed:
            log.info("tool call %s already completed; not run again", call.call_id, extra={"call_id": call.call_id})
            return Skipped.DUPLICATE, Disposition.ACK
        if crashes >= self.max_deliver:
            log.error(
                "tool call %s: %d runners crashed on it without completing; giving up",
                call.call_id, crashes, extra={"call_id": call.call_id},
            )  # fmt: skip
            error = f"{call.name} was abandoned after {crashes + 1} attempts that did not finish (the runner died)"
            guard = LogGuard(self.bus, self.writer, call.task_id)
            try:
                await self._completed(guard, call, CallResult.failed(Outcome.POISON, error), trace_id)
            except TaskEnded:
                return Skipped.TASK_TERMINAL, Disposition.TERM
            return Outcome.POISON, Disposition.TERM
        try:
            return await self._run(call, seen, trace_id)
        except TaskEnded as ended:  # canceled (or ended otherwise) before the event could be stored
            log.info("tool call %s: %s; nothing more published", call.call_id, ended.message)
            return Skipped.TASK_TERMINAL, Disposition.ACK

    async def _run(self, call: ToolCallMessage, seen: _Seen, trace_id: str) -> tuple[Outcome | Skipped, Disposition]:
        guard = LogGuard(self.bus, self.writer, call.task_id)
        if not seen.started:
            data = ev.ToolStartedData(call_id=call.call_id, name=call.name, arguments=call.arguments)
            event = self.writer.build(ev.ToolStarted, call.task_id, data, trace_id=trace_id)
            await guard.publish(event, msg_id=msgids.tool_started(call.task_id, call.call_id))
        begun = time.monotonic()
        result = await execute(
            self.lookup(call.name),
            call.name,
            call.arguments,
            deadline_s=call.deadline_s,
            max_output_bytes=self.max_output_bytes,
        )
        self.metrics.ran(call.name, time.monotonic() - begun)
        # The task may have ended while the tool ran (a cancel): its late result is not published. The record
        # says so first; the guard refuses it even when the cancel lands between this look and the publish.
        if (why := await self._task_gone(call.task_id)) is not None:
            log.info("tool call %s finished after its task became %s; result dropped", call.call_id, why)
            return why, Disposition.ACK
        await self._completed(guard, call, result, trace_id)
        return result.outcome, Disposition.ACK

    async def _task_gone(self, task_id: str) -> Skipped | None:
        record = await self.store.find(task_id)
        if record is None:
            return Skipped.TASK_MISSING
        return Skipped.TASK_TERMINAL if record.terminal else None

    async def _seen(self, call: ToolCallMessage) -> _Seen:
        started = completed = False
        async for entry in read_log(self.bus, call.task_id):
            if entry.type not in ("tool.started", "tool.completed"):
                continue
            event = entry.decode()
            if isinstance(event, ev.ToolStarted) and event.data.call_id == call.call_id:
                started = True
            elif isinstance(event, ev.ToolCompleted) and event.data.call_id == call.call_id:
                completed = True
        return _Seen(started=started, completed=completed)

    async def _completed(self, guard: LogGuard, call: ToolCallMessage, result: CallResult, trace_id: str) -> None:
        data = ev.ToolCompletedData(
            call_id=call.call_id,
            name=call.name,
            ok=result.ok,
            result=result.result,
            error=result.error,
            duration_ms=result.duration_ms,
        )
        event = self.writer.build(ev.ToolCompleted, call.task_id, data, trace_id=trace_id)
        await guard.publish(event, msg_id=msgids.tool_completed(call.task_id, call.call_id))


def _gen_ai_attributes(call: ToolCallMessage) -> dict[str, AttributeValue]:
    return {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": call.name,
        "gen_ai.tool.call.id": call.call_id,
        "gen_ai.tool.type": "function",
    }
