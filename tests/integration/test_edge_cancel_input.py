"""Cancel and input over HTTP, following the protocol: who publishes what, with which message ids, and when 409.

No agent-runner runs here: the tests play its part (CAS the record to `working` / `input-required`, publish
`task.input_required`) exactly as the protocol says a runner does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider

from sluice import subjects
from sluice.bus import Bus
from sluice.config import CommonConfig
from sluice.eventlog import EventWriter, read_events, read_log
from sluice.events import (
    TaskCanceled,
    TaskCompleted,
    TaskCompletedData,
    TaskInputRequired,
    TaskInputRequiredData,
    TaskRecord,
    TaskResumed,
    TaskSubmitted,
    Usage,
)
from sluice.messages import decode_control, decode_work
from sluice.records import TaskStore
from support.edge import EdgeUnderTest, record_watch_opened, running_edge, task_message_counts

TRACED = TracerProvider()


@pytest.fixture(scope="module")
async def edge(common_config: CommonConfig, bus: Bus) -> AsyncIterator[EdgeUnderTest]:
    async with running_edge(common_config, bus, tracer_provider=TRACED) as running:
        yield running


@pytest.fixture(scope="module")
async def store(bus: Bus) -> TaskStore:
    return TaskStore(await bus.js.key_value(subjects.TASKS_BUCKET))


async def submit(edge: EdgeUnderTest) -> str:
    response = await edge.client.post("/v1/tasks", json={"input": "do something"})
    assert response.status_code == 201
    return str(response.json()["id"])


async def as_runner_take(store: TaskStore, task_id: str) -> None:
    await store.update(task_id, lambda r: msgspec.structs.replace(r, state="working"))


async def as_runner_ask(bus: Bus, store: TaskStore, task_id: str, *, kind: str = "question", step: int = 1) -> int:
    """What a runner does when the model asks the user: publish task.input_required, CAS, (ack)."""
    data = TaskInputRequiredData(prompt="Which city?", kind=kind)  # type: ignore[arg-type]
    if kind == "approval":
        data = TaskInputRequiredData(prompt="Run it?", kind="approval", call_id="c1", name="calculator", arguments="{}")
    seq = await EventWriter(bus, "agent-runner").emit(
        TaskInputRequired, task_id, data, msg_id=f"{task_id}:ask:{step}:c{step}"
    )
    await store.update(task_id, lambda r: msgspec.structs.replace(r, state="input-required", last_event_id=str(seq)))
    return seq


async def last_work(bus: Bus, task_id: str) -> tuple[str, str]:
    msg = await bus.js.get_last_msg(subjects.WORK_STREAM, subjects.work(task_id))
    return decode_work(msg.data or b"").reason, (msg.headers or {})["Nats-Msg-Id"]


# ---------------------------------------------------------------- cancel


async def test_canceling_a_queued_task_cancels_the_record_and_publishes_task_canceled(
    edge: EdgeUnderTest, bus: Bus
) -> None:
    task_id = await submit(edge)
    notices = await bus.nc.subscribe(subjects.control(task_id))
    response = await edge.client.post(f"/v1/tasks/{task_id}/cancel", json={"reason": "changed my mind"})
    assert response.status_code == 202, response.text
    record = response.json()
    assert record["state"] == "canceled"

    notice = decode_control((await notices.next_msg(timeout=5)).data)
    assert notice.action == "cancel" and notice.reason == "changed my mind"
    await notices.unsubscribe()

    events = await read_events(bus, task_id)
    assert [type(e) for e in events] == [TaskSubmitted, TaskCanceled]
    canceled = events[-1]
    assert isinstance(canceled, TaskCanceled) and canceled.data.reason == "changed my mind"
    assert canceled.source == "stream-edge"
    assert canceled.trace_id == events[0].trace_id, "the cancel event joins the task's trace"
    entries = [e async for e in read_log(bus, task_id)]
    assert entries[-1].headers["Nats-Msg-Id"] == f"{task_id}:end"
    assert record["last_event_id"] == canceled.id


async def test_cancel_without_a_body_uses_a_default_reason(edge: EdgeUnderTest, bus: Bus) -> None:
    task_id = await submit(edge)
    assert (await edge.client.post(f"/v1/tasks/{task_id}/cancel")).status_code == 202
    canceled = (await read_events(bus, task_id))[-1]
    assert isinstance(canceled, TaskCanceled) and canceled.data.reason


async def test_canceling_a_working_task_leaves_the_terminal_event_to_its_runner(
    edge: EdgeUnderTest, bus: Bus, store: TaskStore
) -> None:
    task_id = await submit(edge)
    await as_runner_take(store, task_id)
    notices = await bus.nc.subscribe(subjects.control(task_id))
    response = await edge.client.post(f"/v1/tasks/{task_id}/cancel")
    assert response.status_code == 202
    assert response.json()["state"] == "canceled"
    assert decode_control((await notices.next_msg(timeout=5)).data).task_id == task_id
    await notices.unsubscribe()
    assert [type(e) for e in await read_events(bus, task_id)] == [TaskSubmitted]


async def test_canceling_a_task_waiting_for_input_publishes_task_canceled(
    edge: EdgeUnderTest, bus: Bus, store: TaskStore
) -> None:
    task_id = await submit(edge)
    await as_runner_take(store, task_id)
    await as_runner_ask(bus, store, task_id)
    assert (await edge.client.post(f"/v1/tasks/{task_id}/cancel")).status_code == 202
    assert isinstance((await read_events(bus, task_id))[-1], TaskCanceled)


async def test_canceling_an_ended_task_is_409_and_publishes_nothing(
    edge: EdgeUnderTest, bus: Bus, store: TaskStore
) -> None:
    task_id = await submit(edge)
    assert (await edge.client.post(f"/v1/tasks/{task_id}/cancel")).status_code == 202
    counts = await task_message_counts(bus, task_id)
    again = await edge.client.post(f"/v1/tasks/{task_id}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "task_terminal"
    assert await task_message_counts(bus, task_id) == counts

    completed = await submit(edge)
    await store.update(completed, lambda r: msgspec.structs.replace(r, state="completed", output="done"))
    await EventWriter(bus, "agent-runner").emit(
        TaskCompleted, completed, TaskCompletedData(output="done", usage=Usage()), msg_id=f"{completed}:end"
    )
    response = await edge.client.post(f"/v1/tasks/{completed}/cancel")
    assert response.status_code == 409
    assert (await edge.client.get(f"/v1/tasks/{completed}")).json()["state"] == "completed"


async def test_concurrent_cancels_end_a_task_exactly_once(edge: EdgeUnderTest, bus: Bus) -> None:
    task_id = await submit(edge)
    responses = await asyncio.gather(*(edge.client.post(f"/v1/tasks/{task_id}/cancel") for _ in range(5)))
    assert sorted(r.status_code for r in responses) == [202, 409, 409, 409, 409]
    assert [type(e) for e in await read_events(bus, task_id)] == [TaskSubmitted, TaskCanceled]


# ---------------------------------------------------------------- input


async def test_input_to_a_task_that_is_not_waiting_is_409(edge: EdgeUnderTest, bus: Bus, store: TaskStore) -> None:
    task_id = await submit(edge)
    response = await edge.client.post(f"/v1/tasks/{task_id}/input", json={"input": "Paris"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "task_not_waiting"
    await as_runner_take(store, task_id)
    assert (await edge.client.post(f"/v1/tasks/{task_id}/input", json={"approve": True})).status_code == 409
    assert await task_message_counts(bus, task_id) == (1, 1)


async def test_input_resumes_a_waiting_task_with_task_resumed_and_a_work_message(
    edge: EdgeUnderTest, bus: Bus, store: TaskStore
) -> None:
    task_id = await submit(edge)
    await as_runner_take(store, task_id)
    ask_seq = await as_runner_ask(bus, store, task_id)

    response = await edge.client.post(f"/v1/tasks/{task_id}/input", json={"input": "Paris"})
    assert response.status_code == 202, response.text
    record = response.json()
    assert record["state"] == "working"

    events = await read_events(bus, task_id)
    assert [type(e) for e in events] == [TaskSubmitted, TaskInputRequired, TaskResumed]
    resumed = events[-1]
    assert isinstance(resumed, TaskResumed)
    assert resumed.data.input == "Paris" and resumed.data.approved is None
    assert resumed.trace_id == events[0].trace_id
    assert record["last_event_id"] == resumed.id
    entries = [e async for e in read_log(bus, task_id)]
    assert entries[-1].headers["Nats-Msg-Id"] == f"{task_id}:resumed:{ask_seq}"
    assert await last_work(bus, task_id) == ("resumed", f"{task_id}:run:r{ask_seq}")

    again = await edge.client.post(f"/v1/tasks/{task_id}/input", json={"input": "Paris"})
    assert again.status_code == 409, "answered already: the task is working"


async def test_an_answer_that_overtakes_the_records_input_required_waits_for_it(
    edge: EdgeUnderTest, bus: Bus, store: TaskStore
) -> None:
    """A client answers the `task.input_required` it was just streamed, before the runner has recorded the state:
    the answer waits for the record instead of being refused with 409."""
    task_id = await submit(edge)
    await as_runner_take(store, task_id)
    data = TaskInputRequiredData(prompt="Run it?", kind="approval", call_id="c1", name="calculator", arguments="{}")
    seq = await EventWriter(bus, "agent-runner").emit(TaskInputRequired, task_id, data, msg_id=f"{task_id}:ask:1:c1")
    async with record_watch_opened(bus, task_id) as watching:
        answer = asyncio.create_task(edge.client.post(f"/v1/tasks/{task_id}/input", json={"approve": True}))
        await asyncio.wait_for(watching, timeout=10)
    assert not answer.done(), answer.result().text

    await store.update(task_id, lambda r: msgspec.structs.replace(r, state="input-required", last_event_id=str(seq)))
    response = await asyncio.wait_for(answer, timeout=15)
    assert response.status_code == 202, response.text
    resumed = (await read_events(bus, task_id))[-1]
    assert isinstance(resumed, TaskResumed) and resumed.data.approved is True
    assert (await store.get(task_id)).state == "working"


async def test_approve_records_the_decision(edge: EdgeUnderTest, bus: Bus, store: TaskStore) -> None:
    for decision in (True, False):
        task_id = await submit(edge)
        await as_runner_take(store, task_id)
        await as_runner_ask(bus, store, task_id, kind="approval")
        response = await edge.client.post(f"/v1/tasks/{task_id}/input", json={"approve": decision})
        assert response.status_code == 202
        resumed = (await read_events(bus, task_id))[-1]
        assert isinstance(resumed, TaskResumed) and resumed.data.approved is decision


async def test_two_different_answers_racing_record_exactly_one(edge: EdgeUnderTest, bus: Bus, store: TaskStore) -> None:
    task_id = await submit(edge)
    await as_runner_take(store, task_id)
    await as_runner_ask(bus, store, task_id)
    answers = ["Paris", "Rome", "Oslo", "Lima"]
    responses = await asyncio.gather(
        *(edge.client.post(f"/v1/tasks/{task_id}/input", json={"input": a}) for a in answers)
    )
    assert sorted(r.status_code for r in responses) == [202, 409, 409, 409]
    winner = next(a for a, r in zip(answers, responses, strict=True) if r.status_code == 202)
    resumed = [e for e in await read_events(bus, task_id) if isinstance(e, TaskResumed)]
    assert len(resumed) == 1 and resumed[0].data.input == winner
    assert (await edge.client.get(f"/v1/tasks/{task_id}")).json()["state"] == "working"


async def test_a_second_question_gets_its_own_resume_ids(edge: EdgeUnderTest, bus: Bus, store: TaskStore) -> None:
    task_id = await submit(edge)
    await as_runner_take(store, task_id)
    first = await as_runner_ask(bus, store, task_id, step=1)
    assert (await edge.client.post(f"/v1/tasks/{task_id}/input", json={"input": "one"})).status_code == 202
    second = await as_runner_ask(bus, store, task_id, step=2)
    assert (await edge.client.post(f"/v1/tasks/{task_id}/input", json={"input": "two"})).status_code == 202
    resumed = [e async for e in read_log(bus, task_id) if e.type == "task.resumed"]
    assert [e.headers["Nats-Msg-Id"] for e in resumed] == [f"{task_id}:resumed:{first}", f"{task_id}:resumed:{second}"]
    assert await last_work(bus, task_id) == ("resumed", f"{task_id}:run:r{second}")


async def test_the_record_read_back_matches_the_wire_type(edge: EdgeUnderTest) -> None:
    task_id = await submit(edge)
    body = (await edge.client.get(f"/v1/tasks/{task_id}")).content
    record = msgspec.json.decode(body, type=TaskRecord)
    assert record.id == task_id and record.state == "submitted"
