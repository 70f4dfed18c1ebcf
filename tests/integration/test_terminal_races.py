"""CONTRACT §3 and §11 under races: every task's log holds at most one terminal event, and nothing after it.

Each test races two writers of one task hundreds of times, each round with a random head start for one side
(seeded, printed on failure), and checks every round's log. Before the one guard (sluice.guard) the answer to a
question could be stored after the edge's `task.canceled`, and a tool's result after the runner's. The last race is
the real agent-runner (in this process, on its own nats-server, with the demo model) ending a task while the edge's
cancel arrives: the record, compare-and-set by both, decides which end is logged, and the log and record agree.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import msgspec
import pytest
from nats.aio.msg import Msg

from sluice import subjects
from sluice.bus import Bus
from sluice.errors import Conflict
from sluice.eventlog import EventWriter, read_log
from sluice.events import (
    TERMINAL_TYPES,
    TaskCanceled,
    TaskCanceledData,
    TaskInputRequired,
    TaskInputRequiredData,
    TaskRecord,
    TaskSubmittedData,
    decode_record,
)
from sluice.ids import new_task_id
from sluice.records import TaskStore
from stream_edge.commands import TaskService
from support.catalog import any_agent
from support.runners import RunnerStack, runner_stack, wait_for_end
from support.tool_runner import create_task, publish_call, running_worker
from support.waiting import eventually
from tool_runner.metrics import ToolMetrics

pytestmark = pytest.mark.timeout(240)

ROUNDS = 150
TOOL_S = 0.01  # how long the raced tool call runs
STALL_S = 0.03
SEED = random.randrange(1 << 30)
Call = Callable[[], Awaitable[object]]


async def _store(bus: Bus) -> TaskStore:
    return TaskStore(await bus.js.key_value(subjects.TASKS_BUCKET))


async def log_types(bus: Bus, task_id: str) -> list[str]:
    return [entry.type async for entry in read_log(bus, task_id)]


def violation(types: list[str]) -> str | None:
    """What breaks 'exactly one terminal event, and it is the last' in a log that has ended (None: nothing)."""
    ends = [i for i, t in enumerate(types) if t in TERMINAL_TYPES]
    if len(ends) > 1:
        return f"{len(ends)} terminal events"
    if ends and ends[0] != len(types) - 1:
        return f"{types[ends[0] + 1 :]} after {types[ends[0]]}"
    return None


async def race(first: Call, second: Call, rng: random.Random, *, spread_s: float = 0.004) -> None:
    """Runs both, one of them (by lot) after a random head start of the other of up to `spread_s`; Conflicts are
    the expected answer of the loser and pass."""

    async def delayed(call: Call, delay_s: float) -> object:
        await asyncio.sleep(delay_s)
        return await call()

    head_start = rng.uniform(0, spread_s)
    delays = (head_start, 0.0) if rng.random() < 0.5 else (0.0, head_start)
    results = await asyncio.gather(delayed(first, delays[0]), delayed(second, delays[1]), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Conflict):
            raise result


def request() -> TaskSubmittedData:
    return TaskSubmittedData(input="race me", agent="assistant", history=[], metadata={})


async def ask(bus: Bus, store: TaskStore, task_id: str) -> None:
    """What a runner does when the model asks a question: take the record, publish the ask, pause the record."""
    await store.update(task_id, lambda r: msgspec.structs.replace(r, state="working"))
    data = TaskInputRequiredData(prompt="Which city?", kind="question")
    seq = await EventWriter(bus, "agent-runner").emit(TaskInputRequired, task_id, data, msg_id=f"{task_id}:ask:1")
    await store.update(task_id, lambda r: msgspec.structs.replace(r, state="input-required", last_event_id=str(seq)))


async def test_an_answer_racing_a_cancel_is_never_logged_after_task_canceled(bus: Bus) -> None:
    store = await _store(bus)
    service = TaskService(bus, store, any_agent)
    rng = random.Random(SEED)
    broken: list[str] = []
    for _ in range(ROUNDS):
        record = await service.submit(request())
        await ask(bus, store, record.id)
        await race(
            partial(service.cancel, record.id, "race"), partial(service.provide_input, record.id, text="Paris"), rng
        )
        if (why := violation(await log_types(bus, record.id))) is not None:
            broken.append(f"{record.id}: {why}")
    assert not broken, f"seed {SEED}: {len(broken)} of {ROUNDS} logs broken, e.g. {broken[:3]}"


async def test_two_cancels_racing_end_the_task_once(bus: Bus) -> None:
    store = await _store(bus)
    service = TaskService(bus, store, any_agent)
    rng = random.Random(SEED)
    broken: list[str] = []
    for _ in range(ROUNDS):
        record = await service.submit(request())
        await race(partial(service.cancel, record.id, "one"), partial(service.cancel, record.id, "two"), rng)
        types = await log_types(bus, record.id)
        if (why := violation(types) or (None if types[-1] == "task.canceled" else f"ends {types[-1]}")) is not None:
            broken.append(f"{record.id}: {why}")
    assert not broken, f"seed {SEED}: {len(broken)} of {ROUNDS} logs broken, e.g. {broken[:3]}"


class StallingPublishes:
    """The real bus, but each JetStream publish waits STALL_S first: a tool-runner on a loaded machine, descheduled
    between its look at the task and its publish."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    async def publish(self, *args: Any, **kwargs: Any) -> int:
        await asyncio.sleep(STALL_S)
        return await self._bus.publish(*args, **kwargs)


