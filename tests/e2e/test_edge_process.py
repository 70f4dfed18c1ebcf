"""`sluice edge` as a real process: ready line, SIGTERM with streams open, resuming on another edge.

The tests play the agent-runner (they publish the task's events themselves), so only the edge is under test.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import msgspec
import pytest

from sluice import subjects
from sluice.bus import Bus
from sluice.eventlog import EventWriter, read_log
from sluice.events import LlmDelta, LlmDeltaData, TaskCompleted, TaskCompletedData, Usage
from sluice.records import TaskStore
from support.edge import FrameReader, StreamFrame, collect_stream, edge_process
from support.nats_server import NatsServer
from support.procs import SLUICE, base_env

pytestmark = pytest.mark.slow  # every test here runs `sluice edge` as a process

GRACE_S = 2.0


async def as_runner_emit(bus: Bus, task_id: str, first: int, count: int) -> list[int]:
    writer = EventWriter(bus, "agent-runner")
    return [
        await writer.emit(
            LlmDelta, task_id, LlmDeltaData(step=1, attempt=1, text=f"t{n} "), msg_id=f"{task_id}:s1:a1:d{n}"
        )
        for n in range(first, first + count)
    ]


async def as_runner_complete(bus: Bus, task_id: str) -> int:
    store = TaskStore(await bus.js.key_value(subjects.TASKS_BUCKET))
    await store.update(task_id, lambda r: msgspec.structs.replace(r, state="completed", output="done"))
    return await EventWriter(bus, "agent-runner").emit(
        TaskCompleted, task_id, TaskCompletedData(output="done", usage=Usage()), msg_id=f"{task_id}:end"
    )


async def test_sigterm_ends_open_streams_and_exits_0_within_the_grace_and_a_client_resumes_on_another_edge(
    nats_server: NatsServer, bus: Bus, tmp_path: Path
) -> None:
    env = {"SLUICE_SHUTDOWN_GRACE_S": str(GRACE_S)}
    edge_a, url_a = edge_process(tmp_path, nats_server.url, **env)
    edge_b, url_b = edge_process(tmp_path, nats_server.url, **env)
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            created = await client.post(f"{url_a}/v1/tasks", json={"input": "tell me a long story"})
            assert created.status_code == 201
            task_id = created.json()["id"]
            await as_runner_emit(bus, task_id, 0, 20)

            seen: list[StreamFrame] = []
            async with client.stream("GET", f"{url_a}/v1/tasks/{task_id}/events") as stream:
                assert stream.status_code == 200
                reader = FrameReader(stream)
                seen.extend(await reader.read(until=lambda fs: len(fs) >= 10))
                # SIGTERM while the stream is open: the edge ends it and exits cleanly within the grace period.
                code = await asyncio.to_thread(edge_a.terminate, GRACE_S + 8)
                seen.extend(await reader.read(timeout_s=5))  # whatever it sent before it ended
                assert reader.ended
            assert code == 0, edge_a.log_tail()
            # On the edge's own log clock: from the start of the drain to the end, the grace and a little more.
            drained_s = edge_a.log_seconds("draining event streams", "stream-edge stopped")
            assert drained_s < GRACE_S + 1.5, f"took {drained_s:.1f}s to stop"
            assert '"msg":"ready"' in edge_a.log_text()

            # The task goes on without edge A; the client resumes on edge B from the last id it saw.
            await as_runner_emit(bus, task_id, 20, 10)
            end_seq = await as_runner_complete(bus, task_id)
            last_id = seen[-1].id
            assert last_id is not None
            async with client.stream(
                "GET", f"{url_b}/v1/tasks/{task_id}/events", headers={"Last-Event-ID": last_id}
            ) as resumed:
                assert resumed.status_code == 200
                rest = await collect_stream(resumed, timeout_s=10)

        expected = [str(e.seq) async for e in read_log(bus, task_id)]
        got = [f.id for f in seen + rest]
        assert got == expected, "every event exactly once, in order, across the restart"
        assert rest[-1].type == "task.completed" and rest[-1].id == str(end_seq)
    finally:
        edge_a.kill()
        edge_b.kill()


async def test_the_edge_process_serves_the_api_and_stops_cleanly_when_idle(
    nats_server: NatsServer, bus: Bus, tmp_path: Path
) -> None:
    # `bus`: the session's catalog knows the shipped agents (otherwise "assistant" is 422 unknown_agent).
    edge, url = edge_process(tmp_path, nats_server.url)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
            assert (await client.get("/healthz")).status_code == 200
            created = await client.post("/v1/tasks", json={"input": "hi"})
            assert created.status_code == 201
            bad = await client.get("/v1/tasks/*/events")
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_task_id"
            assert "sluice_edge_http_requests_total" in (await client.get("/metrics")).text
        assert await asyncio.to_thread(edge.terminate, 10.0) == 0
        # Idle, it does not wait out the shutdown grace (5 s by default), on its own log clock.
        assert edge.log_seconds("draining event streams", "stream-edge stopped") < 5.0
    finally:
        edge.kill()


def test_a_bad_setting_stops_the_edge_at_start_with_a_message() -> None:
    result = subprocess.run(
        [SLUICE, "edge"], env=base_env(SLUICE_HTTP_PORT="eighty"), capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert b"SLUICE_HTTP_PORT" in result.stderr
