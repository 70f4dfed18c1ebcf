"""A2A across edge processes: the whole of Sluice as processes (support.stack) plus more `sluice edge` processes on
the same NATS. An A2A task can be joined on any replica mid-stream, and a cut A2A stream — the client's
connection dropped, or the edge serving it killed — resumes on another replica with `Last-Event-ID`, missing
nothing and repeating nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.types import SubscribeToTaskRequest, TaskState
from google.protobuf.json_format import MessageToDict

from support.a2a import BINDINGS, Collected, a2a_client, collect, message, send, sse_events
from support.edge import edge_process
from support.procs import ServiceProcess
from support.stack import Stack, stack

__all__ = ["stack"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SLOW = "[fault:slow:50]"
TERMINAL = ("TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_CANCELED")


@pytest.fixture(scope="module")
def second_edge(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, url = edge_process(tmp_path_factory.mktemp("a2a-edge"), stack.nats_url)
    try:
        yield url
    finally:
        process.kill()


@pytest.fixture(params=BINDINGS)
def binding(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def until_first_chunk(stream: AsyncIterator[Any], got: Collected) -> None:
    async for response in stream:
        got.responses.append(response)
        if response.HasField("artifact_update"):
            return


async def test_subscribing_on_a_second_edge_process_mid_stream_sends_the_snapshot_then_the_rest(
    stack: Stack, second_edge: str, binding: str
) -> None:
    async with a2a_client(stack.edge_url, binding) as client, a2a_client(second_edge, binding) as other:
        original = Collected()
        stream = client.send_message(send(message(f"Tell me a long story {SLOW}")))
        await until_first_chunk(stream, original)
        joined = await collect(other.subscribe(SubscribeToTaskRequest(id=original.task_id)))
        async for response in stream:
            original.responses.append(response)
    assert joined.kinds[0] == "task"
    assert joined.responses[0].task.status.state == TaskState.TASK_STATE_WORKING
    assert joined.states[-1] == original.states[-1] == TaskState.TASK_STATE_COMPLETED
    tail = [MessageToDict(r) for r in joined.responses[1:]]
    assert tail and [MessageToDict(r) for r in original.responses][-len(tail) :] == tail
    assert joined.text == original.text


# ---------------------------------------------------------------- exact replay below the SDK: SSE `id:` lines


def result_of(data: dict[str, Any]) -> dict[str, Any]:
    """The StreamResponse of an SSE event of either binding (JSON-RPC wraps it in a response envelope)."""
    inner: dict[str, Any] = data.get("result", data)
    return inner


def state_of(data: dict[str, Any]) -> str | None:
    body = result_of(data)
    for kind in ("task", "statusUpdate"):
        if kind in body:
            return str(body[kind]["status"]["state"])
    return None


async def open_stream(
    http: httpx.AsyncClient, base: str, binding: str, task_id: str, last_event_id: str | None = None
) -> httpx.Response:
    """SubscribeToTask as raw SSE: REST `GET /tasks/{id}:subscribe` (what a browser's EventSource does), or the
    JSON-RPC POST."""
    headers = {"A2A-Version": "1.0", "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    if binding == "HTTP+JSON":
        request = http.build_request("GET", f"{base}/a2a/rest/tasks/{task_id}:subscribe", headers=headers)
    else:
        body = {"jsonrpc": "2.0", "id": 1, "method": "SubscribeToTask", "params": {"id": task_id}}
        request = http.build_request("POST", f"{base}/a2a", json=body, headers=headers)
    response = await http.send(request, stream=True)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    return response


async def read(response: httpx.Response, *, stop_after: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(id, data) of each event until the stream ends (or `stop_after` events were read: then the caller cuts)."""
    out: list[tuple[str, dict[str, Any]]] = []
    async for event in sse_events(response):
        assert event.event != "error", event.data
        assert event.id is not None, f"an A2A stream event without an id: line: {event.data}"
        out.append((event.id, event.data))
        if stop_after is not None and len(out) >= stop_after:
            break
    return out


async def start_slow_task(base: str) -> str:
    async with a2a_client(base, "JSONRPC", streaming=False, polling=True) as client:
        got = await collect(client.send_message(send(message(f"Tell me a long story, slowly {SLOW}"))))
    return got.responses[0].task.id


async def test_a_stream_cut_mid_task_resumes_on_another_process_with_last_event_id_exactly(
    stack: Stack, second_edge: str, binding: str
) -> None:
    task_id = await start_slow_task(stack.edge_url)
    async with httpx.AsyncClient(timeout=30) as http:
        first = await open_stream(http, stack.edge_url, binding, task_id)
        try:
            before = await read(first, stop_after=4)
        finally:
            await first.aclose()  # the connection drops mid-task
        assert "task" in result_of(before[0][1])
        assert state_of(before[-1][1]) not in TERMINAL
        after = await read(await open_stream(http, second_edge, binding, task_id, last_event_id=before[-1][0]))
        replay = await read(await open_stream(http, stack.edge_url, binding, task_id, last_event_id=before[0][0]))
    assert after and state_of(after[-1][1]) == "TASK_STATE_COMPLETED"
    assert "task" not in result_of(after[0][1])  # it goes on where it stopped: no second snapshot
    ids = [int(i) for i, _ in before + after]
    assert ids == sorted(set(ids))
    assert [result_of(d) for _, d in before[1:] + after] == [result_of(d) for _, d in replay]


async def test_when_the_edge_serving_a_stream_dies_the_client_resumes_on_another_with_nothing_lost(
    stack: Stack, tmp_path: Path
) -> None:
    doomed: ServiceProcess
    doomed, doomed_url = edge_process(tmp_path, stack.nats_url)
    try:
        task_id = await start_slow_task(doomed_url)
        async with httpx.AsyncClient(timeout=30) as http:
            stream = await open_stream(http, doomed_url, "HTTP+JSON", task_id)
            before: list[tuple[str, dict[str, Any]]] = []
            with pytest.raises(httpx.HTTPError):  # the edge is killed under the stream
                async for event in sse_events(stream):
                    before.append((str(event.id), event.data))
                    if len(before) == 3:
                        doomed.kill()
            await stream.aclose()
            assert len(before) >= 3 and state_of(before[-1][1]) not in TERMINAL
            after = await read(await open_stream(http, stack.edge_url, "HTTP+JSON", task_id, before[-1][0]))
            replay = await read(await open_stream(http, stack.edge_url, "HTTP+JSON", task_id, before[0][0]))
    finally:
        doomed.kill()
    assert state_of(after[-1][1]) == "TASK_STATE_COMPLETED"
    assert [d for _, d in before[1:] + after] == [d for _, d in replay]


async def test_many_clients_on_two_processes_see_the_same_stream(stack: Stack, second_edge: str) -> None:
    task_id = await start_slow_task(stack.edge_url)

    async def watch(base: str, binding: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=30) as http:
            events = await read(await open_stream(http, base, binding, task_id, last_event_id="1"))
        return [result_of(d) for _, d in events]

    seen = await asyncio.gather(*(watch(base, b) for base in (stack.edge_url, second_edge) for b in BINDINGS))
    assert all(s == seen[0] for s in seen) and seen[0]


async def test_sigterm_ends_open_a2a_streams_promptly_and_the_client_resumes_elsewhere(
    stack: Stack, tmp_path: Path
) -> None:
    leaving, leaving_url = edge_process(tmp_path, stack.nats_url)
    try:
        task_id = await start_slow_task(stack.edge_url)
        async with httpx.AsyncClient(timeout=30) as http:
            stream = await open_stream(http, leaving_url, "JSONRPC", task_id)
            before: list[tuple[str, dict[str, Any]]] = []
            stopping: asyncio.Task[int] | None = None
            with contextlib.suppress(httpx.HTTPError):
                async for event in sse_events(stream):
                    if event.event == "error":
                        break
                    before.append((str(event.id), event.data))
                    if len(before) == 2:
                        stopping = asyncio.create_task(asyncio.to_thread(leaving.terminate, 15.0))
            await stream.aclose()
            assert stopping is not None
            assert await stopping == 0
            # The stream ended at the shutdown, not at the task's end: the task was still running.
            assert state_of(before[-1][1]) not in TERMINAL
            after = await read(await open_stream(http, stack.edge_url, "JSONRPC", task_id, before[-1][0]))
            replay = await read(await open_stream(http, stack.edge_url, "JSONRPC", task_id, before[0][0]))
    finally:
        leaving.kill()
    assert state_of(after[-1][1]) == "TASK_STATE_COMPLETED"
    assert [result_of(d) for _, d in before[1:] + after] == [result_of(d) for _, d in replay]
