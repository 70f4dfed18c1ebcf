"""Task creations per tenant per minute (CONTRACT §8, `SLUICE_TENANT_RATE`), counted in NATS across replicas.

One key per tenant and minute window in `sluice-limits`, `rate.<tenant>.<minute>` (the minute since the epoch),
holding the number of creations counted in it. Each creation reads the count and writes count + 1 conditioned on
the revision it read (compare-and-set), so replicas counting at the same moment never both take the last one.
Every write carries a per-message TTL of two windows: the server removes old windows by itself.

A fixed window lets a tenant make up to twice the rate across one window boundary; that is the accepted price of
one key read and one write per creation.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import time

import nats.js.errors
from nats.js import JetStreamContext

from sluice import jsapi, subjects
from sluice.bus import WRONG_LAST_SEQUENCE
from sluice.errors import RateLimited, Unavailable
from sluice.records import patiently

__all__ = ["WINDOW_S", "CreationRate"]

WINDOW_S = 60
_TTL_S = 2 * WINDOW_S
_CAS_ATTEMPTS = 30
_EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"


class CreationRate:
    def __init__(self, js: JetStreamContext, per_minute: int, *, deadline_s: float = 30.0) -> None:
        self.js = js
        self.per_minute = per_minute
        self.deadline_s = deadline_s

    async def count(self, tenant: str) -> None:
        """Counts one creation of `tenant` in this window; `RateLimited` (nothing counted) when it is full."""
        kv = await self.js.key_value(subjects.LIMITS_BUCKET)
        for _ in range(_CAS_ATTEMPTS):
            now = time.time()
            key = subjects.creations_key(tenant, int(now // WINDOW_S))
            try:
                entry = await patiently("reading a creation count", functools.partial(kv.get, key), self.deadline_s)
                count, revision = int(entry.value or b"0"), entry.revision or 0
            except nats.js.errors.KeyNotFoundError as missing:  # a new window (or an expired one's marker)
                deleted = getattr(missing, "entry", None)
                count, revision = 0, (deleted.revision or 0) if deleted is not None else 0
            if count >= self.per_minute:
                retry_after = max(1, math.ceil(WINDOW_S - now % WINDOW_S))
                raise RateLimited(
                    "tenant_limit",
                    f"tenant {tenant} has made its {self.per_minute} task creations this minute; retry after "
                    f"{retry_after}s",
                    retry_after_s=retry_after,
                )
            if await self._write(key, count + 1, revision):
                return
            await asyncio.sleep(random.uniform(0.0, 0.02))
        raise Unavailable("limit_contention", f"the creation count of tenant {tenant} changed too often; retry")

    async def _write(self, key: str, count: int, revision: int) -> bool:
        """Compare-and-set with the window's TTL; False when another creation was counted first."""
        headers = {_EXPECTED_LAST: str(revision)}
        subject = jsapi.kv_key(subjects.LIMITS_BUCKET, key)

        async def publish() -> None:
            try:
                await self.js.publish(subject, str(count).encode(), headers=headers, msg_ttl=_TTL_S)
            except nats.js.errors.APIError as exc:
                if exc.err_code in WRONG_LAST_SEQUENCE:  # an answer, not a failure: `patiently` passes it on
                    raise nats.js.errors.KeyWrongLastSequenceError(description=exc.description) from exc
                raise

        try:
            await patiently("counting a creation", publish, self.deadline_s)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True
