"""Budgets, cancellation, lost tool answers, poison work and tasks canceled before a runner saw them."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import nats.js.errors
import pytest

from sluice import limits, msgids, subjects
from sluice.eventlog import EventWriter
from sluice.events import (
    AgentCompleted,
    AgentCompletedData,
    Budget,
    BudgetExceeded,
    Event,
    LlmCompleted,
    TaskCanceled,
    TaskCompleted,
    TaskStarted,
)
from sluice.records import TaskStore
from support.catalog import static_tools as tool_descriptors
from support.runners import (
    LogWatch,
    RunnerStack,
    cancel,
    data_of,
    publish_work,
    record_of,
    replace_record,
    runner_stack,
    submit,
    types_of,
    wait_for_end,
)
from support.waiting import eventually

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunnerStack]:
    async with runner_stack(tmp_path_factory.mktemp("runner-control"), max_deliver=2) as s:
        yield s


def story(marker: str = "") -> str:
    return f"tell me a story {marker} ({uuid.uuid4().hex[:10]})"


# The demo model's scripted reply is ~60 words, one chunk each: at [fault:slow:100] it streams for ~6 s. A cut "at
# once" is measured on the runner's own event timestamps and must come well inside that (a loaded test process
# does not move them).
PACED_REPLY_S = 6.0


def at(event: Event) -> float:
    return datetime.fromisoformat(event.ts).timestamp()


def first(events: list[Event], kind: type[Event]) -> Event:
    return next(e for e in events if isinstance(e, kind))


# ---------------------------------------------------------------- budgets


@pytest.mark.parametrize(
    ("text", "budget", "kind"),
    [
        ("tell me a story", Budget(max_output_tokens=5), "tokens"),
        ("tell me a story", Budget(max_cost_usd=0.000001), "cost_usd"),
        ("what is 17*23?", Budget(max_steps=1), "steps"),
        ("tell me a story [fault:slow:100]", Budget(timeout_s=0.6), "time_s"),
    ],
)
async def test_each_budget_kind_warns_then_stops_the_task(
    stack: RunnerStack, text: str, budget: Budget, kind: str
) -> None:
    task = await submit(stack.bus, f"{text} ({uuid.uuid4().hex[:8]})", budget=budget)
    events = await wait_for_end(stack.bus, task)
    types = types_of(events)
    assert types[-2:] == ["budget.exceeded", "task.failed"], types
    warning, exceeded = data_of(events, "budget.warning")[-1], data_of(events, "budget.exceeded")[0]
    assert warning.kind == exceeded.kind == kind
    assert types.index("budget.warning") < types.index("budget.exceeded")
    assert exceeded.used >= exceeded.limit
    failed = data_of(events, "task.failed")[0]
    assert failed.error.code == "budget_exceeded" and kind in failed.error.message
    assert (await record_of(stack.bus, task)).state == "failed"
    if kind == "time_s":  # the running stream was cut at the deadline, long before the reply's end
        assert "llm.completed" not in types
        cut_after_s = at(first(events, BudgetExceeded)) - at(first(events, TaskStarted))
        assert cut_after_s < PACED_REPLY_S / 2, f"cut {cut_after_s:.2f}s after the start (deadline 0.6 s)"


async def test_a_warning_alone_lets_the_task_finish(stack: RunnerStack) -> None:
    task = await submit(stack.bus, f"what is 17*23? ({uuid.uuid4().hex[:8]})", budget=Budget(max_steps=2))
    events = await wait_for_end(stack.bus, task)
    assert types_of(events)[-1] == "task.completed"
    assert [(w.kind, w.used, w.limit) for w in data_of(events, "budget.warning")] == [("steps", 2, 2)]


# ---------------------------------------------------------------- cancel


async def test_cancel_while_streaming_stops_the_stream_promptly(stack: RunnerStack) -> None:
    task = await submit(stack.bus, story("[fault:slow:100]"))
    watch = LogWatch(stack.bus, task)
    streaming = await watch.first("llm.delta")
    assert await cancel(stack.bus, task) == "working"
    events = await wait_for_end(stack.bus, task)
    # The ctl notice stops it at once: the end comes well before the paced reply's (on the runner's clock).
    stopped_after_s = at(first(events, TaskCanceled)) - at(streaming)
    assert stopped_after_s < PACED_REPLY_S / 2, f"stopped {stopped_after_s:.2f}s after the first delta"
    types = types_of(events)
    assert types[-1] == "task.canceled" and types.count("task.canceled") == 1
    assert "llm.completed" not in types
    assert data_of(events, "task.canceled")[0].reason == "test cancel"
    assert (await record_of(stack.bus, task)).state == "canceled"
    await eventually(lambda: _last_event_id_is(stack, task, events[-1].id), what="last_event_id")
    await eventually(lambda: _true(stack.worker.held == 0), what="the slot to be freed")


async def test_cancel_while_waiting_for_a_tool_ends_the_wait_and_ignores_the_late_result(stack: RunnerStack) -> None:
    task = await submit(stack.bus, "what is 6*7?", work=False)
    stack.tools.hold.add((task, "calculator"))
    await publish_work(stack.bus, task)
    watch = LogWatch(stack.bus, task)
    step = await watch.first("llm.completed")
    assert isinstance(step, LlmCompleted) and step.data.tool_calls
    call_id = step.data.tool_calls[0].call_id
    await eventually(lambda: _true(call_id in stack.tools.received), what="the call to reach the tool-runner")
    await cancel(stack.bus, task)
    events = await wait_for_end(stack.bus, task)
    assert types_of(events)[-1] == "task.canceled"
    # The cancel ended the wait, not the tool's deadline (the held call never answers before it).
    waited_s = at(first(events, TaskCanceled)) - at(step)
    assert waited_s < tool_descriptors()["calculator"].timeout_s, f"the wait ended {waited_s:.2f}s after the call"
    assert "tool.completed" not in types_of(events)


async def test_cancel_before_any_runner_took_the_task_leaves_the_edges_event_last(stack: RunnerStack) -> None:
    task = await submit(stack.bus, "what is 6*7?", work=False)
    assert await cancel(stack.bus, task) == "submitted"  # the edge publishes task.canceled itself
    await publish_work(stack.bus, task)
    await eventually(lambda: _work_gone(stack, task), what="the runner to consume the work message")
    events = await wait_for_end(stack.bus, task)
    assert types_of(events) == ["task.submitted", "task.canceled"]


async def test_a_canceled_record_without_its_event_gets_the_event_from_the_runner(stack: RunnerStack) -> None:
    task = await submit(stack.bus, "what is 6*7?", work=False)
    store = await _store(stack)
    await store.update(task, lambda r: replace_record(r, state="canceled"))  # an edge that died before publishing
    await publish_work(stack.bus, task)
    events = await wait_for_end(stack.bus, task)
    assert types_of(events) == ["task.submitted", "task.canceled"]
    await eventually(lambda: _last_event_id_is(stack, task, events[-1].id), what="last_event_id")


async def test_a_cut_completed_record_without_its_event_gets_the_whole_answer_from_the_log(stack: RunnerStack) -> None:
    """A runner that died between recording the end and publishing it: the record keeps only the answer's start,
    so the next runner takes the whole answer for `task.completed` from the log (the last stage's output)."""
    task = await submit(stack.bus, "tell me a long story", work=False)
    answer = "a long answer. " * (limits.RECORD_OUTPUT_MAX_BYTES // 10)
    data = AgentCompletedData(agent="assistant", stage=1, stages=1, output=answer)
    await EventWriter(stack.bus, "agent-runner").emit(
        AgentCompleted, task, data, msg_id=msgids.agent_completed(task, 1)
    )
    store = await _store(stack)
    _, record = await store.update(task, lambda r: replace_record(r, state="completed", output=answer))
    assert record.output_truncated
    await publish_work(stack.bus, task)
    events = await wait_for_end(stack.bus, task)
    assert types_of(events) == ["task.submitted", "agent.completed", "task.completed"]
    assert isinstance(events[-1], TaskCompleted) and events[-1].data.output == answer


async def test_an_answer_too_large_for_one_event_fails_the_task_at_once(stack: RunnerStack) -> None:
    """Over the 1 MiB an event may be, `llm.completed` cannot be logged; every attempt would meet the same, so the
    task fails on the first, saying why, instead of crashing until the poison limit."""
    task = await submit(stack.bus, f"tell me a story [fault:long:1100000] ({uuid.uuid4().hex[:6]})")
    events = await wait_for_end(stack.bus, task)
    types = types_of(events)
    assert types[-1] == "task.failed" and types.count("task.started") == 1, types
    [failed] = data_of(events, "task.failed")
    assert failed.error.code == "event_too_large" and "sluice.evt." in failed.error.message, failed
    record = await record_of(stack.bus, task)
    assert record.state == "failed" and record.error is not None and record.error.code == "event_too_large"


async def test_work_for_a_finished_task_is_dropped(stack: RunnerStack) -> None:
    task = await submit(stack.bus, f"what is 2*2? ({uuid.uuid4().hex[:6]})")
    events = await wait_for_end(stack.bus, task)
    await publish_work(stack.bus, task, msg_id=f"{task}:run:again")
    await eventually(lambda: _work_gone(stack, task), what="the duplicate work to be consumed")
    assert types_of(await wait_for_end(stack.bus, task)) == types_of(events)


# ---------------------------------------------------------------- lost answers and poison


async def test_a_tool_call_nobody_answers_is_failed_by_the_runner_and_the_model_told(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # The wait is the tool's deadline + the ack wait (a dead tool-runner's call is redelivered) + the margin.
    short = {name: dataclasses.replace(d, timeout_s=0.3) for name, d in tool_descriptors().items()}
    root = tmp_path_factory.mktemp("runner-lost-tool")
    async with runner_stack(root, ack_wait_s=0.5, tools=short, tool_wait_margin_s=0.2) as s:
        task = await submit(s.bus, "what is 6*7?", work=False)
        s.tools.hold.add((task, "calculator"))
        await publish_work(s.bus, task)
        events = await wait_for_end(s.bus, task, timeout_s=20)
        assert types_of(events)[-1] == "task.completed"
        result = data_of(events, "tool.completed")[0]
        assert not result.ok and "did not answer" in (result.error or "")
        assert "failed" in data_of(events, "task.completed")[0].output


async def test_a_task_whose_log_cannot_be_read_fails_as_poison_after_max_deliver(stack: RunnerStack) -> None:
    task = await submit(stack.bus, "hello", work=False)
    subject = subjects.event(task, "llm.completed")
    await stack.bus.publish(subject, b'{"not": "an event"}', msg_id=f"{task}:garbage")
    await publish_work(stack.bus, task)
    events = await wait_for_end(stack.bus, task, timeout_s=30)
    failed = [e for e in events if isinstance(e, TaskCompleted)]
    assert not failed
    assert types_of(events)[-1] == "task.failed"
    assert data_of(events, "task.failed")[0].error.code == "max_deliver_exceeded"


async def _last_event_id_is(stack: RunnerStack, task: str, event_id: str | None) -> bool:
    return (await record_of(stack.bus, task)).last_event_id == event_id


async def _true(value: bool) -> bool:
    return value


async def _store(stack: RunnerStack) -> TaskStore:
    return TaskStore(await stack.bus.js.key_value(subjects.TASKS_BUCKET))


async def _work_gone(stack: RunnerStack, task: str) -> bool:
    try:
        await stack.bus.js.get_last_msg(subjects.WORK_STREAM, subjects.work(task))
    except nats.js.errors.NotFoundError:
        return True
    return False


async def test_a_record_whose_submission_never_reached_the_log_is_failed_in_the_end(stack: RunnerStack) -> None:
    task = await submit(stack.bus, "hello", work=False)
    await stack.bus.js.purge_stream(subjects.EVENTS_STREAM, subject=subjects.events_of_task(task))  # no submitted
    await publish_work(stack.bus, task)
    events = await wait_for_end(stack.bus, task, timeout_s=30)
    assert types_of(events) == ["task.failed"]
    assert data_of(events, "task.failed")[0].error.code == "incomplete_submission"
    assert (await record_of(stack.bus, task)).state == "failed"
