"""`TaskStore` against the real bucket, with the answers JetStream gives while the bucket's stream elects a leader:
no responders, timeouts, and writes that land but whose answer is lost."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
import pytest
from nats.js.kv import KeyValue

from sluice import limits, subjects
from sluice.bus import Bus
from sluice.clock import now_iso
from sluice.errors import Conflict, Unavailable
from sluice.events import TaskRecord
from sluice.ids import new_task_id
from sluice.records import TaskStore


class Electing:
    """The real bucket, except that the next `fail` writes meet no stream (a leader election), and with
    `lose_answer` a write is applied but its answer never arrives (the node died right after storing it)."""

    def __init__(self, kv: KeyValue, *, fail: int = 0, lose_answer: bool = False) -> None:
        self._kv = kv
        self.fail = fail
        self.lose_answer = lose_answer
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kv, name)

    async def _write(self, method: str, *args: Any, **kwargs: Any) -> int:
        self.writes += 1
        if self.fail > 0:
            self.fail -= 1
            raise nats.js.errors.NoStreamResponseError()
        seq: int = await getattr(self._kv, method)(*args, **kwargs)
        if self.lose_answer:
            self.lose_answer = False
            raise nats.errors.TimeoutError()
        return seq

    async def update(self, *args: Any, **kwargs: Any) -> int:
        return await self._write("update", *args, **kwargs)

    async def create(self, *args: Any, **kwargs: Any) -> int:
        return await self._write("create", *args, **kwargs)


@pytest.fixture(scope="module")
async def kv(bus: Bus) -> KeyValue:
    return await bus.js.key_value(subjects.TASKS_BUCKET)


def a_record(state: str = "working") -> TaskRecord:
    now = now_iso()
    return TaskRecord(id=new_task_id(), state=state, agent="assistant", input="x", created_at=now, updated_at=now)  # type: ignore[arg-type]


def complete(record: TaskRecord) -> TaskRecord:
    if record.terminal:
        raise Conflict("task_terminal", "already ended")
    return msgspec.structs.replace(record, state="completed", output="ok")


async def test_an_update_during_a_leader_election_waits_for_the_new_leader(kv: KeyValue) -> None:
    record = a_record()
    await TaskStore(kv).create(record)
    electing = Electing(kv, fail=3)
    _, after = await TaskStore(electing).update(record.id, complete)  # type: ignore[arg-type]
    assert after.state == "completed" and electing.writes == 4
    assert (await TaskStore(kv).get(record.id)).state == "completed"


async def test_a_write_whose_answer_was_lost_is_recognised_on_the_retry_not_refused(kv: KeyValue) -> None:
    record = a_record()
    await TaskStore(Electing(kv, lose_answer=True)).create(record)  # type: ignore[arg-type]
    assert (await TaskStore(kv).get(record.id)).state == "working"
    # `complete` refuses a terminal record: applying it again to our own landed write would be a false Conflict.
    _, after = await TaskStore(Electing(kv, lose_answer=True)).update(record.id, complete)  # type: ignore[arg-type]
    assert after.state == "completed"
    key = f"k-{new_task_id()}"
    assert await TaskStore(Electing(kv, lose_answer=True)).claim_idempotency_key(key, record.id) == record.id  # type: ignore[arg-type]


class Overtaken:
    """The real bucket, but another writer's whole change lands between this writer's read and its first write."""

    def __init__(self, kv: KeyValue, other: Callable[[], Awaitable[object]]) -> None:
        self._kv = kv
        self._other: Callable[[], Awaitable[object]] | None = other

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kv, name)

    async def update(self, *args: Any, **kwargs: Any) -> int:
        other, self._other = self._other, None
        if other is not None:
            await other()
        seq: int = await self._kv.update(*args, **kwargs)
        return seq


async def test_another_writers_change_identical_to_ours_is_not_taken_for_our_own(
    kv: KeyValue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two cancels in the same millisecond make byte-identical records: the one that lost the compare-and-set must
    read the record again (and be refused), not report the winner's write as its own."""
    monkeypatch.setattr("sluice.records.now_iso", lambda: "2026-12-04T20:00:00.000Z")
    record = a_record()
    await TaskStore(kv).create(record)
    winner = TaskStore(kv)
    loser = TaskStore(Overtaken(kv, lambda: winner.update(record.id, complete)))  # type: ignore[arg-type]
    with pytest.raises(Conflict):
        await loser.update(record.id, complete)
    assert (await TaskStore(kv).get(record.id)).state == "completed"


async def test_a_bucket_that_stays_unreachable_is_unavailable_after_the_deadline(kv: KeyValue) -> None:
    record = a_record()
    await TaskStore(kv).create(record)
    store = TaskStore(Electing(kv, fail=1_000), deadline_s=0.3)  # type: ignore[arg-type]
    with pytest.raises(Unavailable) as caught:
        await store.update(record.id, complete)
    assert caught.value.code == "nats_unavailable"
    assert (await TaskStore(kv).get(record.id)).state == "working"


async def test_a_record_keeps_at_most_the_output_cap_cut_at_a_character_and_says_so(kv: KeyValue) -> None:
    store = TaskStore(kv)
    record = a_record()
    await store.create(record)
    answer = "é" * limits.RECORD_OUTPUT_MAX_BYTES  # two bytes each: twice the cap
    _, after = await store.update(record.id, lambda r: msgspec.structs.replace(r, state="completed", output=answer))
    stored = await store.get(record.id)
    assert stored.output_truncated and after.output_truncated
    assert stored.output == answer[: limits.RECORD_OUTPUT_MAX_BYTES // 2]  # whole characters only
    entry = await kv.get(record.id)
    assert entry.value is not None and len(entry.value) < limits.RECORD_MAX_BYTES
    short = a_record()
    await store.create(msgspec.structs.replace(short, output="a short answer"))
    assert not (await store.get(short.id)).output_truncated
