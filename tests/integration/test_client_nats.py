"""Direct NATS subscriptions: one task's events (catch up, then live, each once), and every task's events of some
types."""

from __future__ import annotations

import asyncio

from sluice import events as ev
from sluice import subjects
from sluice.bus import Bus
from sluice.client import events_of_types, task_events
from sluice.eventlog import EventWriter, read_events
from sluice.ids import new_task_id

USAGE = ev.Usage(input_tokens=1, output_tokens=1)


async def emit_delta(writer: EventWriter, task_id: str, i: int) -> int:
    data = ev.LlmDeltaData(step=1, attempt=1, text=f"{i} ")
    return await writer.emit(ev.LlmDelta, task_id, data, msg_id=f"{task_id}:s1:a1:d{i}")


async def complete(writer: EventWriter, task_id: str) -> int:
    data = ev.TaskCompletedData(output="done", usage=USAGE)
    return await writer.emit(ev.TaskCompleted, task_id, data, msg_id=f"{task_id}:end")


async def test_task_events_catch_up_then_follow_live_without_gap_or_duplicate(bus: Bus) -> None:
    task_id = new_task_id()
    writer = EventWriter(bus, "test")
    for i in range(5):
        await emit_delta(writer, task_id, i)
    seen: list[ev.Event] = []
    caught_up = asyncio.Event()

    async def follow() -> None:
        async for event in task_events(bus, task_id):
            seen.append(event)
            if len(seen) == 5:
                caught_up.set()

    follower = asyncio.create_task(follow())
    await asyncio.wait_for(caught_up.wait(), 10)
    for i in range(5, 40):
        await emit_delta(writer, task_id, i)
    await complete(writer, task_id)
    await asyncio.wait_for(follower, 10)
    log = await read_events(bus, task_id)
    assert [e.id for e in seen] == [e.id for e in log]
    assert isinstance(seen[-1], ev.TaskCompleted)


async def test_task_events_from_an_id_of_a_finished_task_end_without_a_consumer(bus: Bus) -> None:
    task_id = new_task_id()
    writer = EventWriter(bus, "test")
    seqs = [await emit_delta(writer, task_id, i) for i in range(3)]
    end = await complete(writer, task_id)
    got = [e.id async for e in task_events(bus, task_id, after=seqs[0])]
    assert got == [str(seqs[1]), str(seqs[2]), str(end)]


async def test_events_of_types_sees_every_task_completed_across_tasks(bus: Bus) -> None:
    writer = EventWriter(bus, "test")
    info = await bus.js.stream_info(subjects.EVENTS_STREAM)
    start = info.state.last_seq
    tasks = [new_task_id() for _ in range(12)]
    wanted = set(tasks)
    completed: dict[str, str] = {}
    failed: list[str] = []

    async def watch() -> None:
        async for event in events_of_types(bus, ["task.completed", "task.failed"], after=start):
            assert event.id is not None and int(event.id) > start
            if event.task_id in wanted:
                if isinstance(event, ev.TaskCompleted):
                    completed[event.task_id] = event.id
                else:
                    failed.append(event.task_id)
            if len(completed) + len(failed) == len(tasks):
                return

    watcher = asyncio.create_task(watch())
    for i, task_id in enumerate(tasks):
        await emit_delta(writer, task_id, 0)  # not a wanted type: never seen
        if i % 4 == 3:
            data = ev.TaskFailedData(error=ev.ErrorInfo(code="x", message="y"), usage=USAGE)
            await writer.emit(ev.TaskFailed, task_id, data, msg_id=f"{task_id}:end")
        else:
            await complete(writer, task_id)
    await asyncio.wait_for(watcher, 10)
    assert set(completed) == {t for i, t in enumerate(tasks) if i % 4 != 3}
    assert failed == [t for i, t in enumerate(tasks) if i % 4 == 3]


async def test_events_of_types_deliver_all_replays_what_the_stream_holds(bus: Bus) -> None:
    writer = EventWriter(bus, "test")
    task_id = new_task_id()
    seq = await complete(writer, task_id)
    async for event in events_of_types(bus, ["task.completed"], deliver="all"):
        if event.task_id == task_id:
            assert event.id == str(seq)
            break
