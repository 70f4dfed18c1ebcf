"""The reconciler: no task stays `submitted` or `working` with nobody working on it (CONTRACT §11).

A write that fails half-way leaves a task that nothing will move: the edge stored the record and `task.submitted`
and then NATS went away before the work message was stored (the edge's own fallback, failing the task, needs NATS
too); or a resume stored `task.resumed` and the record but not the work message; or a cancel stored the record but
not `task.canceled`. Such a task has no work message in SLUICE_WORK — a task a runner holds, or that waits for
one, always has one — so that is what the reconciler looks for:

    record submitted | working, unchanged for grace_s, no work message ─▶ a new work message (any runner takes it)
    record input-required, unchanged for grace_s, its question answered in the log (`task.resumed` after the last
        `task.input_required`: the answer was stored, then the edge died) ─▶ the resume finished: record working,
                                                                  and the work message the edge would have sent
    record canceled | failed, changed within the last hour, no terminal event in the log ─▶ the terminal event
                                                                  (through the log guard: never a second one)
    a task counted among its tenant's unfinished ones (sluice.active_tasks) whose record is terminal, or that has
    no record grace_s after its place was taken ─▶ its place freed (its writer died before freeing it)

Exactly one edge reconciles at a time: the holder of the lease `reconciler` in the KV bucket `sluice-leases`,
whose entries expire `LEASE_S` after their last write. The holder renews it on every sweep; another edge takes it
over when it expires (its holder died or hung). Sweeping reads every task record (the keys of `sluice-tasks`):
cheap for thousands of records, a scan for millions — then the open tasks want an index of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime

import msgspec
import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from sluice import msgids, subjects
from sluice.active_tasks import ActiveTasks
from sluice.errors import SluiceError, TaskEnded
from sluice.eventlog import read_log
from sluice.events import (
    TERMINAL_TYPES,
    ErrorInfo,
    Event,
    TaskCanceled,
    TaskCanceledData,
    TaskFailed,
    TaskFailedData,
    TaskRecord,
    encode,
)
from sluice.guard import LogGuard
from sluice.ids import is_task_id
from sluice.logs import task_scope
from sluice.messages import WorkMessage
from stream_edge import logview
from stream_edge.commands import TaskService

__all__ = ["LEASE_KEY", "LEASE_S", "Lease", "Reconciler"]

log = logging.getLogger(__name__)

LEASE_KEY = "reconciler"
LEASE_S = 15.0  # the bucket's max age (shared/sluice/provision.py): a lease not renewed for this long is free
_ENDS_LOOKED_AT_S = 3600.0  # terminal records changed longer ago than this are not checked for their event


class Lease:
    """One holder at a time of a key in `sluice-leases` (create to take it, compare-and-set to renew it)."""

    def __init__(self, kv: KeyValue, key: str, holder: str) -> None:
        self.kv = kv
        self.key = key
        self.holder = holder.encode()
        self._revision: int | None = None

    @property
    def held(self) -> bool:
        return self._revision is not None

    async def hold(self) -> bool:
        """Takes the lease if it is free, renews it if it is ours; False if someone else holds it."""
        try:
            if self._revision is None:
                self._revision = await self.kv.create(self.key, self.holder)
            else:
                self._revision = await self.kv.update(self.key, self.holder, last=self._revision)
        except nats.js.errors.KeyWrongLastSequenceError:  # another holder's, or ours expired and was taken
            self._revision = None
        return self.held

    async def release(self) -> None:
        if self._revision is not None:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                await self.kv.delete(self.key, last=self._revision)
            self._revision = None


class Reconciler:
    def __init__(
        self,
        tasks: TaskService,
        lease: Lease,
        *,
        interval_s: float,
        grace_s: float,
        active: ActiveTasks | None = None,
    ) -> None:
        self.tasks = tasks
        self.lease = lease
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.active = active
        self.repaired = 0
        self.freed = 0  # places among tenants' unfinished tasks given back by the sweep

    async def run(self, stopping: asyncio.Event) -> None:
        """Sweeps every `interval_s` while it holds the lease, until `stopping`."""
        try:
            while not stopping.is_set():
                try:
                    if await self.lease.hold():
                        await self.sweep()
                except (SluiceError, nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                    log.warning("reconciler sweep failed: %s", exc)  # NATS is out: the next sweep tries again
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), self.interval_s)
        finally:
            await self.lease.release()

    async def sweep(self) -> int:
        """One pass over the task records; returns how many tasks it repaired."""
        repaired = 0
        try:
            keys = await self.tasks.store.kv.keys()
        except nats.js.errors.NoKeysError:
            keys = []
        for key in keys:
            if not is_task_id(key):
                continue  # idempotency keys and the like
            record = await self.tasks.store.find(key)
            if record is not None and await self._repair(record):
                repaired += 1
        self.repaired += repaired
        if self.active is not None:
            self.freed += await self.free_places()
        return repaired

    async def free_places(self) -> int:
        """Frees the places of tasks that ended (or never got a record) whose writer died before freeing them."""
        assert self.active is not None
        freed = 0
        for tenant in await self.active.tenants():
            done: set[str] = set()
            for task_id, taken_at in (await self.active.held(tenant)).items():
                record = await self.tasks.store.find(task_id) if is_task_id(task_id) else None
                if record is None and time.time() - taken_at < self.grace_s:
                    continue  # the edge that took the place may still be creating the record
                if record is None or record.terminal or record.tenant != tenant:
                    done.add(task_id)
            if done:
                freed += await self.active.free(tenant, done)
                log.warning("places of ended tasks freed", extra={"tenant": tenant, "freed": len(done)})
        return freed

    async def _repair(self, record: TaskRecord) -> bool:
        age_s = time.time() - _epoch(record.updated_at)
        if age_s < self.grace_s:
            return False  # a writer may still be in the middle of it
        with task_scope(record.id):
            if record.state in ("submitted", "working"):
                if await self.tasks.work_pending(record.id):
                    return False
                work = WorkMessage(task_id=record.id, reason="submitted" if record.state == "submitted" else "resumed")
                msg_id = msgids.run_reconciled(record.id, record.updated_at)
                await self.tasks.bus.publish(subjects.work(record.id), encode(work), msg_id=msg_id)
                log.warning("stranded %s task re-enqueued", record.state, extra={"stranded_s": round(age_s, 1)})
                return True
            if record.state == "input-required":
                return await self._finish_resume(record)
            if record.state in ("canceled", "failed") and age_s < _ENDS_LOOKED_AT_S:
                return await self._end(record)
        return False

    async def _finish_resume(self, record: TaskRecord) -> bool:
        """An answer stored in the log whose record and work message never followed (the edge died, or NATS went
        away, between them): nothing else will ever move the task — a client's retry of the answer would be told
        the question is answered. Does what the edge would have done next, with its own message ids."""
        bus = self.tasks.bus
        ask = await logview.last_of_type(bus, record.id, "task.input_required")
        answer = await logview.last_of_type(bus, record.id, "task.resumed")
        if ask is None or answer is None or answer.seq < ask.seq:
            return False  # waiting for its answer, as it should

        def resume(current: TaskRecord) -> TaskRecord | None:
            if current.state != "input-required":
                return None  # its writer caught up meanwhile
            return msgspec.structs.replace(current, state="working", last_event_id=str(answer.seq))

        before, _ = await self.tasks.store.update(record.id, resume)
        if before.state != "input-required":
            return False
        work = WorkMessage(task_id=record.id, reason="resumed")
        await bus.publish(subjects.work(record.id), encode(work), msg_id=msgids.run_resumed(record.id, ask.seq))
        log.warning("answered task's resume finished", extra={"asked_at": ask.seq, "answered_at": answer.seq})
        return True

    async def _end(self, record: TaskRecord) -> bool:
        lifecycle = subjects.lifecycle_of_task(record.id)
        async for entry in read_log(self.tasks.bus, record.id, filter_subject=lifecycle):
            if entry.type in TERMINAL_TYPES:
                return False
        event: Event
        writer = self.tasks.writer
        if record.state == "canceled":
            event = writer.build(TaskCanceled, record.id, TaskCanceledData(reason="canceled"), trace_id=record.trace_id)
        else:
            error = record.error or ErrorInfo(code="failed", message="the task failed")
            event = writer.build(TaskFailed, record.id, TaskFailedData(error=error, usage=record.usage),
                                 trace_id=record.trace_id)  # fmt: skip
        try:
            seq = await LogGuard(self.tasks.bus, writer, record.id).publish(event, msg_id=msgids.end(record.id))
        except TaskEnded:
            return False
        await self.tasks.store.update(record.id, lambda r: msgspec.structs.replace(r, last_event_id=str(seq)))
        log.warning("the %s task's missing terminal event published", record.state, extra={"event_id": seq})
        return True


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
