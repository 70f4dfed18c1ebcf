"""Holding one task for one delivery of its work message: the checks, the run, and the ack decision.

    received ─▶ log has a terminal event ───────────────────────────────────────────▶ ack (nothing to do)
             ─▶ record terminal (e.g. canceled while queued) ─▶ publish the implied terminal event ─▶ ack
             ─▶ delivered more than max_deliver times ─▶ record failed + task.failed ─────────────▶ term
             ─▶ record input-required (the human has not answered yet) ─────────────────────────────▶ ack
             ─▶ subscribe sluice.ctl.<task>, CAS submitted|working → working, task.started(attempt+1)
                 run the agent loop, racing a cancel notice and the hard-stop of a shutdown, while a
                 heartbeat sends in_progress() and looks at the record every third of the ack wait:
                   Completed / Failed ─▶ CAS record terminal (the CAS winner decides) ─▶ terminal event ─▶ ack
                   Paused ─────────────▶ CAS record input-required (slot freed) ─────────────────────────▶ ack
                   canceled ───────────▶ task.canceled (the record says canceled) ───────────────────────▶ ack
                   handed back ────────▶ (shutdown) ────────────────────────────────────────────────────▶ nak
             ─▶ NATS unavailable or an unexpected error ─▶ nak(delay): redelivered, rebuilt from the log

Terminal events always use msg id `{task}:end`, so two writers never produce two.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats.errors
from nats.aio.msg import Msg
from opentelemetry.trace import Status, StatusCode

from agent_runner.agents import Catalog, Plan
from agent_runner.budget import Limits
from agent_runner.conversation import TaskLog
from agent_runner.loop import AgentLoop, Completed, Failed, Interrupted, LoopConfig, Outcome, Paused, StopReason
from agent_runner.metrics import ATTEMPTS, TASKS_CANCELED, TASKS_COMPLETED, TASKS_FAILED, TASKS_IN_FLIGHT
from agent_runner.ports import ModelClient, ToolDescriptor
from agent_runner.settings import RunnerSettings
from agent_runner.sink import NatsSink
from sluice import msgids, subjects
from sluice.bus import Bus
from sluice.errors import InvalidInput, SluiceError
from sluice.eventlog import EventWriter, read_log
from sluice.events import (
    TERMINAL_TYPES,
    ErrorInfo,
    Event,
    TaskCanceled,
    TaskCanceledData,
    TaskCompleted,
    TaskCompletedData,
    TaskFailed,
    TaskFailedData,
    TaskRecord,
    TaskStarted,
    TaskStartedData,
)
from sluice.ids import parse_task_id
from sluice.logs import task_scope
from sluice.messages import decode_control, decode_work
from sluice.propagation import current_trace_id, trace_id_from_headers
from sluice.records import TaskStore
from sluice.tracing import process_span

__all__ = ["RunnerContext", "handle_work"]

log = logging.getLogger(__name__)
SOURCE = "agent-runner"


@dataclass
class RunnerContext:
    """What every held task shares in one runner process."""

    bus: Bus
    store: TaskStore
    settings: RunnerSettings
    catalog: Catalog
    tools: Mapping[str, ToolDescriptor]
    model: ModelClient
    draining: Callable[[], bool]
    hard_stop: asyncio.Event
    writer: EventWriter = field(init=False)

    def __post_init__(self) -> None:
        self.writer = EventWriter(self.bus, SOURCE)

    @property
    def loop_config(self) -> LoopConfig:
        s = self.settings
        return LoopConfig(
            delta_window_s=s.delta_window_s,
            model_max_attempts=s.model_max_attempts,
            backoff_s=s.model_backoff_s,
            backoff_max_s=s.model_backoff_max_s,
        )


@dataclass
class _Holding:
    """A held task's cancel signal: a ctl notice, or the record seen canceled."""

    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""

    async def on_control(self, msg: Msg) -> None:
        try:
            notice = decode_control(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            log.warning("ignored a malformed control message")
            return
        if notice.action == "cancel":
            self.reason = notice.reason or self.reason
            self.cancel.set()


async def handle_work(ctx: RunnerContext, msg: Msg) -> None:
    """Handles one delivery; never raises except on cancellation (then the message is nak'ed first)."""
    try:
        task_id = parse_task_id(decode_work(msg.data).task_id)
    except (msgspec.ValidationError, msgspec.DecodeError, InvalidInput) as exc:
        log.error("dropped a malformed work message on %s: %s", msg.subject, exc)
        await msg.term()
        return
    with task_scope(task_id):
        try:
            await _Attempt(ctx, msg, task_id).handle()
        except asyncio.CancelledError:
            await _nak(msg, 0)
            raise
        except Exception:  # a bug or a NATS outage: logged, and the message comes back (poison after max_deliver)
            log.exception("task attempt failed unexpectedly; handing the task back")
            await _nak(msg, 2.0)


async def _nak(msg: Msg, delay: float) -> None:
    if not msg.is_acked:
        try:
            await msg.nak(delay=delay or None)
        except Exception as exc:  # the connection is gone: the ack wait brings the message back anyway
            log.warning("nak failed: %s", exc)


class _Attempt:
    def __init__(self, ctx: RunnerContext, msg: Msg, task_id: str) -> None:
        self.ctx = ctx
        self.msg = msg
        self.task_id = task_id
        self.holding = _Holding()
        self.trace_id = ""
        self.sink: NatsSink | None = None

    async def handle(self) -> None:
        ctx, task_id = self.ctx, self.task_id
        delivered = self.msg.metadata.num_delivered
        entries = [entry async for entry in read_log(ctx.bus, task_id)]
        if any(entry.type in TERMINAL_TYPES for entry in entries):
            log.info("task already ended; work message dropped")
            await self.msg.ack()
            return
        submitted = next((e for e in entries if e.type == "task.submitted"), None)
        self.trace_id = trace_id_from_headers(submitted.headers if submitted else None) or trace_id_from_headers(
            self.msg.headers
        )
        record = await ctx.store.find(task_id)
        if record is None or submitted is None:
            await self._not_yet(delivered, record is None)
            return
        if record.terminal:
            await self._finish(record)
            return
        if delivered > ctx.settings.common.max_deliver:
            await self._poison(delivered)
            return
        if record.state == "input-required":
            log.info("task waits for input; work message dropped")
            await self.msg.ack()
            return
        # Decoded only now: a log this runner cannot read fails the delivery (nak), and in the end the task (poison).
        tlog = TaskLog.rebuild(task_id, (entry.decode() for entry in entries))
        sub = await ctx.bus.nc.subscribe(subjects.control(task_id), cb=self.holding.on_control)
        TASKS_IN_FLIGHT.inc()
        try:
            await self._hold(tlog, delivered)
        finally:
            TASKS_IN_FLIGHT.dec()
            await sub.unsubscribe()

    async def _hold(self, tlog: TaskLog, delivered: int) -> None:
        ctx = self.ctx
        assert tlog.submitted is not None
        _, record = await ctx.store.update(self.task_id, _to_working(str(tlog.last_seq) if tlog.last_seq else None))
        if record.state != "working":
            if record.terminal:
                await self._finish(record)
            else:
                await self.msg.ack()
            return
        plan = ctx.catalog.plan(tlog.submitted.agent)
        agent = tlog.submitted.agent
        attempt = tlog.attempts + 1
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "sluice.task_id": self.task_id,
            "sluice.attempt": attempt,
        }
        # A child of the work message's send span (in the task's trace; the edge continues it for a resume), and
        # linked to it when redelivered.
        with process_span(f"invoke_agent {agent}", self.msg, attributes=attributes) as span:
            self.trace_id = self.trace_id or current_trace_id()
            # A tool-runner that died mid-call is redelivered after the ack wait: allow for one.
            extra_s = ctx.settings.common.ack_wait_s + ctx.settings.tool_wait_margin_s
            self.sink = NatsSink(ctx.bus, ctx.writer, self.task_id, self.trace_id, tool_wait_extra_s=extra_s)
            started = await self.sink.emit(
                TaskStarted,
                TaskStartedData(attempt=attempt, runner=ctx.settings.runner_id),
                msg_id=msgids.started(self.task_id, attempt),
            )
            tlog.apply(started)
            log.info("task started", extra={"attempt": attempt, "agent": agent, "delivered": delivered})
            if plan is None:
                known = ", ".join(ctx.catalog.names)
                outcome: Outcome = Failed("unknown_agent", f"no agent or crew named {agent!r}; known: {known}",
                                          tlog.usage)  # fmt: skip
            else:
                outcome = await self._run(tlog, plan)
            span.set_attribute("sluice.outcome", type(outcome).__name__.lower())
            if isinstance(outcome, Failed):
                span.set_status(Status(StatusCode.ERROR, outcome.code))
            await self._settle(outcome)

    async def _run(self, tlog: TaskLog, plan: Plan) -> Outcome:
        ctx = self.ctx
        assert tlog.submitted is not None and self.sink is not None
        agent_loop = AgentLoop(
            log=tlog,
            plan=plan,
            limits=Limits.resolve(tlog.submitted.budget, plan.defaults),
            sink=self.sink,
            model=ctx.model,
            tools=ctx.tools,
            config=ctx.loop_config,
            checkpoint=self._checkpoint,
        )
        run = asyncio.create_task(agent_loop.run(), name=f"task-{self.task_id}")
        watchers = [
            asyncio.create_task(self.holding.cancel.wait()),
            asyncio.create_task(ctx.hard_stop.wait()),
            asyncio.create_task(self._heartbeat()),
        ]
        try:
            await asyncio.wait([run, *watchers], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (run, *watchers):
                task.cancel()
            await asyncio.wait([run, *watchers])
        if not run.cancelled():
            return run.result()  # an exception from the loop propagates: nak, redelivery
        return Interrupted("canceled" if self.holding.cancel.is_set() else "hand_back")

    async def _heartbeat(self) -> None:
        """Keeps the message ours (in_progress) and notices a cancel that no ctl notice announced."""
        while True:
            await asyncio.sleep(self.ctx.settings.heartbeat_s)
            try:
                await self.msg.in_progress()
                record = await self.ctx.store.find(self.task_id)
            except (nats.errors.Error, SluiceError) as exc:  # a NATS hiccup: the next beat may get through
                log.warning("heartbeat failed: %s", exc)
                continue
            if record is not None and record.terminal:
                self.holding.cancel.set()
                return

    async def _checkpoint(self) -> StopReason | None:
        """Between steps: a canceled record stops the task, a shutdown hands it back."""
        if self.holding.cancel.is_set():
            return "canceled"
        record = await self.ctx.store.find(self.task_id)
        if record is not None and record.terminal:
            self.holding.cancel.set()
            return "canceled"
        if self.ctx.draining():
            return "hand_back"
        return None

    # ------------------------------------------------------------------ outcomes

    async def _settle(self, outcome: Outcome) -> None:
        match outcome:
            case Completed(output=output, usage=usage):
                await self._finish(None, change=_to_terminal("completed", output=output, usage=usage))
            case Failed(code=code, message=message, usage=usage):
                log.warning("task failed: %s: %s", code, message)
                error = ErrorInfo(code=code, message=message)
                await self._finish(None, change=_to_terminal("failed", error=error, usage=usage))
            case Paused(seq=seq):
                _, record = await self.ctx.store.update(self.task_id, _to_input_required(str(seq)))
                if record.terminal:
                    await self._finish(record)
                    return
                ATTEMPTS.labels("paused").inc()
                log.info("task waits for input", extra={"input_required_id": seq})
                await self.msg.ack()
            case Interrupted(reason="canceled"):
                record = await self.ctx.store.get(self.task_id)
                if record.terminal:
                    await self._finish(record)
                else:  # a notice without a canceled record: the record is the truth, run it again
                    log.warning("cancel notice but the record is %s; handing the task back", record.state)
                    await _nak(self.msg, 1.0)
            case Interrupted():
                ATTEMPTS.labels("handed_back").inc()
                log.info("task handed back (shutdown)")
                await _nak(self.msg, 0)

    async def _finish(
        self, record: TaskRecord | None, *, change: Callable[[TaskRecord], TaskRecord | None] | None = None
    ) -> None:
        """Terminal: CAS the record (unless it is terminal already), publish the event it implies, note its id."""
        ctx = self.ctx
        if change is not None:
            _, record = await ctx.store.update(self.task_id, change)
        assert record is not None and record.terminal
        sink = self.sink or NatsSink(ctx.bus, ctx.writer, self.task_id, self.trace_id)
        cls, data = _implied_terminal(record, self.holding.reason)
        event: Event = await sink.emit(cls, data, msg_id=msgids.end(self.task_id))
        await ctx.store.update(self.task_id, _with_last_event_id(event.id))
        ATTEMPTS.labels(record.state).inc()
        if record.state == "completed":
            TASKS_COMPLETED.inc()
        elif record.state == "canceled":
            TASKS_CANCELED.inc()
        elif record.error is not None:
            TASKS_FAILED.labels(record.error.code).inc()
        log.info("task %s", record.state, extra={"event_id": event.id})
        await self.msg.ack()

    async def _poison(self, delivered: int, *, code: str = "max_deliver_exceeded", message: str = "") -> None:
        message = message or f"the task's work message was delivered {delivered} times without finishing; giving up"
        error = ErrorInfo(code=code, message=message)
        _, record = await self.ctx.store.update(self.task_id, _to_terminal("failed", error=error))
        sink = NatsSink(self.ctx.bus, self.ctx.writer, self.task_id, self.trace_id)
        cls, data = _implied_terminal(record, "")
        event = await sink.emit(cls, data, msg_id=msgids.end(self.task_id))
        await self.ctx.store.update(self.task_id, _with_last_event_id(event.id))
        TASKS_FAILED.labels(error.code).inc()
        log.error("poison task failed: %s", message)
        await self.msg.term()

    async def _not_yet(self, delivered: int, no_record: bool) -> None:
        """Work for a task whose record or task.submitted is missing: the edge may still be writing them."""
        what = "record" if no_record else "task.submitted event"
        if delivered >= self.ctx.settings.common.max_deliver:
            if no_record:  # nobody can be waiting for a task that has no record: drop the message
                log.error("work message for a task without a record; dropped after %d deliveries", delivered)
                await self.msg.term()
            else:  # a record that would say "submitted" forever: fail it, so nobody waits
                message = "the task was never fully submitted (its log has no task.submitted event)"
                await self._poison(delivered, code="incomplete_submission", message=message)
            return
        log.warning("work message for a task without a %s yet; retrying later", what)
        await _nak(self.msg, 1.0)


def _to_working(last_event_id: str | None) -> Callable[[TaskRecord], TaskRecord | None]:
    def change(record: TaskRecord) -> TaskRecord | None:
        if record.state not in ("submitted", "working"):
            return None
        return msgspec.structs.replace(record, state="working", last_event_id=last_event_id or record.last_event_id)

    return change


def _with_last_event_id(event_id: str | None) -> Callable[[TaskRecord], TaskRecord | None]:
    def change(record: TaskRecord) -> TaskRecord | None:
        if record.last_event_id == event_id:
            return None
        return msgspec.structs.replace(record, last_event_id=event_id)

    return change


def _to_input_required(event_id: str) -> Callable[[TaskRecord], TaskRecord | None]:
    def change(record: TaskRecord) -> TaskRecord | None:
        if record.state != "working":
            return None
        return msgspec.structs.replace(record, state="input-required", last_event_id=event_id)

    return change


def _to_terminal(state: str, **fields: Any) -> Callable[[TaskRecord], TaskRecord | None]:
    def change(record: TaskRecord) -> TaskRecord | None:
        if record.terminal:
            return None  # someone else decided first (e.g. cancel): their outcome stands
        return msgspec.structs.replace(record, state=state, **fields)

    return change


def _implied_terminal(record: TaskRecord, reason: str) -> tuple[type[Event], Any]:
    if record.state == "completed":
        return TaskCompleted, TaskCompletedData(output=record.output or "", usage=record.usage)
    if record.state == "failed":
        error = record.error or ErrorInfo(code="failed", message="the task failed")
        return TaskFailed, TaskFailedData(error=error, usage=record.usage)
    return TaskCanceled, TaskCanceledData(reason=reason or "canceled by request")
