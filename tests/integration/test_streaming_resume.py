"""Property: a client that keeps reconnecting with the last id it saw receives the task's log exactly once, in order.

Random histories (interleaved with another task's events, so ids are not contiguous), published partly before
and partly while the client reads; random disconnect points; SSE and NDJSON alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.bus import Bus
from sluice.eventlog import read_log
from sluice.ids import new_task_id
from stream_edge.streaming import StreamSettings
from support.edge_streaming import HubUnderTest, publish, read_stream, serving_hub


@pytest.fixture(scope="module")
async def edge(bus: Bus) -> AsyncIterator[HubUnderTest]:
    async with serving_hub(bus, StreamSettings(heartbeat_s=0.5)) as served:
        yield served


BODY = st.lists(st.sampled_from(["llm.delta", "llm.delta", "llm.started", "tool.started"]), max_size=40)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=BODY,
    end=st.sampled_from(["task.completed", "task.failed", "task.canceled"]),
    published_before=st.floats(0.0, 1.0),
    cuts=st.lists(st.integers(1, 12), max_size=5),
    fmt=st.sampled_from(["sse", "ndjson"]),
)
async def test_a_reconnecting_client_receives_the_log_exactly_once(
    bus: Bus, edge: HubUnderTest, body: list[str], end: str, published_before: float, cuts: list[int], fmt: str
) -> None:
    task_id, other = new_task_id(), new_task_id()
    kinds = ["task.submitted", *body, end]
    split = max(1, int(len(kinds) * published_before))

    async def write(first: int, last: int) -> None:
        for n in range(first, last):
            await publish(bus, task_id, [kinds[n]], start=n)
            if n % 2:
                await publish(bus, other, ["llm.delta"], start=n)

    await write(0, split)
    late = asyncio.create_task(write(split, len(kinds)))
    received: list[tuple[str, str]] = []
    last: str | None = None
    remaining_cuts = list(cuts)
    while True:
        cut = remaining_cuts.pop(0) if remaining_cuts else None
        result = await read_stream(edge.events_url(task_id), fmt=fmt, last_event_id=last, max_events=cut)
        received += [(f.id or "", f.type) for f in result.events]
        if result.events:
            last = result.events[-1].id
        if result.ended_by_server:
            break
    await late
    log = [(str(entry.seq), entry.type) async for entry in read_log(bus, task_id)]
    assert received == log
