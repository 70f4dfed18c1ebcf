"""The events route's parameters reach the stream hub as CONTRACT §5 says: format, start position, follow, snapshot.

(The hub's own behaviour — fan-out, catch-up seams, slow clients, gaps — is tested with the hub.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest

from sluice import subjects
from sluice.bus import Bus
from sluice.config import CommonConfig
from sluice.eventlog import EventWriter, read_log
from sluice.events import LlmDelta, LlmDeltaData, TaskCompleted, TaskCompletedData, Usage
from sluice.records import TaskStore
from support.edge import EdgeUnderTest, FrameReader, collect_stream, running_edge


@pytest.fixture(scope="module")
async def edge(common_config: CommonConfig, bus: Bus) -> AsyncIterator[EdgeUnderTest]:
    async with running_edge(common_config, bus) as running:
        yield running


async def finished_task(edge: EdgeUnderTest, bus: Bus, deltas: int = 3) -> tuple[str, list[str]]:
    """A task whose log is submitted, `deltas` llm.delta, completed (written as a runner would)."""
    task_id = (await edge.client.post("/v1/tasks", json={"input": "x"})).json()["id"]
    writer = EventWriter(bus, "agent-runner")
    for n in range(deltas):
        data = LlmDeltaData(step=1, attempt=1, text=str(n))
        await writer.emit(LlmDelta, task_id, data, msg_id=f"{task_id}:s1:a1:d{n}")
    store = TaskStore(await bus.js.key_value(subjects.TASKS_BUCKET))
    await store.update(task_id, lambda r: msgspec.structs.replace(r, state="completed", output="012"))
    seq = await writer.emit(
        TaskCompleted, task_id, TaskCompletedData(output="012", usage=Usage()), msg_id=f"{task_id}:end"
    )
    await store.update(task_id, lambda r: msgspec.structs.replace(r, last_event_id=str(seq)))
    return task_id, [str(e.seq) async for e in read_log(bus, task_id)]


@pytest.mark.parametrize(
    ("accept", "query", "content_type"),
    [
        (None, {}, "text/event-stream"),
        ("*/*", {}, "text/event-stream"),
        ("text/event-stream", {}, "text/event-stream"),
        ("application/x-ndjson", {}, "application/x-ndjson"),
        ("text/event-stream", {"format": "ndjson"}, "application/x-ndjson"),
        ("application/json", {"format": "sse"}, "text/event-stream"),
    ],
)
async def test_the_format_follows_accept_and_the_format_parameter_overrides_it(
    edge: EdgeUnderTest, bus: Bus, accept: str | None, query: dict[str, str], content_type: str
) -> None:
    task_id, ids = await finished_task(edge, bus)
    headers = {"Accept": accept} if accept else {}
    async with edge.client.stream("GET", f"/v1/tasks/{task_id}/events", params=query, headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith(content_type)
        assert r.headers["cache-control"] == "no-cache, no-transform"
        frames = await collect_stream(r)
    assert [f.id for f in frames] == ids
    assert frames[-1].type == "task.completed"


async def test_the_start_is_last_event_id_else_after_else_the_beginning(edge: EdgeUnderTest, bus: Bus) -> None:
    task_id, ids = await finished_task(edge, bus)
    url = f"/v1/tasks/{task_id}/events"

    async def ids_from(**kwargs: object) -> list[str | None]:
        async with edge.client.stream("GET", url, **kwargs) as r:  # type: ignore[arg-type]
            assert r.status_code == 200
            return [f.id for f in await collect_stream(r)]

    assert await ids_from() == ids
    assert await ids_from(params={"after": ids[1]}) == ids[2:]
    assert await ids_from(headers={"Last-Event-ID": ids[2]}) == ids[3:]
    assert await ids_from(headers={"Last-Event-ID": ids[2]}, params={"after": ids[0]}) == ids[3:]


async def test_a_cursor_past_a_finished_task_s_terminal_event_ends_the_stream_at_once(
    edge: EdgeUnderTest, bus: Bus
) -> None:
    # Event ids are stream sequences shared by every task: a cursor can lie past a task's last event and still
    # exist (another task's event). For a finished task nothing can follow it, so the stream must not stay open.
    task_id, ids = await finished_task(edge, bus)
    later, _ = await finished_task(edge, bus, deltas=0)
    beyond = (await edge.client.get(f"/v1/tasks/{later}")).json()["last_event_id"]
    assert int(beyond) > int(ids[-1])
    async with edge.client.stream("GET", f"/v1/tasks/{task_id}/events", headers={"Last-Event-ID": beyond}) as r:
        assert r.status_code == 200
        reader = FrameReader(r)
        assert await reader.read(timeout_s=5) == []
        assert reader.ended


async def test_follow_false_sends_what_exists_and_ends(edge: EdgeUnderTest) -> None:
    task_id = (await edge.client.post("/v1/tasks", json={"input": "still running"})).json()["id"]
    async with edge.client.stream("GET", f"/v1/tasks/{task_id}/events", params={"follow": "false"}) as r:
        frames = await collect_stream(r, timeout_s=5)
    assert [f.type for f in frames] == ["task.submitted"]


async def test_following_a_live_task_delivers_new_events_until_the_terminal_one(edge: EdgeUnderTest, bus: Bus) -> None:
    task_id = (await edge.client.post("/v1/tasks", json={"input": "live"})).json()["id"]
    writer = EventWriter(bus, "agent-runner")
    async with edge.client.stream("GET", f"/v1/tasks/{task_id}/events") as r:
        reader = FrameReader(r)
        assert [f.type for f in await reader.read(until=lambda fs: len(fs) >= 1)] == ["task.submitted"]
        await writer.emit(LlmDelta, task_id, LlmDeltaData(step=1, attempt=1, text="hi"), msg_id=f"{task_id}:d")
        await writer.emit(
            TaskCompleted, task_id, TaskCompletedData(output="hi", usage=Usage()), msg_id=f"{task_id}:end"
        )
        rest = await reader.read(timeout_s=10)
        assert reader.ended
    assert [f.type for f in rest] == ["llm.delta", "task.completed"]


async def test_snapshot_starts_with_the_record(edge: EdgeUnderTest, bus: Bus) -> None:
    task_id, ids = await finished_task(edge, bus)
    async with edge.client.stream("GET", f"/v1/tasks/{task_id}/events", params={"snapshot": "true"}) as r:
        frames = await collect_stream(r, until=lambda fs: len(fs) >= 1, timeout_s=5)
    snapshot = frames[0]
    assert snapshot.type == "task.snapshot"
    assert snapshot.id == ids[-1]
    assert snapshot.data["data"]["id"] == task_id and snapshot.data["data"]["state"] == "completed"
