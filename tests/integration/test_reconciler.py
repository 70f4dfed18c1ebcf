"""CONTRACT §11: a task never stays `submitted` or `working` with nobody working on it.

The half-done writes are made for real: NATS is stopped at the moment the edge publishes the work message (after
the record and `task.submitted`, or `task.resumed` and the record, were stored), so the edge's request fails and
its own fallback cannot run either. Then NATS comes back, and the reconciler (or a cancel) must repair the task.
These tests own their nats-server: stopping it must not disturb other tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import nats.js.errors
import pytest
from nats.js.api import KeyValueConfig

from sluice import subjects
from sluice.bus import Bus, connect
from sluice.config import CommonConfig
from sluice.errors import Unavailable
from sluice.eventlog import EventWriter, read_log
from sluice.events import TaskInputRequired, TaskInputRequiredData, TaskSubmittedData
from sluice.ids import is_task_id
from sluice.messages import decode_work
from sluice.provision import provision
from sluice.records import TaskStore
from stream_edge.commands import TaskService
from stream_edge.reconciler import LEASE_KEY, Lease, Reconciler
from support.catalog import any_agent
from support.nats_server import NatsServer, running_server

pytestmark = pytest.mark.timeout(120)


class NatsStops:
    """The real bus, but NATS is stopped at one publish: before it is sent (`before`) or once it is stored."""

    def __init__(self, bus: Bus, server: NatsServer, *, at: Callable[[str], bool], before: bool) -> None:
        self._bus = bus
        self._server = server
        self._at = at
        self._before = before

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    async def publish(self, subject: str, payload: bytes, **kwargs: Any) -> int:
        if self._before and self._at(subject):
            self._server.stop()
        seq = await self._bus.publish(subject, payload, **kwargs)
        if not self._before and self._at(subject):
            self._server.stop()
        return seq


def stops_at_the_work_publish(bus: Bus, server: NatsServer) -> NatsStops:
    """The publish of a work message finds NATS gone: stopped right then."""
    return NatsStops(bus, server, at=lambda subject: subject.startswith("sluice.run."), before=True)


def stops_after_the_answer(bus: Bus, server: NatsServer) -> NatsStops:
    """NATS is stopped right after `task.resumed` is stored: the edge's next steps (checking the stored answer, the
    record, the work message) all fail, as if the edge had died there."""
    return NatsStops(bus, server, at=lambda subject: subject.endswith(".task.resumed"), before=False)


@pytest.fixture
async def own_nats(tmp_path: Path) -> AsyncIterator[tuple[NatsServer, Bus, TaskStore]]:
    with running_server(tmp_path) as server:
        config = CommonConfig(nats_urls=(server.url,))
        bus = await connect(config, name="sluice-reconciler-tests")
        bus.publish_deadline_s = 1.0  # a stopped NATS fails the request in a second, not thirty
        try:
            await provision(bus.js, config)
            store = TaskStore(await bus.js.key_value(subjects.TASKS_BUCKET), deadline_s=1.0)
            yield server, bus, store
        finally:
            await bus.close()


async def back(server: NatsServer, bus: Bus) -> None:
    """NATS restarted on its port and store; returns once the bus has reconnected."""
    server.start()
    reconnected = asyncio.Event()
    bus.state.listeners.append(lambda what: reconnected.set() if what == "reconnected" else None)
    if not bus.nc.is_connected:
        await asyncio.wait_for(reconnected.wait(), 20)
    await bus.nc.flush(timeout=5)


async def work_messages(bus: Bus, task_id: str) -> list[str]:
    """The reasons of the task's work messages in SLUICE_WORK now."""
    try:
        msg = await bus.js.get_last_msg(subjects.WORK_STREAM, subjects.work(task_id))
    except nats.js.errors.NotFoundError:
        return []
    return [decode_work(msg.data or b"").reason]


def reconciler(bus: Bus, store: TaskStore, leases: Any, **options: float) -> Reconciler:
    return Reconciler(TaskService(bus, store, any_agent), Lease(leases, LEASE_KEY, "test"), interval_s=0.2, **options)


async def test_a_submission_whose_work_publish_died_is_reenqueued_by_the_reconciler(
    own_nats: tuple[NatsServer, Bus, TaskStore],
) -> None:
    server, bus, store = own_nats
    flaky = TaskService(stops_at_the_work_publish(bus, server), store, any_agent)  # type: ignore[arg-type]
    request = TaskSubmittedData(input="stranded?", agent="assistant", history=[], metadata={})
    with pytest.raises(Unavailable):
        await flaky.submit(request)
    await back(server, bus)
    [task_id] = [k for k in await store.kv.keys() if is_task_id(k)]  # not idempotency or tenant-index keys
    assert (await store.get(task_id)).state == "submitted"
    assert [e.type async for e in read_log(bus, task_id)] == ["task.submitted"]
    assert await work_messages(bus, task_id) == [], "the work message was never stored: the task is stranded"

    leases = await bus.js.key_value(subjects.LEASES_BUCKET)
    repair = reconciler(bus, store, leases, grace_s=0.0)
    assert await repair.lease.hold()
    assert await repair.sweep() == 1
    assert await work_messages(bus, task_id) == ["submitted"], "any runner can take the task now"
    assert await repair.sweep() == 0, "a task with a work message is left alone"


