"""Holding one task for one delivery of its work message: the checks, the run, and the ack decision.

    received ─▶ log has a terminal event ───────────────────────────────────────────▶ ack (nothing to do)
             ─▶ record terminal (e.g. canceled while queued) ─▶ publish the implied terminal event ─▶ ack
             ─▶ max_deliver crashes behind this delivery ─▶ record failed + task.failed ──────────▶ term
             ─▶ record input-required (the human has not answered yet) ─────────────────────────────▶ ack
             ─▶ subscribe sluice.ctl.<task>, CAS submitted|working → working owned by (attempt+1, runner),
                 task.started(attempt+1); run the agent loop, racing a cancel notice and the hard-stop of a
                 shutdown, while a heartbeat sends in_progress() every quarter of the ack wait (a dead runner's
                 task is redelivered within one ack wait) and looks at the record every third beat:
                   Completed / Failed ─▶ CAS record terminal (the CAS winner decides) ─▶ terminal event
                                        ─▶ the tenant's place freed (sluice.active_tasks) ─▶ ack
                   (an event too large for the log, from a huge answer, is Failed `event_too_large`: every
                   attempt would meet it again)
                   Paused ─────────────▶ CAS record input-required (slot freed) ─────────────────────────▶ ack
                   canceled ───────────▶ task.canceled (the record says canceled) ───────────────────────▶ ack
                   handed back ────────▶ (shutdown) ─▶ noted as a hand-back (sluice.handbacks) ─────────▶ nak
             ─▶ NATS unavailable ─▶ handed back the same way (not a crash)
             ─▶ an unexpected error ─▶ nak(delay): redelivered (a crash: counted), rebuilt from the log

Terminal events always use msg id `{task}:end`, so two writers never produce two.

Fencing: every event goes through the task's `LogGuard` over its whole log, so once a later attempt's
`task.started` is stored (or a terminal event), this attempt's writes are refused by JetStream itself; every
record change checks that the record's attempt is still ours. A superseded attempt (a runner that was frozen past
the ack wait and woke up) stops where it is and neither acks nor naks: the message belongs to the new holder.
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
from sluice.active_tasks import ActiveTasks
from sluice.bus import MSG_ID, Bus
from sluice.errors import InvalidInput, SluiceError, Superseded, TaskEnded, Unavailable
from sluice.eventlog import EventWriter, LogEntry, read_log
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
from sluice.guard import LogGuard
from sluice.handbacks import HandBacks
from sluice.ids import parse_task_id
from sluice.logs import task_scope
from sluice.messages import decode_control, decode_work
from sluice.propagation import current_trace_id, trace_id_from_headers
from sluice.records import TaskStore
from sluice.tracing import process_span

__all__ = ["RunnerContext", "hand_back", "handle_work"]

log = logging.getLogger(__name__)
SOURCE = "agent-runner"


@dataclass
class RunnerContext:
    """What every held task shares in one runner process."""

    bus: Bus
    store: TaskStore
    handbacks: HandBacks
    settings: RunnerSettings
    catalog: Catalog
    tools: Mapping[str, ToolDescriptor]
    model: ModelClient
    draining: Callable[[], bool]
    hard_stop: asyncio.Event
    # The tenants' unfinished tasks (CONTRACT §8): a task this runner ends gives its place back.
    active: ActiveTasks | None = None
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
        except Superseded as exc:
            ATTEMPTS.labels("superseded").inc()
            log.warning("attempt superseded; this runner writes nothing more to the task: %s", exc.message)
            await _settle_superseded(ctx, msg, task_id)
        except TaskEnded as exc:
            log.info("task ended while held (%s); work message dropped", exc.message)
            await msg.ack()
        except asyncio.CancelledError:
            await _nak(msg, 0)
            raise
        except Unavailable as exc:  # NATS is out: not the task's fault, so not a crash
            log.warning("NATS unavailable mid-task (%s); handing the task back", exc.message)
            await hand_back(ctx.handbacks, msg)
        except Exception:  # a bug: logged, and the message comes back, counted (poison after max_deliver)
            log.exception("task attempt failed unexpectedly; handing the task back")
            await _nak(msg, 2.0)


async def _settle_superseded(ctx: RunnerContext, msg: Msg, task_id: str) -> None:
    """A superseded attempt (it stalled past the ack wait, or NATS lost its in-progress acks) leaves the message it
    shares with the new holder alone — no ack, no nak, no in_progress: it is the holder's now — and notes that this
    delivery ended without a crash, so a false takeover does not count toward the poison limit. A second work message
    for the task (a duplicate) is acked, or the two would take the task from each other on every redelivery."""
    try:
        record = await ctx.store.find(task_id)
    except SluiceError as exc:
        log.warning("superseded: could not read the record (%s); the message is left as it is", exc.message)
        return
    if record is not None and record.work_seq != msg.metadata.sequence.stream:
        await msg.ack()
    else:
        await ctx.handbacks.note(msg)


async def hand_back(handbacks: HandBacks, msg: Msg) -> None:
    """Gives a task back without counting a crash: the hand-back noted under the message, then nak (at once: the
    next runner takes it without waiting for the ack wait)."""
    await handbacks.note(msg)
    await _nak(msg, 0)


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
        self.guard: LogGuard | None = None
        self.tlog: TaskLog | None = None
        self.attempt = 0  # ours once the record says so
        self.started = False
        self.held = True  # until the attempt's run ends

    async def handle(self) -> None:
        ctx, task_id = self.ctx, self.task_id
        delivered = self.msg.metadata.num_delivered
        crashes = await ctx.handbacks.crashes(self.msg)
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
            if record.output_truncated:  # the event carries the whole answer: read it from the log
                self.tlog = TaskLog.rebuild(task_id, (entry.decode() for entry in entries))
            await self._finish(record)
            return
        if crashes >= ctx.settings.common.max_deliver:  # SIGTERM hand-backs, drains and NATS outages never count
            await self._poison(crashes)
            return
        if record.state == "input-required":
            log.info("task waits for input; work message dropped")
            await self.msg.ack()
            return
        # Decoded only now: a log this runner cannot read fails the delivery (nak), and in the end the task (poison).
        tlog = TaskLog.rebuild(task_id, (entry.decode() for entry in entries))
        self.tlog = tlog
        # Past both the log's attempts and the record's: a runner that took the record but froze before its
        # task.started was stored must not block every later attempt.
        self.attempt = max(tlog.attempts, record.attempt) + 1
        self.guard = LogGuard(ctx.bus, ctx.writer, task_id, last_seq=tlog.last_seq, whole_log=True, judge=self._judge)
        sub = await ctx.bus.nc.subscribe(subjects.control(task_id), cb=self.holding.on_control)
        TASKS_IN_FLIGHT.inc()
        try:
            await self._hold(tlog, crashes)
        finally:
            TASKS_IN_FLIGHT.dec()
            await sub.unsubscribe()

    def _judge(self, entry: LogEntry) -> None:
        """What another writer put in the log since our last write: a later attempt ends ours; before our own
        task.started, the events of the attempt we replace still count towards the conversation."""
        if entry.type == "task.started" and entry.headers.get(MSG_ID) != self._started_msg_id:
            started = entry.decode()
            if isinstance(started, TaskStarted) and started.data.attempt >= self.attempt:
                raise Superseded("superseded", f"attempt {started.data.attempt} ({started.data.runner}) took over")
        if not self.started and self.tlog is not None:
            self.tlog.apply(entry.decode())

    @property
    def _started_msg_id(self) -> str:
        return msgids.started(self.task_id, self.attempt)

    async def _hold(self, tlog: TaskLog, crashes: int) -> None:
        ctx = self.ctx
        assert tlog.submitted is not None
        last_event_id = str(tlog.last_seq) if tlog.last_seq else None
        taking = _to_working(self.attempt, ctx.settings.runner_id, self.msg.metadata.sequence.stream, last_event_id)
        _, record = await ctx.store.update(self.task_id, taking)
        if record.state != "working":
            if record.terminal:
                await self._finish(record)
            else:
                await self.msg.ack()
            return
        plan = ctx.catalog.plan(tlog.submitted.agent)
        limits = Limits.resolve(tlog.submitted.budget, plan.ceilings) if plan is not None else Limits()
        agent = tlog.submitted.agent
        attempt = self.attempt
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
            self.sink = self._sink(tool_wait_extra_s=extra_s)
            started = await self.sink.emit(
                TaskStarted,
                TaskStartedData(attempt=attempt, runner=ctx.settings.runner_id, budget=limits.as_budget()),
                msg_id=self._started_msg_id,
            )
            self.started = True
            tlog.apply(started)
            log.info("task started", extra={"attempt": attempt, "agent": agent, "crashes": crashes})
            if plan is None:
                known = ", ".join(ctx.catalog.names)
                outcome: Outcome = Failed("unknown_agent", f"no agent or crew named {agent!r}; known: {known}",
                                          tlog.usage)  # fmt: skip
            else:
                try:
                    outcome = await self._run(tlog, plan, limits)
                except InvalidInput as exc:
                    if exc.code != "message_too_large":
                        raise
                    # An answer (or a delta of it) larger than one event may be: every attempt would meet the same.
                    outcome = Failed("event_too_large", f"the task made an event the log refuses: {exc.message}",
                                     tlog.usage)  # fmt: skip
            span.set_attribute("sluice.outcome", type(outcome).__name__.lower())
            if isinstance(outcome, Failed):
                span.set_status(Status(StatusCode.ERROR, outcome.code))
            await self._settle(outcome)

    async def _run(self, tlog: TaskLog, plan: Plan, limits: Limits) -> Outcome:
        ctx = self.ctx
        assert tlog.submitted is not None and self.sink is not None
        agent_loop = AgentLoop(
            log=tlog,
            plan=plan,
            limits=limits,
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
        heartbeat = watchers[-1]
        try:
            await asyncio.wait([run, *watchers], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.held = False  # the heartbeat ends on this too: a cancel can be lost (see _heartbeat)
            for task in (run, *watchers):
                task.cancel()
            await asyncio.wait([run, *watchers])
        if not heartbeat.cancelled() and isinstance(fenced := heartbeat.exception(), Superseded):
            if not run.cancelled():
                run.exception()  # the loop's own end (often the same fencing) is superseded too: retrieved, not raised
            raise fenced
        if not run.cancelled():
            return run.result()  # an exception from the loop propagates: nak, redelivery
        return Interrupted("canceled" if self.holding.cancel.is_set() else "hand_back")

    async def _heartbeat(self) -> None:
        """Keeps the message ours (in_progress) and, every third beat, notices in the record a cancel that no ctl
        notice announced, or a later attempt that took the task over (then raises Superseded).

        It stops when the attempt ends (`held` false), not only when cancelled: under Python 3.11 a cancel that
        comes as a NATS request's answer arrives is lost (nats-py waits with `asyncio.wait_for`, which then returns
        the answer), and a heartbeat that beat on would keep a finished attempt's message in progress for ever —
        the task stuck `working` with nobody working on it."""
        beats = 0
        while self.held:
            await asyncio.sleep(self.ctx.settings.heartbeat_s)
            beats += 1
            try:
                await self.msg.in_progress()
                record = await self.ctx.store.find(self.task_id) if beats % 3 == 0 else None
            except (nats.errors.Error, SluiceError) as exc:  # a NATS hiccup: the next beat may get through
                log.warning("heartbeat failed: %s", exc)
                continue
            if not self.held:
                return  # the attempt ended during this beat (its cancel lost): nothing more to keep or notice
            if record is not None and record.attempt != self.attempt:
                raise Superseded("superseded", f"the record is held by attempt {record.attempt} ({record.runner})")
            if record is not None and record.terminal:
                self.holding.cancel.set()
                return

    def _sink(self, *, tool_wait_extra_s: float = 40.0) -> NatsSink:
        ctx = self.ctx
        if self.guard is None:  # a task ended before any attempt held it: guard what is written from here on
            self.guard = LogGuard(ctx.bus, ctx.writer, self.task_id, whole_log=True)
        return NatsSink(ctx.bus, self.guard, self.task_id, self.trace_id, tool_wait_extra_s=tool_wait_extra_s)

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
                change = _to_terminal("completed", self.attempt, output=output, usage=usage)
                await self._finish(None, change=change, output=output)
            case Failed(code=code, message=message, usage=usage):
                log.warning("task failed: %s: %s", code, message)
                error = ErrorInfo(code=code, message=message)
                await self._finish(None, change=_to_terminal("failed", self.attempt, error=error, usage=usage))
            case Paused(seq=seq):
                _, record = await self.ctx.store.update(self.task_id, _to_input_required(str(seq), self.attempt))
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
                await hand_back(self.ctx.handbacks, self.msg)

    async def _finish(
        self,
        record: TaskRecord | None,
        *,
        change: Callable[[TaskRecord], TaskRecord | None] | None = None,
        output: str | None = None,
    ) -> None:
        """Terminal: CAS the record (unless it is terminal already), publish the event it implies, note its id.

        `task.completed` carries the whole answer: `output` (this attempt's), else the record's, which is only its
        start when the record says `output_truncated` — then the last stage's output in the log."""
        ctx = self.ctx
        if change is not None:
            _, record = await ctx.store.update(self.task_id, change)
        assert record is not None and record.terminal
        sink = self.sink or self._sink()
        if output is None and record.output_truncated and self.tlog is not None and self.tlog.stage_outputs:
            output = self.tlog.stage_outputs[max(self.tlog.stage_outputs)]
        cls, data = _implied_terminal(record, self.holding.reason, output)
        event_id = await _end(sink, cls, data)
        await ctx.store.update(self.task_id, _with_last_event_id(event_id))
        await self._release(record)
        ATTEMPTS.labels(record.state).inc()
        if record.state == "completed":
            TASKS_COMPLETED.inc()
        elif record.state == "canceled":
            TASKS_CANCELED.inc()
        elif record.error is not None:
            TASKS_FAILED.labels(record.error.code).inc()
        log.info("task %s", record.state, extra={"event_id": event_id})
        await self.msg.ack()

    async def _poison(self, crashes: int, *, code: str = "max_deliver_exceeded", message: str = "") -> None:
        message = message or f"the task's runners crashed {crashes} times without finishing it; giving up"
        error = ErrorInfo(code=code, message=message)
        _, record = await self.ctx.store.update(self.task_id, _to_terminal("failed", None, error=error))
        cls, data = _implied_terminal(record, "")
        event_id = await _end(self._sink(), cls, data)
        await self.ctx.store.update(self.task_id, _with_last_event_id(event_id))
        await self._release(record)
        TASKS_FAILED.labels(error.code).inc()
        log.error("poison task failed: %s", message)
        await self.msg.term()

    async def _release(self, record: TaskRecord) -> None:
        """The task has ended: its place among its tenant's unfinished tasks is free (the reconciler frees it if
        this runner dies first)."""
        if self.ctx.active is not None:
            await self.ctx.active.release(record)

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


async def _end(sink: NatsSink, cls: type[Event], data: Any) -> str:
    """Publishes the terminal event the record implies, unless the log has one already; returns its id."""
    task_id = sink.task_id
    try:
        event: Event = await sink.emit(cls, data, msg_id=msgids.end(task_id))
    except TaskEnded as ended:  # another writer's end is in the log (e.g. the edge's task.canceled): it stands
        return str(ended.seq)
    return event.id or ""


def _to_working(
    attempt: int, runner: str, work_seq: int, last_event_id: str | None
) -> Callable[[TaskRecord], TaskRecord | None]:
    """Takes the task for `attempt` (compare-and-set): refused if a later or equal attempt holds it already."""

    def change(record: TaskRecord) -> TaskRecord | None:
        if record.state not in ("submitted", "working"):
            return None
        if record.attempt >= attempt:
            raise Superseded("superseded", f"attempt {record.attempt} ({record.runner}) holds the task")
        return msgspec.structs.replace(
            record,
            state="working",
            attempt=attempt,
            runner=runner,
            work_seq=work_seq,
            last_event_id=last_event_id or record.last_event_id,
        )

    return change


def _fence(record: TaskRecord, attempt: int | None) -> None:
    if attempt is not None and record.attempt != attempt:
        raise Superseded("superseded", f"attempt {record.attempt} ({record.runner}) holds the task, not {attempt}")


def _with_last_event_id(event_id: str | None) -> Callable[[TaskRecord], TaskRecord | None]:
    def change(record: TaskRecord) -> TaskRecord | None:
        if record.last_event_id == event_id:
            return None
        return msgspec.structs.replace(record, last_event_id=event_id)

    return change


def _to_input_required(event_id: str, attempt: int) -> Callable[[TaskRecord], TaskRecord | None]:
    def change(record: TaskRecord) -> TaskRecord | None:
        if record.state != "working":
            return None
        _fence(record, attempt)
        return msgspec.structs.replace(record, state="input-required", last_event_id=event_id)

    return change


def _to_terminal(state: str, attempt: int | None, **fields: Any) -> Callable[[TaskRecord], TaskRecord | None]:
    """`attempt` None: no attempt holds the task (poison, decided before taking it)."""

    def change(record: TaskRecord) -> TaskRecord | None:
        if record.terminal:
            return None  # someone else decided first (e.g. cancel): their outcome stands
        _fence(record, attempt)
        return msgspec.structs.replace(record, state=state, **fields)

    return change


def _implied_terminal(record: TaskRecord, reason: str, output: str | None = None) -> tuple[type[Event], Any]:
    if record.state == "completed":
        whole = output if output is not None else record.output or ""
        return TaskCompleted, TaskCompletedData(output=whole, usage=record.usage)
    if record.state == "failed":
        error = record.error or ErrorInfo(code="failed", message="the task failed")
        return TaskFailed, TaskFailedData(error=error, usage=record.usage)
    return TaskCanceled, TaskCanceledData(reason=reason or "canceled by request")
