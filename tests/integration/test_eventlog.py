"""The event log: publishes are deduplicated by Nats-Msg-Id, and a task's history reads back exactly."""

from __future__ import annotations

from sluice import events as ev
from sluice.bus import Bus
from sluice.eventlog import EventWriter, oldest_event, read_events, read_log
from sluice.ids import new_task_id


async def test_retried_publish_with_same_msg_id_is_stored_once(bus: Bus) -> None:
    task_id = new_task_id()
    writer = EventWriter(bus, "test")
    data = ev.TaskCanceledData(reason="test")
    first = await writer.emit(ev.TaskCanceled, task_id, data, msg_id=f"{task_id}:end")
    again = await writer.emit(ev.TaskCanceled, task_id, data, msg_id=f"{task_id}:end")
    assert first == again
    assert [e.id for e in await read_events(bus, task_id)] == [str(first)]


async def test_history_reads_back_in_order_across_batches_and_after_a_cursor(bus: Bus) -> None:
    task_id, other = new_task_id(), new_task_id()
    writer = EventWriter(bus, "test")
    seqs = []
    for i in range(25):
        seqs.append(await writer.emit(ev.LlmDelta, task_id, ev.LlmDeltaData(step=1, attempt=1, text=str(i)),
                                      msg_id=f"{task_id}:{i}"))  # fmt: skip
        await writer.emit(ev.LlmDelta, other, ev.LlmDeltaData(step=1, attempt=1, text="x"), msg_id=f"{other}:{i}")
    got = [entry.seq async for entry in read_log(bus, task_id, batch=7)]
    assert got == seqs
    tail = await read_events(bus, task_id, after=seqs[9])
    assert [e.id for e in tail] == [str(s) for s in seqs[10:]]
    assert [e.data.text for e in tail] == [str(i) for i in range(10, 25)]  # type: ignore[attr-defined]
    oldest = await oldest_event(bus, task_id)
    assert oldest is not None and oldest.seq == seqs[0]
    assert await oldest_event(bus, new_task_id()) is None
