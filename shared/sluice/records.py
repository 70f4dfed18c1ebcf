"""Task records in the KV bucket `sluice-tasks`, changed only by compare-and-set.

The record is the truth about a task's state (cancel is decided here); every writer reads a revision, computes
the new record and writes it conditioned on that revision, retrying when another writer got there first.

NATS errors are translated here: a request JetStream cannot answer for the moment (a leader election of the
bucket's stream, a reconnect) is sent again until `deadline_s`, then fails as `Unavailable`. Resending is safe: a
write whose answer was lost is recognised on the retry (the bucket already holds exactly what we wrote). A write
refused because the bucket is at its byte limit (which JetStream also answers with 503) is not resent: it fails at
once as `StorageFull`, naming the bucket and its setting.

Every record written keeps at most `RECORD_OUTPUT_MAX_BYTES` of its task's output (`output_truncated` then says so;
the whole output is in the log), so a long answer can never make a record too large to write.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from sluice import limits, subjects
from sluice.clock import now_iso
from sluice.errors import NotFound, Unavailable
from sluice.events import TaskRecord, decode_record, encode
from sluice.ids import DEFAULT_TENANT, parse_task_id, parse_tenant

__all__ = ["TaskStore", "open_bucket", "patiently"]

_CAS_ATTEMPTS = 20
# JetStream cannot answer right now (no leader yet, no responders, a reconnect): worth asking again.
_NOT_YET = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
)
T = TypeVar("T")


class TaskStore:
    def __init__(self, kv: KeyValue, *, deadline_s: float = 30.0, js: JetStreamContext | None = None) -> None:
        self.kv = kv
        self.js = js  # for listing a tenant's tasks (`tenant_records`)
        self.deadline_s = deadline_s
        self.store = limits.store_named(subjects.TASKS_BUCKET)

    async def create(self, record: TaskRecord) -> None:
        """Writes a new record, then lists it under its tenant (the index ListTasks reads)."""
        if record.stream_token is not None:  # a bearer credential: never stored
            record = msgspec.structs.replace(record, stream_token=None)
        key, payload = parse_task_id(record.id), encode(_capped(record))
        try:
            await self._patiently(f"creating task {key}", lambda: self.kv.create(key, payload))
        except nats.js.errors.KeyWrongLastSequenceError:
            if not await self._holds(key, payload):  # else: our own create, whose answer was lost
                raise
        index = subjects.tenant_index_key(record.tenant, key)
        await self._patiently(f"indexing task {key}", lambda: self.kv.put(index, b""))

    async def tenant_records(self, tenant: str, *, concurrency: int = 32) -> list[TaskRecord]:
        """The current record of every task of one tenant, read through the tenant's index keys only (never a
        scan of the bucket): what a listing costs is what that tenant has."""
        # The index keys' subjects, as the stream reports them. (A KV watch stopped at its "nothing pending"
        # marker can miss every key: nats-py puts that marker first when the consumer's entries are on their way
        # but not yet received, and the listing came back empty.)
        if self.js is None:
            raise RuntimeError("listing a tenant's tasks needs the store's JetStream context (TaskStore(js=...))")
        prefix = f"$KV.{subjects.TASKS_BUCKET}."
        try:
            async with asyncio.timeout(self.deadline_s):
                info = await self.js.stream_info(
                    f"KV_{subjects.TASKS_BUCKET}", subjects_filter=prefix + subjects.tenant_index_keys(tenant)
                )
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable("nats_unavailable", f"listing the tasks of a tenant: {type(exc).__name__}") from exc
        task_ids = [subject.rsplit(".", 1)[-1] for subject in (info.state.subjects or {})]
        limit = asyncio.Semaphore(concurrency)

        async def read(task_id: str) -> TaskRecord | None:
            async with limit:
                record = await self.find(task_id)
            return record if record is not None and record.tenant == tenant else None

        found = await asyncio.gather(*(read(task_id) for task_id in task_ids))
        return [record for record in found if record is not None]

    async def get(self, task_id: str) -> TaskRecord:
        record, _ = await self._get(task_id)
        return record

    async def find(self, task_id: str) -> TaskRecord | None:
        try:
            return await self.get(task_id)
        except NotFound:
            return None

    async def _get(self, task_id: str) -> tuple[TaskRecord, int]:
        key = parse_task_id(task_id)
        try:
            entry = await self._patiently(f"reading task {key}", lambda: self.kv.get(key))
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
            after = _capped(after)
            after.updated_at = now_iso()
            payload = encode(after)
            write = _Counted(functools.partial(self.kv.update, task_id, payload, last=revision))
            try:
                await self._patiently(f"updating task {task_id}", write)
                return before, after
            except nats.js.errors.KeyWrongLastSequenceError:
                # Sent again after a lost answer, our first write may be what is stored now. Only then: another
                # writer's change can be byte for byte the same as ours (two cancels in the same millisecond),
                # and that one is not ours to report as done.
                if write.calls > 1 and await self._holds(task_id, payload):
                    return before, after
                continue
        raise Unavailable("record_contention", f"task {task_id} record changed {_CAS_ATTEMPTS} times under us")

    async def claim_idempotency_key(self, key: str, task_id: str, tenant: str = DEFAULT_TENANT) -> str:
        """First writer wins: returns the task id the key belongs to (ours, or an earlier task's). Keys are per
        tenant: the same key sent by two tenants names two tasks."""
        entry_key = _idempotency_entry(key, tenant)
        try:
            await self._patiently("claiming an idempotency key", lambda: self.kv.create(entry_key, task_id.encode()))
            return task_id
        except nats.js.errors.KeyWrongLastSequenceError:
            entry = await self._patiently("reading an idempotency key", lambda: self.kv.get(entry_key))
            return (entry.value or b"").decode()

    async def idempotency_owner(self, key: str, tenant: str = DEFAULT_TENANT) -> str | None:
        """The task id an idempotency key of `tenant` belongs to; None if no request of it has claimed it."""
        entry_key = _idempotency_entry(key, tenant)
        try:
            entry = await self._patiently("reading an idempotency key", lambda: self.kv.get(entry_key))
        except nats.js.errors.KeyNotFoundError:
            return None
        return (entry.value or b"").decode() or None

    async def _holds(self, key: str, payload: bytes) -> bool:
        """Does the bucket hold exactly `payload` under `key` now?"""
        try:
            entry = await self._patiently(f"reading {key}", lambda: self.kv.get(key))
        except nats.js.errors.KeyNotFoundError:
            return False
        return entry.value == payload

    async def _patiently(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        return await patiently(what, request, self.deadline_s, store=self.store)


class _Counted(Generic[T]):
    """A request that counts how often it was sent."""

    def __init__(self, request: Callable[[], Awaitable[T]]) -> None:
        self.request = request
        self.calls = 0

    def __call__(self) -> Awaitable[T]:
        self.calls += 1
        return self.request()


def _capped(record: TaskRecord) -> TaskRecord:
    """The record with at most RECORD_OUTPUT_MAX_BYTES of output, cut at a character boundary."""
    raw = (record.output or "").encode()
    if len(raw) <= limits.RECORD_OUTPUT_MAX_BYTES:
        return record
    kept = raw[: limits.RECORD_OUTPUT_MAX_BYTES].decode("utf-8", errors="ignore")
    return msgspec.structs.replace(record, output=kept, output_truncated=True)


def _idempotency_entry(key: str, tenant: str) -> str:
    # The default tenant keeps the digest of the bare key (keys claimed before tenants stay valid); a key is
    # printable ASCII, so it can never contain the NUL that separates another tenant's name from its key.
    material = key if tenant == DEFAULT_TENANT else f"{parse_tenant(tenant)}\x00{key}"
    return subjects.idempotency_key(hashlib.sha256(material.encode()).hexdigest()[:48])


def _not_yet(exc: BaseException) -> bool:
    full = isinstance(exc, nats.js.errors.APIError) and getattr(exc, "err_code", None) == limits.STORE_FULL
    return isinstance(exc, _NOT_YET) and not full


async def patiently(
    what: str, request: Callable[[], Awaitable[T]], deadline_s: float, *, store: str = "the bucket"
) -> T:
    """`request()`, sent again while JetStream cannot answer yet, until `deadline_s`; NATS failures that remain
    become `Unavailable` (a full `store`: `StorageFull`, at once). Answers (not found, wrong revision) pass through
    for the caller to decide."""
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_not_yet),
            wait=wait_exponential_jitter(multiplier=0.05, max=1.0, jitter=0.05),
            stop=stop_after_delay(deadline_s),
            reraise=True,
        ):
            with attempt:
                return await request()
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyWrongLastSequenceError):
        raise
    except (nats.errors.Error, TimeoutError) as exc:
        if (too_big := limits.refused_for_size(exc, what, store)) is not None:
            raise too_big from exc
        raise Unavailable("nats_unavailable", f"{what}: {type(exc).__name__}") from exc
    raise AssertionError("unreachable: tenacity returns or raises")


async def open_bucket(js: JetStreamContext, bucket: str, *, deadline_s: float = 60.0) -> KeyValue:
    """A KV bucket, asked for again while JetStream cannot answer: a service that starts while NATS elects a new
    leader for the bucket's stream (a node was lost) waits the election out instead of exiting."""
    return await patiently(f"opening bucket {bucket}", lambda: js.key_value(bucket), deadline_s)
