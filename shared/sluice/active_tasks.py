"""The tasks each tenant has unfinished at once (CONTRACT §8, `SLUICE_TENANT_MAX_ACTIVE`), counted in NATS.

One key per tenant in the bucket `sluice-limits`, `active.<tenant>`, holds the tenant's unfinished tasks (task id →
when it was taken), changed only by compare-and-set, so no two edge replicas can both take the last place:

    the edge, before the task exists   take: add the id if fewer than `limit` are held, else refused (429)
    whoever writes the terminal record  free: remove the id (agent-runner, the edge's cancel of an unheld task or
                                        its failed submission) — `release(record)`, best effort
    the reconciler                      heal: remove ids whose task is terminal, or still has no record after a grace
                                        (a writer that died between its terminal record and the free, or an edge
                                        that died between the take and the record)

Why one key per tenant and not one key per place (`active.<tenant>.<n>`, taken with a create): refusing a tenant at
its limit costs one read here, where slot keys would have to be probed one by one — an abusive tenant's refused
requests would cost the limit's worth of round trips each; and freeing needs only what every record carries (its id
and tenant), so no record has to remember a slot. The price is compare-and-set contention between creations of one
tenant at the same moment, retried below and bounded by the creation rate limit; and the value grows with the
limit (about 40 bytes a task), hence `MAX_LIMIT`.

An unfinished task is `submitted`, `working` or `input-required`: a task waiting for an answer holds its place.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import msgspec
import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from sluice import subjects
from sluice.errors import Unavailable
from sluice.events import TaskRecord
from sluice.records import patiently

__all__ = ["MAX_LIMIT", "ActiveTasks"]

log = logging.getLogger(__name__)

MAX_LIMIT = 10_000
_CAS_ATTEMPTS = 30
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, int])


class ActiveTasks:
    """The `active.<tenant>` keys of `sluice-limits`. Safe to share between concurrent requests."""

    def __init__(self, kv: KeyValue, *, deadline_s: float = 30.0) -> None:
        self.kv = kv
        self.deadline_s = deadline_s

    async def take(self, tenant: str, task_id: str, limit: int) -> bool:
        """Counts `task_id` among the tenant's unfinished tasks if fewer than `limit` are; False if not."""
        for _ in range(_CAS_ATTEMPTS):
            held, revision = await self._read(tenant)
            if task_id in held:  # ours already (a retried write whose answer was lost)
                return True
            if len(held) >= limit:
                return False
            held[task_id] = int(time.time())
            if await self._write(tenant, held, revision):
                return True
            await _pause()
        raise Unavailable("limit_contention", f"the active tasks of tenant {tenant} changed too often; retry")

    async def free(self, tenant: str, task_ids: set[str]) -> int:
        """Removes these tasks from the tenant's unfinished ones; returns how many were there."""
        for _ in range(_CAS_ATTEMPTS):
            held, revision = await self._read(tenant)
            gone = task_ids & held.keys()
            if not gone:
                return 0
            for task_id in gone:
                del held[task_id]
            if await self._write(tenant, held, revision):
                return len(gone)
            await _pause()
        raise Unavailable("limit_contention", f"the active tasks of tenant {tenant} changed too often; retry")

    async def release(self, record: TaskRecord) -> None:
        """The task has ended: its place is free. Best effort — if NATS cannot say, the reconciler frees it."""
        try:
            await self.free(record.tenant, {record.id})
        except Unavailable as exc:
            log.warning("a finished task's place is not freed yet: %s", exc.message, extra={"task_id": record.id})

    async def held(self, tenant: str) -> dict[str, int]:
        """The tenant's unfinished tasks: task id → when it was taken (epoch seconds)."""
        held, _ = await self._read(tenant)
        return held

    async def tenants(self) -> list[str]:
        """Every tenant that has (or had) unfinished tasks counted: a watch of the `active.*` keys alone."""
        found: list[str] = []
        try:
            async with asyncio.timeout(self.deadline_s):
                watcher = await self.kv.watch(subjects.active_tasks_keys(), ignore_deletes=True, meta_only=True)
                try:
                    async for entry in watcher:
                        if entry is None:  # the watcher's "that is everything that exists" marker
                            break
                        found.append(entry.key.split(".", 1)[1])
                finally:
                    await watcher.stop()
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable("nats_unavailable", f"listing active tasks: {type(exc).__name__}") from exc
        return found

    async def _read(self, tenant: str) -> tuple[dict[str, int], int]:
        key = subjects.active_tasks_key(tenant)
        try:
            entry = await patiently("reading active tasks", lambda: self.kv.get(key), self.deadline_s)
        except nats.js.errors.KeyNotFoundError:
            return {}, 0
        try:
            return (_decoder.decode(entry.value) if entry.value else {}), entry.revision or 0
        except msgspec.DecodeError:  # not ours to read: start afresh (the reconciler's sweep heals what it held)
            log.error("unreadable active tasks entry replaced", extra={"key": key})
            return {}, entry.revision or 0

    async def _write(self, tenant: str, held: dict[str, int], revision: int) -> bool:
        """Compare-and-set; False when another writer changed the key first."""
        key, value = subjects.active_tasks_key(tenant), _encoder.encode(held)
        try:
            if revision == 0:
                await patiently("writing active tasks", lambda: self.kv.create(key, value), self.deadline_s)
            else:
                await patiently(
                    "writing active tasks", lambda: self.kv.update(key, value, last=revision), self.deadline_s
                )
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True


async def _pause() -> None:
    """A short random wait before trying again, so that writers that collided do not collide again."""
    await asyncio.sleep(random.uniform(0.0, 0.02))