async def test_a_record_changed_within_the_grace_period_is_left_to_its_writer(
    own_nats: tuple[NatsServer, Bus, TaskStore],
) -> None:
    _, bus, store = own_nats
    service = TaskService(bus, store, any_agent)
    record = await service.submit(TaskSubmittedData(input="busy", agent="assistant", history=[], metadata={}))
    await bus.js.purge_stream(subjects.WORK_STREAM)  # as if not yet published: the writer is still at it
    repair = reconciler(bus, store, await bus.js.key_value(subjects.LEASES_BUCKET), grace_s=600.0)
    assert await repair.lease.hold()
    assert await repair.sweep() == 0
    assert await work_messages(bus, record.id) == []


async def test_cancel_of_a_working_task_whose_resume_died_half_way_publishes_task_canceled(
    own_nats: tuple[NatsServer, Bus, TaskStore],
) -> None:
    """The answer was stored and the record moved to `working`, but the work message never was: no runner holds
    the task nor ever will, so the cancel itself must end it."""
    server, bus, store = own_nats
    service = TaskService(bus, store, any_agent)
    record = await service.submit(TaskSubmittedData(input="ask me", agent="assistant", history=[], metadata={}))
    await bus.js.purge_stream(subjects.WORK_STREAM)  # a runner took the task and asked a question:
    await store.update(record.id, lambda r: msgspec.structs.replace(r, state="working"))
    data = TaskInputRequiredData(prompt="Which city?", kind="question")
    seq = await EventWriter(bus, "agent-runner").emit(TaskInputRequired, record.id, data, msg_id=f"{record.id}:ask")
    await store.update(record.id, lambda r: msgspec.structs.replace(r, state="input-required", last_event_id=str(seq)))

    flaky = TaskService(stops_at_the_work_publish(bus, server), store, any_agent)  # type: ignore[arg-type]
    with pytest.raises(Unavailable):
        await flaky.provide_input(record.id, text="Paris")
    await back(server, bus)
    assert (await store.get(record.id)).state == "working" and await work_messages(bus, record.id) == []

    canceled = await service.cancel(record.id, "nobody is on it")
    types = [e.type async for e in read_log(bus, record.id)]
    assert types[-2:] == ["task.resumed", "task.canceled"], types
    assert canceled.state == "canceled" and canceled.last_event_id is not None


async def asked(service: TaskService, store: TaskStore, bus: Bus) -> str:
    """A task a runner took and that asked a question: `task.input_required` stored, the record `input-required`."""
    record = await service.submit(TaskSubmittedData(input="ask me", agent="assistant", history=[], metadata={}))
    await bus.js.purge_stream(subjects.WORK_STREAM)
    await store.update(record.id, lambda r: msgspec.structs.replace(r, state="working"))
    data = TaskInputRequiredData(prompt="Which city?", kind="question")
    seq = await EventWriter(bus, "agent-runner").emit(TaskInputRequired, record.id, data, msg_id=f"{record.id}:ask")
    await store.update(record.id, lambda r: msgspec.structs.replace(r, state="input-required", last_event_id=str(seq)))
    return record.id


async def test_an_answer_stored_just_before_the_edge_lost_nats_is_carried_on_by_the_reconciler(
    own_nats: tuple[NatsServer, Bus, TaskStore],
) -> None:
    """`task.resumed` is in the log but the record still says `input-required` and no work message exists: the
    question is answered (a retry of the answer is refused), yet nothing would ever run the task again."""
    server, bus, store = own_nats
    task_id = await asked(TaskService(bus, store, any_agent), store, bus)
    flaky = TaskService(stops_after_the_answer(bus, server), store, any_agent)  # type: ignore[arg-type]
    with pytest.raises(Unavailable):
        await flaky.provide_input(task_id, text="Paris")
    await back(server, bus)
    assert (await store.get(task_id)).state == "input-required"
    assert [e.type async for e in read_log(bus, task_id)][-2:] == ["task.input_required", "task.resumed"]
    assert await work_messages(bus, task_id) == []

    repair = reconciler(bus, store, await bus.js.key_value(subjects.LEASES_BUCKET), grace_s=0.0)
    assert await repair.lease.hold()
    assert await repair.sweep() == 1
    record = await store.get(task_id)
    assert record.state == "working", "the resume the edge began is finished"
    resumed = [e async for e in read_log(bus, task_id) if e.type == "task.resumed"]
    assert len(resumed) == 1 and record.last_event_id == str(resumed[0].seq)
    assert await work_messages(bus, task_id) == ["resumed"], "a runner takes the task up from the answer"
    assert await repair.sweep() == 0, "done once"


async def test_a_task_waiting_for_its_answer_is_left_waiting(own_nats: tuple[NatsServer, Bus, TaskStore]) -> None:
    _, bus, store = own_nats
    task_id = await asked(TaskService(bus, store, any_agent), store, bus)
    repair = reconciler(bus, store, await bus.js.key_value(subjects.LEASES_BUCKET), grace_s=0.0)
    assert await repair.lease.hold()
    assert await repair.sweep() == 0
    assert (await store.get(task_id)).state == "input-required" and await work_messages(bus, task_id) == []


async def test_one_reconciler_holds_the_lease_and_another_takes_it_when_it_lapses(
    own_nats: tuple[NatsServer, Bus, TaskStore],
) -> None:
    _, bus, _ = own_nats
    kv = await bus.js.create_key_value(KeyValueConfig(bucket="test-leases", history=1, ttl=1.0))
    first, second = Lease(kv, LEASE_KEY, "edge-a"), Lease(kv, LEASE_KEY, "edge-b")
    assert await first.hold() and not await second.hold()
    assert await first.hold(), "the holder renews"
    await asyncio.sleep(1.5)  # the lease's time-to-live: nothing announces an expiry
    assert await second.hold(), "a lease not renewed within its time-to-live is free"
    assert not await first.hold(), "the old holder learns it lost the lease"
    await second.release()
    assert await first.hold()