async def test_a_tool_result_racing_the_end_of_its_task_is_never_logged_after_it(bus: Bus) -> None:
    """The task's holder ends it (record canceled, then `task.canceled`, as the agent-runner does on a cancel)
    around the time the tool-runner publishes the call's result; the result lands before the end or not at all."""
    store = await _store(bus)
    writer = EventWriter(bus, "agent-runner")
    rng = random.Random(SEED)
    broken: list[str] = []
    async with running_worker(StallingPublishes(bus), concurrency=8) as tool_runner:  # type: ignore[arg-type]
        for n in range(ROUNDS // 3):
            task_id = new_task_id()
            await create_task(bus, task_id)
            watch = await bus.nc.subscribe(subjects.event(task_id, "tool.started"))
            await publish_call(bus, task_id, "slow_echo", {"text": "late", "seconds": TOOL_S})
            await watch.next_msg(timeout=10)  # the call runs now: end the task around the time it answers
            await watch.unsubscribe()
            await asyncio.sleep(rng.uniform(TOOL_S, TOOL_S + STALL_S))
            await store.update(task_id, _canceled)
            await writer.emit(TaskCanceled, task_id, TaskCanceledData(reason="race"), msg_id=f"{task_id}:end")
            await eventually(lambda n=n: _settled(tool_runner.metrics, n + 1), what=f"tool call {n} settled")
            if (why := violation(await log_types(bus, task_id))) is not None:
                broken.append(f"{task_id}: {why}")
    assert not broken, f"seed {SEED}: {len(broken)} of {ROUNDS // 3} logs broken, e.g. {broken[:3]}"


def _canceled(record: TaskRecord) -> TaskRecord | None:
    return None if record.terminal else msgspec.structs.replace(record, state="canceled")


async def _settled(metrics: ToolMetrics, calls: int) -> bool:
    """Has the tool-runner settled `calls` slow_echo calls (run and published, or dropped for the ended task)?"""
    return metrics.count("slow_echo", "ok") + metrics.count("slow_echo", "task_terminal") >= calls


# ---------------------------------------------------------------- cancel vs the runner's own end

COMPLETION_ROUNDS = 250
# The runner ends a task within about a millisecond of its last llm.completed (CAS the record, publish
# task.completed, record its id, ack). The cancel is sent a random moment after that event, around an aim that
# moves after each round towards where cancel and completion each win half the time (later when the cancel won,
# earlier when it lost): so the rounds land inside the runner's window however fast or loaded the machine is.
AIM_START_S = 0.0005
AIM_STEP_S = 0.0001


@pytest.fixture(scope="module")
async def runner(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunnerStack]:
    async with runner_stack(tmp_path_factory.mktemp("race-runner"), concurrency=4) as stack:
        yield stack


async def test_a_cancel_racing_the_runners_completion_ends_the_task_once_and_the_record_agrees(
    runner: RunnerStack,
) -> None:
    """The agent-runner publishes `task.completed` as a cancel arrives: exactly one terminal event, the last; it is
    `task.canceled` if and only if the cancel was accepted (else the cancel is a 409 and the task completed); the
    record says the same state and names that event; and no work message is left to run the task again."""
    bus = runner.bus
    store = await _store(bus)
    service = TaskService(bus, store, any_agent)
    rng = random.Random(SEED)
    answered: dict[str, asyncio.Future[None]] = {}

    async def on_llm_completed(msg: Msg) -> None:  # the model's answer is in the log: the runner ends the task now
        future = answered.get(msg.subject.split(".")[2])
        if future is not None and not future.done():
            future.set_result(None)

    watch = await bus.nc.subscribe(subjects.events_of_type("llm.completed"), cb=on_llm_completed)
    broken: list[str] = []
    outcomes: Counter[str] = Counter()
    aim_s = AIM_START_S
    try:
        for n in range(COMPLETION_ROUNDS):
            record = await service.submit(request_for_an_answer(n))
            answered[record.id] = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(answered[record.id], timeout=20)
            del answered[record.id]
            await asyncio.sleep(rng.uniform(0, 2 * aim_s))
            try:
                await service.cancel(record.id, "race")
                accepted = True
            except Conflict:
                accepted = False
            if (why := await _ended_once(bus, store, service, record.id, accepted)) is not None:
                broken.append(f"{record.id}: {why}")
            outcomes["canceled" if accepted else "completed"] += 1
            aim_s = max(0.0, aim_s + (AIM_STEP_S if accepted else -AIM_STEP_S))
    finally:
        await watch.unsubscribe()
    assert not broken, f"seed {SEED}: {len(broken)} of {COMPLETION_ROUNDS} broken, e.g. {broken[:3]}"
    # Both ends won often: the cancels did land in the runner's window, the race was run.
    assert min(outcomes["canceled"], outcomes["completed"]) >= COMPLETION_ROUNDS // 5, (SEED, outcomes)


def request_for_an_answer(n: int) -> TaskSubmittedData:
    return TaskSubmittedData(input=f"hello ({n})", agent="assistant", history=[], metadata={})


async def _ended_once(bus: Bus, store: TaskStore, service: TaskService, task_id: str, accepted: bool) -> str | None:
    """What is wrong with the task once its record names its terminal event (None: nothing)."""
    end = (await wait_for_end(bus, task_id))[-1]
    record = await _record_naming(store, task_id, end.id or "")
    types = await log_types(bus, task_id)
    if (why := violation(types)) is not None:
        return why
    want = "task.canceled" if accepted else "task.completed"
    if types[-1] != want:
        return f"the cancel was {'accepted' if accepted else 'refused'} but the log ends {types[-1]}"
    if record.state != want.removeprefix("task."):
        return f"the record says {record.state}, the log ends {types[-1]}"
    await eventually(lambda: _no_work(service, task_id), what=f"task {task_id}'s work message acked")
    if (why := violation(await log_types(bus, task_id))) is not None:  # nothing was written after the holder let go
        return why
    return None


async def _record_naming(store: TaskStore, task_id: str, event_id: str) -> TaskRecord:
    """The record, once (watched, not polled) it is terminal and names `event_id` as its last event."""
    async with asyncio.timeout(20):
        watcher = await store.kv.watch(task_id)
        try:
            async for entry in watcher:
                if entry is None or entry.value is None:
                    continue
                record = decode_record(entry.value)
                if record.terminal and record.last_event_id == event_id:
                    return record
        finally:
            await watcher.stop()
    raise AssertionError("unreachable: the watch ends only by the timeout")


async def _no_work(service: TaskService, task_id: str) -> bool:
    return not await service.work_pending(task_id)
