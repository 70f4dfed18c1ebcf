"""What a client can ask of a task — submit, read, cancel, answer — over the bus and the task store.

HTTP-agnostic (no FastAPI here), so the REST routes and the A2A endpoint share it. Each command follows the
protocol every service agrees on (see the common brief):

- submit: the agent must be in the catalog (else `422 unknown_agent`, nothing written) → a repeated
  `Idempotency-Key` returns its task → the tenant's limits (`limits/creations.py`: else `429 tenant_limit`,
  nothing written) → the context's history, the task listed in its context (`contexts.py`) → create the record
  (`submitted`) → publish `task.submitted` (`{task}:submitted`) → record its id as `last_event_id` → publish the
  work message (`{task}:run:submitted`). An `Idempotency-Key` is claimed in the task bucket before the context is
  touched; a key claimed first by a racing request returns that task (and finishes its submission if that request
  died midway — the deterministic message ids make the repeat harmless).
- cancel: CAS the record to `canceled` (Conflict if terminal) → free its place among the tenant's unfinished
  tasks → notify `sluice.ctl.<task>` → if nobody holds the task (`submitted`, `input-required`, or `working` with
  no work message left in SLUICE_WORK: its submission or resume died half-way) publish `task.canceled`
  (`{task}:end`) ourselves; a holder publishes it otherwise.
- input: the record must be `input-required` → publish `task.resumed` (`{task}:resumed:{ask_seq}`) → CAS
  `input-required → working` → publish the work message (`{task}:run:r{ask_seq}`).

Every event goes through a `LogGuard` (sluice.guard): none is stored after the task's terminal event, so an answer
that races a cancel is refused (409) rather than logged after `task.canceled`.

Events of cancel and input carry the task's trace id and run in a span of the task's trace (`continue_span`), so a
task stays one trace though each HTTP request starts its own.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable

import msgspec
import nats.errors
import nats.js.errors

from sluice import msgids, subjects
from sluice.bus import Bus
from sluice.clock import now_iso
from sluice.errors import Conflict, InvalidInput, NotFound, TaskEnded, Unavailable
from sluice.eventlog import EventWriter, LogEntry
from sluice.events import (
    ErrorInfo,
    TaskCanceled,
    TaskCanceledData,
    TaskFailed,
    TaskFailedData,
    TaskRecord,
    TaskResumed,
    TaskResumedData,
    TaskSubmitted,
    TaskSubmittedData,
    decode_event,
    encode,
)
from sluice.guard import LogGuard
from sluice.ids import DEFAULT_TENANT, is_task_id, new_task_id, parse_task_id
from sluice.logs import task_scope
from sluice.messages import ControlMessage, WorkMessage
from sluice.propagation import current_trace_id
from sluice.records import TaskStore
from sluice.tracing import continue_span
from stream_edge import answers, logview
from stream_edge.contexts import Conversations
from stream_edge.errors import UnknownAgent
from stream_edge.limits import CreationLimits

__all__ = [
    "AGENT_PATTERN",
    "SOURCE",
    "AgentKnown",
    "TaskService",
    "validate_idempotency_key",
    "validate_submission",
]

log = logging.getLogger(__name__)

SOURCE = "stream-edge"
AGENT_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_AGENT_RE = re.compile(AGENT_PATTERN)
# Printable ASCII without spaces at the ends, as for any HTTP header token we store.
_IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?$")
_UNATTENDED = frozenset({"submitted", "input-required"})
# How long a repeated Idempotency-Key waits for the first request to create its record.
_CLAIMANT_WAIT_S = 5.0

# Whether an agent name may be submitted (the catalog: some runner advertised it, no operator withdrew it).
AgentKnown = Callable[[str], Awaitable[bool]]


def validate_submission(request: TaskSubmittedData) -> None:
    """The rules the HTTP models also state, enforced here for every caller (REST, A2A)."""
    if not request.input.strip():
        raise InvalidInput("invalid_input", "input must not be empty")
    if not _AGENT_RE.fullmatch(request.agent):
        raise InvalidInput("invalid_agent", f"agent must match {AGENT_PATTERN}")


def validate_idempotency_key(key: str) -> str:
    if not _IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise InvalidInput("invalid_idempotency_key", "Idempotency-Key must be 1-255 printable ASCII characters")
    return key


def _no_task(task_id: str) -> NotFound:
    return NotFound("task_not_found", f"no task {task_id}")


def _with_last_event(seq: int) -> Callable[[TaskRecord], TaskRecord | None]:
    """A record change that moves `last_event_id` forward to `seq` (never back: another writer may be ahead)."""

    def change(record: TaskRecord) -> TaskRecord | None:
        if record.last_event_id is not None and int(record.last_event_id) >= seq:
            return None
        return msgspec.structs.replace(record, last_event_id=str(seq))

    return change


class TaskService:
    """The task commands of the edge. One per process; safe to share between concurrent requests."""

    def __init__(
        self,
        bus: Bus,
        store: TaskStore,
        agent_known: AgentKnown,
        conversations: Conversations | None = None,
        limits: CreationLimits | None = None,
    ) -> None:
        self.bus = bus
        self.store = store
        self.agent_known = agent_known
        self.writer = EventWriter(bus, SOURCE)
        self.conversations = conversations
        self.limits = limits  # the tenant's limits on creations (CONTRACT §8); None: none

    # ------------------------------------------------------------------ submit

    async def submit(
        self,
        request: TaskSubmittedData,
        *,
        idempotency_key: str | None = None,
        trace_id: str | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> TaskRecord:
        """Creates a task and hands it to the runners; returns its record (`last_event_id` = `task.submitted`).

        `trace_id` defaults to the current span's: call this inside the request's span so the task's trace
        starts there (the bus injects that context into `task.submitted` and the work message).
        """
        validate_submission(request)
        if not await self.agent_known(request.agent):
            raise UnknownAgent(
                "unknown_agent", f"no runner has offered an agent or crew named {request.agent!r}; see GET /v1/agents"
            )
        task_id = new_task_id()
        if idempotency_key is not None:
            idempotency_key = validate_idempotency_key(idempotency_key)
            # A repeat returns its first task whatever the limits say now: it creates nothing.
            earlier = await self.store.idempotency_owner(idempotency_key, tenant=tenant)
            if earlier is not None:
                return await self._repeat(earlier, request, trace_id)
        if self.limits is not None:
            await self.limits.admit(tenant, task_id)  # 429 before anything of the task exists
        try:
            if idempotency_key is not None:
                owner = await self.store.claim_idempotency_key(idempotency_key, task_id, tenant=tenant)
                if owner != task_id:
                    await self._withdraw(tenant, task_id)
                    return await self._repeat(owner, request, trace_id)
            if self.conversations is not None:  # the context's history, and the task listed in its context
                request = await self.conversations.prepare(request, tenant)
                await self.conversations.join(request, task_id, tenant)
        except BaseException:
            await self._withdraw(tenant, task_id)
            raise
        now = now_iso()
        record = TaskRecord(
            id=task_id,
            state="submitted",
            agent=request.agent,
            input=request.input,
            created_at=now,
            updated_at=now,
            metadata=request.metadata,
            context_id=request.context_id,
            trace_id=trace_id or current_trace_id() or None,
            tenant=tenant,
        )
        # If this fails, the record may exist all the same: the reconciler frees the place once it knows.
        await self.store.create(record)
        with task_scope(task_id):
            record = await self._hand_over(record, request, trace_id)
            log.info("task submitted", extra={"agent": request.agent})
        return record

    async def _hand_over(self, record: TaskRecord, request: TaskSubmittedData, trace_id: str | None) -> TaskRecord:
        task_id = record.id
        try:
            seq = await self.writer.emit(
                TaskSubmitted, task_id, request, msg_id=msgids.submitted(task_id), trace_id=trace_id
            )
            _, record = await self.store.update(task_id, _with_last_event(seq))
            work = WorkMessage(task_id=task_id, reason="submitted")
            await self.bus.publish(subjects.work(task_id), encode(work), msg_id=msgids.run_submitted(task_id))
        except Unavailable as exc:
            await self._fail_unsubmitted(task_id, exc, trace_id)
            raise
        return record

    async def _withdraw(self, tenant: str, task_id: str) -> None:
        if self.limits is not None:
            await self.limits.withdraw(tenant, task_id)

    async def _release(self, record: TaskRecord) -> None:
        """The task has ended (its terminal record is written): its place among its tenant's tasks is free."""
        if self.limits is not None:
            await self.limits.active.release(record)

    async def _fail_unsubmitted(self, task_id: str, cause: Unavailable, trace_id: str | None) -> None:
        """Best effort: a task the runners never received must not sit in `submitted` forever."""
        error = ErrorInfo(code="submit_failed", message=f"the task could not be handed to the runners: {cause.message}")

        def change(record: TaskRecord) -> TaskRecord | None:
            if record.state != "submitted":
                return None
            return msgspec.structs.replace(record, state="failed", error=error)

        try:
            before, after = await self.store.update(task_id, change)
            if after.terminal:
                await self._release(after)
            if before.state == "submitted" and after.state == "failed":
                seq = await self.writer.emit(
                    TaskFailed, task_id, TaskFailedData(error=error, usage=after.usage), msg_id=msgids.end(task_id),
                    trace_id=trace_id,
                )  # fmt: skip
                await self.store.update(task_id, _with_last_event(seq))
        except Unavailable as exc:
            log.warning("could not mark an unsubmitted task failed: %s", exc.message, extra={"task_id": task_id})

    async def _repeat(self, owner: str, request: TaskSubmittedData, trace_id: str | None) -> TaskRecord:
        """A repeated Idempotency-Key: the first task, its submission completed if its request died midway."""
        if not is_task_id(owner):
            raise Conflict("idempotency_key_in_use", "this Idempotency-Key belongs to no valid task; use another key")
        record = await self._wait_for_record(owner)
        if record.state == "submitted" and record.last_event_id is None:
            with task_scope(owner):
                record = await self._hand_over(record, request, trace_id)
        return record

    async def _wait_for_record(self, task_id: str) -> TaskRecord:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CLAIMANT_WAIT_S
        delay = 0.02
        while True:
            record = await self.store.find(task_id)
            if record is not None:
                return record
            if loop.time() > deadline:
                raise Conflict(
                    "idempotency_key_in_use",
                    "another request with this Idempotency-Key has not created its task; retry later or use a new key",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    # ------------------------------------------------------------------ read

    # Every read and change names the caller's tenant: another tenant's task is NotFound, exactly as no task.

    async def get(self, task_id: str, *, tenant: str = DEFAULT_TENANT) -> TaskRecord:
        record = await self.find(task_id, tenant=tenant)
        if record is None:
            raise _no_task(task_id)
        return record

    async def find(self, task_id: str, *, tenant: str = DEFAULT_TENANT) -> TaskRecord | None:
        record = await self.store.find(parse_task_id(task_id))
        return record if record is not None and record.tenant == tenant else None

    # ------------------------------------------------------------------ cancel

    async def cancel(self, task_id: str, reason: str = "", *, tenant: str = DEFAULT_TENANT) -> TaskRecord:
        """Cancels a task that has not ended (Conflict if it has). Returns the record, state `canceled`."""
        task_id = parse_task_id(task_id)
        reason = reason.strip() or "canceled by client"

        def change(record: TaskRecord) -> TaskRecord:
            if record.tenant != tenant:
                raise _no_task(task_id)
            if record.terminal:
                raise Conflict("task_terminal", f"task {task_id} has already ended ({record.state})")
            return msgspec.structs.replace(record, state="canceled")

        with task_scope(task_id):
            before, after = await self.store.update(task_id, change)
            await self._release(after)
            # From here the record says `canceled` and a retried cancel is a 409: only the terminal publish may
            # fail the request. The trace lookup and the runner notice are best effort (the record is the truth).
            try:
                headers, trace_id = await self._task_trace(task_id)
            except Unavailable as exc:
                log.warning("canceling without the task's trace context: %s", exc.message)
                headers, trace_id = None, after.trace_id
            with continue_span("cancel task", headers, attributes={"sluice.task_id": task_id}):
                notice = ControlMessage(task_id=task_id, action="cancel", reason=reason)
                try:
                    await self.bus.notify(subjects.control(task_id), encode(notice))
                except nats.errors.Error as exc:
                    log.warning("cancel notice not sent (the runner sees the record): %r", exc)
                if before.state in _UNATTENDED or not await self.work_pending(task_id):
                    # No runner holds the task, nor will one (no work message is left): nobody else writes its end.
                    event = self.writer.build(TaskCanceled, task_id, TaskCanceledData(reason=reason), trace_id=trace_id)
                    try:
                        seq = await LogGuard(self.bus, self.writer, task_id).publish(event, msg_id=msgids.end(task_id))
                    except TaskEnded as ended:  # a runner's end landed first: it stands
                        seq = ended.seq
                    _, after = await self.store.update(task_id, _with_last_event(seq))
                log.info("task canceled", extra={"previous_state": before.state})  # in the task's trace
        return after

    # ------------------------------------------------------------------ input

    async def provide_input(
        self, task_id: str, *, text: str | None = None, approve: bool | None = None, tenant: str = DEFAULT_TENANT
    ) -> TaskRecord:
        """Answers a task waiting in `input-required`: a text (`text`) or an approval decision (`approve`)."""
        task_id = parse_task_id(task_id)
        if (text is None) == (approve is None):
            raise InvalidInput("invalid_input", "give exactly one of `input` and `approve`")
        if text is not None and not text.strip():
            raise InvalidInput("invalid_input", "input must not be empty")
        record, ask = await answers.settled(self.bus, self.store, await self.get(task_id, tenant=tenant))
        if record.state != "input-required":
            raise Conflict("task_not_waiting", f"task {task_id} is {record.state}, not input-required")
        if ask is None:
            raise Conflict("task_not_waiting", f"task {task_id} has no pending question in its log")
        if text is None:
            text = "approved" if approve else "denied"
        data = TaskResumedData(input=text, approved=approve)
        with task_scope(task_id):
            headers, trace_id = await self._task_trace(task_id)
            with continue_span("resume task", headers, attributes={"sluice.task_id": task_id}):
                event = self.writer.build(TaskResumed, task_id, data, trace_id=trace_id)
                guard = LogGuard(self.bus, self.writer, task_id, last_seq=ask.seq)
                try:  # refused once the task has ended: an answer never lands after task.canceled
                    seq = await guard.publish(event, msg_id=msgids.resumed(task_id, ask.seq))
                except TaskEnded as ended:
                    raise Conflict("task_terminal", f"task {task_id} has already ended") from ended
                await self._check_ours(seq, data)

                def change(current: TaskRecord) -> TaskRecord:
                    if current.state != "input-required":
                        raise Conflict("task_not_waiting", f"task {task_id} is {current.state}, not input-required")
                    return msgspec.structs.replace(current, state="working", last_event_id=str(seq))

                _, record = await self.store.update(task_id, change)
                work = WorkMessage(task_id=task_id, reason="resumed")
                await self.bus.publish(
                    subjects.work(task_id), encode(work), msg_id=msgids.run_resumed(task_id, ask.seq)
                )
                log.info("task resumed", extra={"asked_at": ask.seq})  # in the task's trace
        return record

    async def work_pending(self, task_id: str) -> bool:
        """Is a work message for the task still in SLUICE_WORK (held by a runner, or waiting for one)? When NATS
        cannot say, assume so: a holder, the redelivery or the reconciler ends the task then."""
        try:
            await self.bus.js.get_last_msg(subjects.WORK_STREAM, subjects.work(task_id))
        except nats.js.errors.NotFoundError:
            return False
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("could not look for the task's work message: %r", exc)
        return True

    async def _check_ours(self, seq: int, data: TaskResumedData) -> None:
        """Two answers racing publish under one message id and JetStream keeps the first: was it this one?"""
        stored = await logview.event_at(self.bus, seq)
        if stored is None or getattr(decode_event(stored.payload), "data", None) != data:
            raise Conflict("input_already_given", "another answer to this question was recorded first")

    async def _task_trace(self, task_id: str) -> tuple[dict[str, str] | None, str | None]:
        """The trace context and trace id of the task, from its `task.submitted` event (None if unknown)."""
        submitted: LogEntry | None = await logview.last_of_type(self.bus, task_id, "task.submitted")
        if submitted is None:
            return None, None
        try:
            trace_id = decode_event(submitted.payload).trace_id or None
        except msgspec.DecodeError:
            trace_id = None
        return submitted.headers, trace_id
