"""Task records in the KV bucket `sluice-tasks`, changed only by compare-and-set.

The record is the truth about a task's state (cancel is decided here); every writer reads a revision, computes
the new record and writes it conditioned on that revision, retrying when another writer got there first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import nats.js.errors
from nats.js.kv import KeyValue

from sluice.clock import now_iso
from sluice.errors import NotFound, Unavailable
from sluice.events import TaskRecord, decode_record, encode
from sluice.ids import parse_task_id

__all__ = ["TaskStore"]

_CAS_ATTEMPTS = 20


class TaskStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def create(self, record: TaskRecord) -> None:
        await self.kv.create(parse_task_id(record.id), encode(record))

    async def get(self, task_id: str) -> TaskRecord:
        record, _ = await self._get(task_id)
        return record

    async def find(self, task_id: str) -> TaskRecord | None:
        try:
            return await self.get(task_id)
        except NotFound:
            return None

    async def _get(self, task_id: str) -> tuple[TaskRecord, int]:
        try:
            entry = await self.kv.get(parse_task_id(task_id))
        except nats.js.errors.KeyNotFoundError:
            raise NotFound("task_not_found", f"no task {task_id}") from None
        if entry.value is None or entry.revision is None:
            raise NotFound("task_not_found", f"no task {task_id}")
        return decode_record(entry.value), entry.revision

    async def update(
        self, task_id: str, change: Callable[[TaskRecord], TaskRecord | None]
    ) -> tuple[TaskRecord, TaskRecord]:
        """Applies `change` atomically; returns (before, after). `change` returns None to leave it as is, or
        raises (e.g. Conflict) to refuse — it may be called several times if writers race, so keep it pure."""
        for _ in range(_CAS_ATTEMPTS):
            before, revision = await self._get(task_id)
            after = change(before)
            if after is None:
                return before, before
            after.updated_at = now_iso()
            try:
                await self.kv.update(task_id, encode(after), last=revision)
                return before, after
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
        raise Unavailable("record_contention", f"task {task_id} record changed {_CAS_ATTEMPTS} times under us")

    async def claim_idempotency_key(self, key: str, task_id: str) -> str:
        """First writer wins: returns the task id the key belongs to (ours, or an earlier task's)."""
        digest = hashlib.sha256(key.encode()).hexdigest()[:48]
        entry_key = f"idem.{digest}"
        try:
            await self.kv.create(entry_key, task_id.encode())
            return task_id
        except nats.js.errors.KeyWrongLastSequenceError:
            entry = await self.kv.get(entry_key)
            return (entry.value or b"").decode()
