"""TaskService without HTTP (the A2A endpoint uses it too): what happens when a submission breaks halfway."""

from __future__ import annotations

from typing import Any

import nats.errors
import pytest

from sluice import subjects
from sluice.bus import Bus
from sluice.clock import now_iso
from sluice.errors import InvalidInput, Unavailable
from sluice.eventlog import read_events
from sluice.events import TaskCanceled, TaskFailed, TaskRecord, TaskSubmitted, TaskSubmittedData
from sluice.ids import new_task_id
from sluice.records import TaskStore
from stream_edge.commands import TaskService
from support.catalog import any_agent
from support.edge import task_message_counts


class WorkQueueDown:
    """The real bus, except that publishing work messages fails as it would with SLUICE_WORK unavailable."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    async def publish(self, subject: str, payload: bytes, **kwargs: Any) -> int:
        if subject.startswith("sluice.run."):
            raise Unavailable("nats_unavailable", "publish to the work queue failed: TimeoutError")
        return await self._bus.publish(subject, payload, **kwargs)


@pytest.fixture(scope="module")
async def store(bus: Bus) -> TaskStore:
    return TaskStore(await bus.js.key_value(subjects.TASKS_BUCKET))


def request(text: str = "hello") -> TaskSubmittedData:
    return TaskSubmittedData(input=text, agent="assistant", history=[], metadata={})


async def test_a_task_the_runners_never_received_is_marked_failed_not_left_submitted(
    bus: Bus, store: TaskStore
) -> None:
    service = TaskService(WorkQueueDown(bus), store, any_agent)  # type: ignore[arg-type]
    key = f"k-{new_task_id()}"
    with pytest.raises(Unavailable):
        await service.submit(request(), idempotency_key=key)
    task_id = await store.claim_idempotency_key(key, new_task_id())
    record = await store.get(task_id)
    assert record.state == "failed" and record.error is not None and record.error.code == "submit_failed"
    events = await read_events(bus, task_id)
    assert [type(e) for e in events] == [TaskSubmitted, TaskFailed]
    assert record.last_event_id == events[-1].id


async def test_repeating_a_key_finishes_a_submission_whose_request_died_midway(bus: Bus, store: TaskStore) -> None:
    # The first request claimed the key and created the record, then its process died before publishing.
    key = f"k-{new_task_id()}"
    task_id = new_task_id()
    assert await store.claim_idempotency_key(key, task_id) == task_id
    now = now_iso()
    await store.create(
        TaskRecord(id=task_id, state="submitted", agent="assistant", input="hello", created_at=now, updated_at=now)
    )
    assert await task_message_counts(bus, task_id) == (0, 0)

    record = await TaskService(bus, store, any_agent).submit(request(), idempotency_key=key)
    assert record.id == task_id and record.last_event_id is not None
    assert await task_message_counts(bus, task_id) == (1, 1)
    again = await TaskService(bus, store, any_agent).submit(request(), idempotency_key=key)
    assert again.id == task_id
    assert await task_message_counts(bus, task_id) == (1, 1), "a repeat of a finished submission publishes nothing"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (TaskSubmittedData(input="  ", agent="assistant", history=[], metadata={}), "invalid_input"),
        (TaskSubmittedData(input="x", agent="a.b", history=[], metadata={}), "invalid_agent"),
        (TaskSubmittedData(input="x", agent="*", history=[], metadata={}), "invalid_agent"),
    ],
)
async def test_the_service_validates_for_every_caller(
    bus: Bus, store: TaskStore, data: TaskSubmittedData, code: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await TaskService(bus, store, any_agent).submit(data)
    assert caught.value.code == code


async def test_ids_from_outside_are_checked_before_they_reach_a_subject(bus: Bus, store: TaskStore) -> None:
    service = TaskService(bus, store, any_agent)
    for bad in ("*", ">", "a.b.c.d.e", "sluice.evt.>"):
        for call in (service.get(bad), service.cancel(bad), service.provide_input(bad, text="x")):
            with pytest.raises(InvalidInput):
                await call


class ControlAndReadsDown:
    """The real bus, except that core NATS notices fail and direct gets time out (as during a NATS hiccup)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self.js = _NoDirectGets(bus.js)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    async def notify(self, subject: str, payload: bytes) -> None:
        raise nats.errors.ConnectionClosedError()


class _NoDirectGets:
    def __init__(self, js: Any) -> None:
        self._js = js

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)

    async def get_last_msg(self, *args: Any, **kwargs: Any) -> Any:
        raise nats.errors.TimeoutError()


async def test_a_cancel_that_won_the_record_still_ends_an_unattended_task_when_notice_and_reads_fail(
    bus: Bus, store: TaskStore
) -> None:
    # Once the record says `canceled`, a retried cancel is a 409: the terminal event must not depend on the
    # best-effort steps (the runner notice, the trace lookup), or the task's streams would wait forever.
    record = await TaskService(bus, store, any_agent).submit(request())
    flaky = TaskService(ControlAndReadsDown(bus), store, any_agent)  # type: ignore[arg-type]
    after = await flaky.cancel(record.id, "stop")
    assert after.state == "canceled"
    events = await read_events(bus, record.id)
    assert [type(e) for e in events] == [TaskSubmitted, TaskCanceled]
    assert events[-1].trace_id == events[0].trace_id, "the task's trace id comes from its record"
    assert after.last_event_id == events[-1].id
