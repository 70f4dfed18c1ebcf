"""The Python clients against the real services (processes): `EdgeClient.events` resumes across an edge kill
with nothing repeated or lost, and a service subscribed through NATS sees every task complete."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from sluice import events as ev
from sluice import subjects
from sluice.bus import Bus, connect
from sluice.client import EdgeClient, Transcript, events_of_types, task_events
from sluice.config import CommonConfig
from sluice.ids import new_task_id
from support.stack import Stack, stack

__all__ = ["stack"]  # the fixture, imported for pytest

pytestmark = pytest.mark.slow


@pytest.fixture
async def stack_bus(stack: Stack) -> AsyncIterator[Bus]:
    bus = await connect(CommonConfig(nats_urls=(stack.nats_url,)), name="sluice-tests-clients")
    yield bus
    await bus.close()


async def test_events_resume_across_an_edge_kill_with_nothing_repeated_or_lost(stack: Stack) -> None:
    statuses: list[str] = []
    seen: list[ev.Event] = []
    transcript = Transcript()
    async with EdgeClient(stack.edge_url) as client:
        task = await client.submit("Tell me how tides work [fault:slow:40]", idempotency_key=new_task_id())
        restart: asyncio.Task[object] | None = None
        async for event in client.events(task.id, on_status=lambda status, _: statuses.append(status)):
            seen.append(event)
            transcript.apply(event)
            deltas = sum(isinstance(e, ev.LlmDelta) for e in seen)
            if deltas == 5 and restart is None:
                restart = asyncio.create_task(asyncio.to_thread(stack.restart, "edge"))
        assert restart is not None
        await restart
        log = [s.event async for s in client.stream(task.id, follow=False)]
        record = await client.get(task.id)
    assert "reconnecting" in statuses and statuses[-1] == "connected"
    assert [e.id for e in seen] == [e.id for e in log]
    assert transcript.text == record.output == transcript.output
    assert isinstance(seen[-1], ev.TaskCompleted)


async def test_a_service_sees_every_task_completed_through_nats(stack: Stack, stack_bus: Bus) -> None:
    start = (await stack_bus.js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
    async with EdgeClient(stack.edge_url) as client:
        tasks = [await client.submit(f"What is {i}+{i}?") for i in range(6)]
        wanted = {t.id for t in tasks}
        completed: dict[str, ev.TaskCompleted] = {}

        async def watch() -> None:
            async for event in events_of_types(stack_bus, ["task.completed"], after=start):
                if isinstance(event, ev.TaskCompleted) and event.task_id in wanted:
                    completed[event.task_id] = event
                    if len(completed) == len(wanted):
                        return

        await asyncio.wait_for(watch(), 60)
        for i, task in enumerate(tasks):
            assert completed[task.id].data.output.startswith(f"{i}+{i} = {2 * i}.")
        # One task's events straight from NATS are the ones the edge serves.
        direct = [e async for e in task_events(stack_bus, tasks[0].id)]
        served = [s.event async for s in client.stream(tasks[0].id, follow=False)]
    assert [(e.id, ev.encode(e)) for e in direct] == [(e.id, ev.encode(e)) for e in served]


async def test_the_edge_serves_the_asyncapi_document(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.edge_url, timeout=10) as http:
        response = await http.get("/asyncapi.json")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["asyncapi"] == "3.0.0"
    assert document["channels"]["taskEvents"]["address"] == "sluice.evt.{task_id}.{type}"
