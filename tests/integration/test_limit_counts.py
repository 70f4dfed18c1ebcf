"""The limits' counts in NATS stay exact when replicas count at the same moment (CONTRACT §8): creations racing on
two connections — as two edges would — never take more places, nor count more creations, than the limit."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from sluice import subjects
from sluice.active_tasks import ActiveTasks
from sluice.bus import Bus, connect
from sluice.config import CommonConfig
from sluice.errors import RateLimited
from sluice.ids import new_task_id
from stream_edge.limits import CreationRate
from stream_edge.limits.rate import WINDOW_S

pytestmark = pytest.mark.timeout(60)

LIMIT = 5
RACERS = 24


async def test_racing_takes_on_two_connections_never_pass_the_limit(common_config: CommonConfig, bus: Bus) -> None:
    other = await connect(common_config, name="sluice-tests-second-edge")
    try:
        replicas = [ActiveTasks(await b.js.key_value(subjects.LIMITS_BUCKET)) for b in (bus, other)]
        tenant = f"race-{uuid.uuid4().hex[:8]}"
        ids = [new_task_id() for _ in range(RACERS)]
        taken = await asyncio.gather(*(replicas[n % 2].take(tenant, task_id, LIMIT) for n, task_id in enumerate(ids)))
        assert sum(taken) == LIMIT
        held = await replicas[0].held(tenant)
        assert set(held) == {task_id for task_id, ok in zip(ids, taken, strict=True) if ok}
        # Freed places are taken again, still never more than the limit.
        assert await replicas[1].free(tenant, set(held)) == LIMIT
        again = await asyncio.gather(*(replicas[n % 2].take(tenant, new_task_id(), LIMIT) for n in range(RACERS)))
        assert sum(again) == LIMIT
    finally:
        await other.close()


async def test_racing_creations_on_two_connections_count_exactly_the_rate(
    common_config: CommonConfig, bus: Bus
) -> None:
    other = await connect(common_config, name="sluice-tests-second-edge")
    try:
        rates = [CreationRate(b.js, LIMIT) for b in (bus, other)]
        tenant = f"race-{uuid.uuid4().hex[:8]}"
        window = int(time.time() // WINDOW_S)
        outcomes = await asyncio.gather(*(rates[n % 2].count(tenant) for n in range(RACERS)), return_exceptions=True)
        crossed = int(time.time() // WINDOW_S) != window  # a new minute began mid-race: two windows counted
        counted = [o for o in outcomes if o is None]
        refusals = [o for o in outcomes if isinstance(o, RateLimited)]
        assert len(counted) + len(refusals) == RACERS, [o for o in outcomes if o is not None and o not in refusals]
        assert len(counted) == LIMIT or (crossed and LIMIT < len(counted) <= 2 * LIMIT)
        assert all(r.code == "tenant_limit" and 1 <= r.retry_after_s <= WINDOW_S for r in refusals)
    finally:
        await other.close()
