"""stream-edge task commands over HTTP against a real nats-server: submit, read, idempotency, trace, stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from sluice import subjects
from sluice.bus import Bus
from sluice.config import CommonConfig
from sluice.eventlog import read_events, read_log
from sluice.events import TaskSubmitted
from sluice.ids import is_task_id, new_task_id
from sluice.messages import decode_work
from support.edge import EdgeUnderTest, collect_stream, running_edge, task_message_counts

TRACED = TracerProvider()


@pytest.fixture(scope="module")
async def edge(common_config: CommonConfig, bus: Bus) -> AsyncIterator[EdgeUnderTest]:
    async with running_edge(common_config, bus, tracer_provider=TRACED) as running:
        yield running


async def work_message(bus: Bus, task_id: str) -> tuple[bytes, dict[str, str]]:
    msg = await bus.js.get_last_msg(subjects.WORK_STREAM, subjects.work(task_id))
    return msg.data or b"", dict(msg.headers or {})


async def test_submit_creates_the_record_then_publishes_submitted_and_work(edge: EdgeUnderTest, bus: Bus) -> None:
    body = {
        "input": "What is 2+2?",
        "agent": "assistant",
        "history": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        "metadata": {"user": "u1", "n": [1, 2]},
        "budget": {"max_output_tokens": 100, "max_cost_usd": 0.5, "max_steps": 3, "timeout_s": 30},
    }
    response = await edge.client.post("/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    record = response.json()
    task_id = record["id"]
    assert is_task_id(task_id)
    assert response.headers["location"] == f"/v1/tasks/{task_id}"
    assert record["state"] == "submitted"
    assert record["agent"] == "assistant" and record["input"] == "What is 2+2?"
    assert record["metadata"] == {"user": "u1", "n": [1, 2]}

    events = await read_events(bus, task_id)
    assert [type(e) for e in events] == [TaskSubmitted]
    submitted = events[0]
    assert isinstance(submitted, TaskSubmitted)
    assert submitted.source == "stream-edge"
    assert submitted.data.input == "What is 2+2?"
    assert [h.role for h in submitted.data.history] == ["user", "assistant"]
    assert submitted.data.budget.max_steps == 3 and submitted.data.budget.max_cost_usd == 0.5
    assert record["last_event_id"] == submitted.id

    data, headers = await work_message(bus, task_id)
    work = decode_work(data)
    assert work.task_id == task_id and work.reason == "submitted"
    assert headers["Nats-Msg-Id"] == f"{task_id}:run:submitted"
    entries = [entry async for entry in read_log(bus, task_id)]
    assert entries[0].headers["Nats-Msg-Id"] == f"{task_id}:submitted"

    again = await edge.client.get(f"/v1/tasks/{task_id}")
    assert again.status_code == 200
    assert again.json()["id"] == task_id and again.json()["state"] == "submitted"


async def test_defaults_fill_agent_history_metadata_and_budget(edge: EdgeUnderTest, bus: Bus) -> None:
    response = await edge.client.post("/v1/tasks", json={"input": "hello"})
    assert response.status_code == 201
    [submitted] = await read_events(bus, response.json()["id"])
    assert isinstance(submitted, TaskSubmitted)
    assert submitted.data.input == "hello" and submitted.data.agent == "assistant"
    assert submitted.data.history == [] and submitted.data.metadata == {}
    stored = (await edge.client.get(f"/v1/tasks/{submitted.task_id}")).json()
    assert stored["input"] == "hello" and stored["agent"] == "assistant" and stored["metadata"] == {}, stored


async def test_the_same_idempotency_key_returns_the_same_task_once(edge: EdgeUnderTest, bus: Bus) -> None:
    key = f"key-{new_task_id()}"
    first = await edge.client.post("/v1/tasks", json={"input": "once"}, headers={"Idempotency-Key": key})
    second = await edge.client.post("/v1/tasks", json={"input": "once"}, headers={"Idempotency-Key": key})
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["location"] == first.headers["location"]
    assert await task_message_counts(bus, first.json()["id"]) == (1, 1)
    [submitted] = await read_events(bus, first.json()["id"])
    assert isinstance(submitted, TaskSubmitted) and submitted.data.input == "once"
    assert second.json()["input"] == "once"


async def test_concurrent_requests_with_one_idempotency_key_make_one_task(edge: EdgeUnderTest, bus: Bus) -> None:
    key = f"key-{new_task_id()}"
    responses = await asyncio.gather(
        *(edge.client.post("/v1/tasks", json={"input": "race"}, headers={"Idempotency-Key": key}) for _ in range(6))
    )
    assert {r.status_code for r in responses} == {201}
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    assert await task_message_counts(bus, ids.pop()) == (1, 1)


async def test_different_idempotency_keys_make_different_tasks(edge: EdgeUnderTest) -> None:
    a = await edge.client.post("/v1/tasks", json={"input": "x"}, headers={"Idempotency-Key": f"a-{new_task_id()}"})
    b = await edge.client.post("/v1/tasks", json={"input": "x"}, headers={"Idempotency-Key": f"b-{new_task_id()}"})
    assert a.json()["id"] != b.json()["id"]


async def test_submitted_event_and_work_message_carry_the_request_trace(edge: EdgeUnderTest, bus: Bus) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = f"00-{trace_id}-00f067aa0ba902b7-01"
    response = await edge.client.post("/v1/tasks", json={"input": "traced"}, headers={"traceparent": parent})
    task_id = response.json()["id"]
    [entry] = [e async for e in read_log(bus, task_id)]
    assert entry.decode().trace_id == trace_id
    assert entry.headers["traceparent"].split("-")[1] == trace_id
    _, work_headers = await work_message(bus, task_id)
    assert work_headers["traceparent"].split("-")[1] == trace_id


async def test_a_new_task_gets_a_fresh_trace_when_the_client_sends_none(edge: EdgeUnderTest, bus: Bus) -> None:
    one = (await edge.client.post("/v1/tasks", json={"input": "a"})).json()["id"]
    two = (await edge.client.post("/v1/tasks", json={"input": "b"})).json()["id"]
    [first] = await read_events(bus, one)
    [second] = await read_events(bus, two)
    assert len(first.trace_id) == 32 and len(second.trace_id) == 32
    assert first.trace_id != second.trace_id


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [("text/event-stream", "text/event-stream"), ("application/x-ndjson", "application/x-ndjson")],
)
async def test_create_and_stream_answers_with_the_stream_and_location(
    edge: EdgeUnderTest, accept: str, content_type: str
) -> None:
    async with edge.client.stream("POST", "/v1/tasks", json={"input": "stream me"}, headers={"Accept": accept}) as r:
        assert r.status_code == 201
        assert r.headers["content-type"].startswith(content_type)
        location = r.headers["location"]
        frames = await collect_stream(r, until=lambda fs: len(fs) >= 1)
    task_id = location.rsplit("/", 1)[1]
    assert frames[0].type == "task.submitted"
    assert frames[0].data["task_id"] == task_id
    assert frames[0].id is not None and frames[0].data["id"] == frames[0].id


async def test_json_is_preferred_for_wildcard_accept(edge: EdgeUnderTest) -> None:
    response = await edge.client.post("/v1/tasks", json={"input": "x"}, headers={"Accept": "*/*"})
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"


async def test_an_agent_name_of_the_right_shape_that_no_runner_offered_is_422(edge: EdgeUnderTest) -> None:
    # The edge knows the runners' agents from the catalog (tests/integration/test_catalog.py has the rest).
    response = await edge.client.post("/v1/tasks", json={"input": "x", "agent": "no-such_agent-42"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_agent"


async def test_reading_a_task_that_does_not_exist_is_404(edge: EdgeUnderTest) -> None:
    response = await edge.client.get(f"/v1/tasks/{new_task_id()}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "task_not_found"
