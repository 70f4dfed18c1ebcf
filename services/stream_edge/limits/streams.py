"""Open event streams per tenant, across edge replicas (CONTRACT §8, `SLUICE_TENANT_MAX_STREAMS`).

Each edge counts its own open streams per tenant in memory, and tells the others through the bucket
`sluice-limits`; each edge watches the others' counts:

    streams.<tenant>.<edge_id> = "<count>"   written with a per-message TTL on change (coalesced) and every
                                            REFRESH_S while the count is not zero; a dead edge's keys expire
                                            (the server leaves a delete marker, which every watcher sees)

    hold(tenant): this edge's count + every other edge's last word < limit ─▶ counted until `release()`
                                                                           else ─▶ 429 tenant_limit

This edge's own count is exact; another edge's is as fresh as its last write (milliseconds behind, unless NATS is
slow), so streams opened at the same instant on two edges may both pass the last place. A stream limit is about
how much an abusive tenant can hold open, where that slack does not matter; the tasks limit, which must be exact,
is a compare-and-set (`sluice.active_tasks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from sluice import jsapi, subjects
from sluice.bus import Bus
from sluice.errors import RateLimited, Unavailable
from sluice.records import open_bucket, patiently

__all__ = ["REFRESH_S", "RETRY_AFTER_S", "OpenStreams", "StreamHold"]

log = logging.getLogger(__name__)

REFRESH_S = 2.0  # a live count is written again this often ...
_TTL_S = 6.0  # ... and vanishes this long after its last write (the server counts TTLs in whole seconds)
_MIN_GAP_S = 0.05  # between two rounds of writes: a burst of opens and closes is one write per tenant
RETRY_AFTER_S = 2
_WRITE_DEADLINE_S = 5.0
_PREFIX = "streams."


class StreamHold:
    """One counted stream; `release()` (idempotent) when it ends."""

    def __init__(self, owner: OpenStreams | None, tenant: str) -> None:
        self._owner = owner
        self.tenant = tenant

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._released(self.tenant)


class OpenStreams:
    def __init__(self, bus: Bus, limit: int, edge_id: str) -> None:
        self.bus = bus
        self.limit = limit  # 0: no limit (nothing counted, nothing written)
        self.edge_id = subjects.open_streams_key("t", edge_id).rsplit(".", 1)[1]  # validated as a key token
        self._mine: Counter[str] = Counter()
        self._theirs: dict[str, dict[str, int]] = {}  # tenant → edge id → count
        self._dirty: set[str] = set()
        self._changed = asyncio.Event()
        self._kv: KeyValue | None = None
        self._watcher: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, timeout_s: float = 10.0) -> None:
        """Watches the other edges' counts (loaded before this returns) and starts writing this edge's."""
        if not self.limit:
            return
        loaded = asyncio.Event()
        # An edge that starts while NATS elects a leader for the bucket's stream waits the election out (as for
        # every other bucket it opens) instead of exiting; then the counts must load within timeout_s.
        kv = self._kv = await open_bucket(self.bus.js, subjects.LIMITS_BUCKET)
        watcher = await patiently("watching open-stream counts", lambda: kv.watch(subjects.open_streams_keys()), 60.0)
        self._watcher = watcher
        try:
            async with asyncio.timeout(timeout_s):
                self._tasks.append(asyncio.create_task(self._follow(watcher, loaded), name="open-streams-watch"))
                await loaded.wait()
        except (nats.errors.Error, TimeoutError) as exc:
            await self.stop()
            raise Unavailable("limits_unavailable", f"the open-stream counts could not be read: {exc!r}") from exc
        self._tasks.append(asyncio.create_task(self._write_forever(), name="open-streams-write"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._watcher is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._watcher.stop()
            self._watcher = None
        if self._kv is not None:  # a clean stop leaves no count behind (a crash: the TTL removes it)
            for tenant in list(self._mine):
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._kv.delete(subjects.open_streams_key(tenant, self.edge_id))

    # ------------------------------------------------------------------ counting

    def open_count(self, tenant: str) -> int:
        """The tenant's open streams on every edge, as this edge knows them."""
        return self._mine[tenant] + sum(self._theirs.get(tenant, {}).values())

    def try_hold(self, tenant: str) -> StreamHold | None:
        """Counts one more open stream of `tenant`, or None if it has its limit open."""
        if not self.limit:
            return StreamHold(None, tenant)
        if self.open_count(tenant) >= self.limit:
            return None
        self._mine[tenant] += 1
        self._touch(tenant)
        return StreamHold(self, tenant)

    def hold(self, tenant: str) -> StreamHold:
        """Counts one more open stream of `tenant`; `RateLimited` (429) if it has its limit open."""
        held = self.try_hold(tenant)
        if held is None:
            raise RateLimited(
                "tenant_limit",
                f"tenant {tenant} has {self.limit} event streams open, its limit; close one or retry later",
                retry_after_s=RETRY_AFTER_S,
            )
        return held

    def _released(self, tenant: str) -> None:
        self._mine[tenant] -= 1
        self._touch(tenant)

    def _touch(self, tenant: str) -> None:
        self._dirty.add(tenant)
        self._changed.set()

    # ------------------------------------------------------------------ telling the others

    async def _write_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_S):
                    await self._changed.wait()
            self._changed.clear()
            dirty, self._dirty = self._dirty, set()
            live = {tenant for tenant, count in self._mine.items() if count > 0}
            for tenant in dirty | live:
                await self._write(tenant, self._mine[tenant])
                if self._mine[tenant] <= 0:
                    self._mine.pop(tenant, None)  # written once as 0; it expires with its TTL
            await asyncio.sleep(_MIN_GAP_S)

    async def _write(self, tenant: str, count: int) -> None:
        subject = jsapi.kv_key(subjects.LIMITS_BUCKET, subjects.open_streams_key(tenant, self.edge_id))
        try:
            async with asyncio.timeout(_WRITE_DEADLINE_S):
                await self.bus.js.publish(subject, str(count).encode(), msg_ttl=_TTL_S)
        except (nats.errors.Error, TimeoutError) as exc:  # NATS is away: the next round writes it again
            log.warning("open-stream count not written: %s", exc or type(exc).__name__, extra={"tenant": tenant})
            self._dirty.add(tenant)

    # ------------------------------------------------------------------ hearing the others

    async def _follow(self, watcher: Any, loaded: asyncio.Event) -> None:
        async for entry in watcher:
            if entry is None:  # the end of the entries that existed when the watch began
                loaded.set()
                continue
            self._apply(entry.key, entry.value, deleted=entry.operation in ("DEL", "PURGE"))

    def _apply(self, key: str, value: bytes | None, *, deleted: bool) -> None:
        parts = key.removeprefix(_PREFIX).split(".")
        if len(parts) != 2 or parts[1] == self.edge_id:
            return
        tenant, edge = parts
        try:
            count = 0 if deleted or not value else int(value)
        except ValueError:
            log.warning("unreadable open-stream count ignored", extra={"key": key})
            return
        theirs = self._theirs.setdefault(tenant, {})
        if count > 0:
            theirs[edge] = count
        else:
            theirs.pop(edge, None)
            if not theirs:
                del self._theirs[tenant]
