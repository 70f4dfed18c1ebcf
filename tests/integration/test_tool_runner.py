"""The tool-runner against a real nats-server: tool calls in, `tool.started` / `tool.completed` out, exactly once.

Every test runs its own in-process worker on the shared `tool-runners` consumer (a work-queue stream allows only
one consumer per subject, so there is no private one to use) and gives its calls their own task ids. Where a test
must know that a call was *not* published, it runs a worker with concurrency 1 and follows the call with a
sentinel call: the sentinel completing proves the earlier message was handled.
"""

from __future__ import annotations

import time
from datetime import datetime
from functools import partial

import msgspec
import pytest
from nats.aio.msg import Msg
from opentelemetry.sdk.trace import ReadableSpan

from sluice import events as ev
from sluice import subjects
from sluice.bus import Bus
from sluice.config import CommonConfig
from sluice.eventlog import EventWriter, read_log
from sluice.ids import new_task_id
from support.otlp_receiver import SpanCapture, span_capture
from support.tool_runner import (
    RunningWorker,
    call_events,
    completed_event,
    create_task,
    names_of,
    publish_call,
    running_worker,
    task_store,
)
from support.waiting import eventually
from tool_runner.handler import SOURCE, Disposition, ToolCallHandler
from tool_runner.metrics import ToolMetrics

PARENT_SPAN = "00f067aa0ba902b7"


def _traced(trace: str) -> dict[str, str]:
    """Headers of a message sent from inside span PARENT_SPAN of trace `trace`."""
    return {"traceparent": f"00-{trace}-{PARENT_SPAN}-01"}


async def _sentinel(bus: Bus) -> None:
    """A call on a fresh task that completes only after everything published before it was handled."""
    task_id = new_task_id()
    await create_task(bus, task_id)
    call_id = await publish_call(bus, task_id, "calculator", {"expression": "1+1"})
    await completed_event(bus, task_id, call_id)


async def _fetch_own(bus: Bus, task_id: str) -> Msg:
    """Takes the task's tool call off the shared consumer like a tool-runner would, handing back anything else."""
    sub = await bus.js.pull_subscribe_bind(durable=subjects.TOOL_CONSUMER, stream=subjects.TOOLS_STREAM)
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(1, timeout=1)
            except TimeoutError:
                continue
            for msg in msgs:
                if msg.subject.endswith(task_id):
                    return msg
                await msg.nak()
        raise TimeoutError(f"no tool call of {task_id} arrived")
    finally:
        await sub.unsubscribe()


async def test_calculator_call_logs_started_then_completed_with_the_result_and_call_derived_msg_ids(bus: Bus) -> None:
    task_id, trace = new_task_id(), "4bf92f3577b34da6a3ce929d0e0e4736"
    await create_task(bus, task_id)
    async with running_worker(bus) as running:
        call_id = await publish_call(
            bus,
            task_id,
            "calculator",
            {"expression": "17*23"},
            headers=_traced(trace),
        )
        done = await completed_event(bus, task_id, call_id)
    assert done.data.ok is True and done.data.result == "391" and done.data.error is None
    assert done.data.name == "calculator" and done.data.duration_ms >= 0
    entries = [entry async for entry in read_log(bus, task_id)]
    assert [entry.type for entry in entries] == ["tool.started", "tool.completed"]
    assert [entry.headers["Nats-Msg-Id"] for entry in entries] == [
        f"{task_id}:tool:{call_id}:start",
        f"{task_id}:tool:{call_id}:done",
    ]
    started = entries[0].decode()
    assert isinstance(started, ev.ToolStarted)
    assert started.data.arguments == '{"expression":"17*23"}' and started.source == SOURCE
    assert {entry.decode().trace_id for entry in entries} == {trace}
    assert running.metrics.count("calculator", "ok") == 1


async def test_failed_calls_complete_with_ok_false_and_an_error_that_says_why(bus: Bus) -> None:
    task_id = new_task_id()
    await create_task(bus, task_id)
    cases = {
        "no_such_tool": ("no_such_tool", "{}", "unknown tool 'no_such_tool'"),
        "not_json": ("calculator", "{oops", "not valid JSON"),
        "wrong_type": ("calculator", '{"expression": 17}', "invalid arguments for calculator"),
        "tool_error": ("calculator", '{"expression": "1/0"}', "division by zero"),
        "timeout": ("slow_echo", '{"text": "hi", "seconds": 10}', "slow_echo timed out after 0.3s"),
        # ask_user is the agent-runner's own: a call that reaches a tool-runner anyway is an unknown tool there
        "interactive": ("ask_user", '{"question": "which city?"}', "unknown tool 'ask_user'"),
    }
    async with running_worker(bus) as running:
        for call_id, (name, arguments, _) in cases.items():
            await publish_call(bus, task_id, name, arguments, call_id=call_id, deadline_s=0.3)
        done = {call_id: await completed_event(bus, task_id, call_id) for call_id in cases}
    for call_id, (_, _, error) in cases.items():
        assert done[call_id].data.ok is False, call_id
        assert done[call_id].data.result is None, call_id
        assert error in (done[call_id].data.error or ""), (call_id, done[call_id].data.error)
    assert done["timeout"].data.duration_ms < 3000
    assert running.metrics.count("no_such_tool", "unknown_tool") == 2  # and ask_user: both labelled `unknown`
    assert running.metrics.count("calculator", "bad_arguments") == 2
    assert running.metrics.count("calculator", "tool_error") == 1
    assert running.metrics.count("slow_echo", "timeout") == 1


async def test_an_output_over_the_limit_is_truncated_with_a_marker(bus: Bus) -> None:
    task_id = new_task_id()
    await create_task(bus, task_id)
    async with running_worker(bus, max_output_bytes=300):
        call_id = await publish_call(bus, task_id, "slow_echo", {"text": "é" * 1000, "seconds": 0})
        done = await completed_event(bus, task_id, call_id)
    result = done.data.result or ""
    assert done.data.ok is True
    assert len(result.encode()) <= 300
    assert result.startswith("éé") and result.endswith("[output truncated by the tool-runner: 2000 bytes, limit 300]")


async def test_a_call_longer_than_the_ack_wait_is_kept_alive_and_runs_once(
    bus: Bus, common_config: CommonConfig
) -> None:
    task_id = new_task_id()
    await create_task(bus, task_id)
    seconds = common_config.ack_wait_s + 0.5
    async with running_worker(bus) as running:
        call_id = await publish_call(bus, task_id, "slow_echo", {"text": "long", "seconds": seconds})
        done = await completed_event(bus, task_id, call_id, timeout_s=seconds + 5)
    # Without in_progress() the server would have redelivered it mid-run, and this worker would have run it again.
    assert done.data.ok is True and done.data.duration_ms >= seconds * 1000
    assert (running.metrics.count("slow_echo", "ok"), running.metrics.count("slow_echo", "duplicate")) == (1, 0)


async def test_a_call_for_a_terminal_task_publishes_nothing_and_is_acked(bus: Bus) -> None:
    task_id = new_task_id()
    await create_task(bus, task_id, state="canceled")
    async with running_worker(bus, concurrency=1) as running:
        await publish_call(bus, task_id, "calculator", {"expression": "2+2"})
        await _sentinel(bus)
        assert running.metrics.count("calculator", "task_terminal") >= 1
    assert [entry async for entry in read_log(bus, task_id)] == []


async def test_a_result_that_arrives_after_its_task_was_canceled_is_dropped(bus: Bus) -> None:
    task_id = new_task_id()
    await create_task(bus, task_id)
    async with running_worker(bus, concurrency=1) as running:
        call_id = await publish_call(bus, task_id, "slow_echo", {"text": "late", "seconds": 0.5})
        await eventually(lambda: call_events(bus, task_id, call_id), what="tool.started")
        store = await task_store(bus)
        await store.update(task_id, lambda r: msgspec.structs.replace(r, state="canceled"))
        await _sentinel(bus)
        assert running.metrics.count("slow_echo", "task_terminal") == 1
    assert names_of(await call_events(bus, task_id, call_id)) == ["tool.started"]


async def test_a_redelivered_call_that_already_completed_is_not_run_again(bus: Bus) -> None:
    task_id = new_task_id()
    await create_task(bus, task_id)
    call_id = await publish_call(bus, task_id, "calculator", {"expression": "6*7"})
    # A tool-runner handles the call, then dies before its ack reaches the server (nak: redeliver now).
    first = await _fetch_own(bus, task_id)
    handler = ToolCallHandler(bus, await task_store(bus), ToolMetrics(), max_deliver=5)
    await handler.handle(first)
    await first.nak()
    async with running_worker(bus) as running:
        await eventually(lambda: _positive(running.metrics.count("calculator", "duplicate")), what="duplicate")
        assert running.metrics.count("calculator", "ok") == 0
    assert names_of(await call_events(bus, task_id, call_id)) == ["tool.started", "tool.completed"]


async def test_a_redelivered_call_that_had_started_runs_again_without_a_second_tool_started(bus: Bus) -> None:
    task_id = new_task_id()
    await create_task(bus, task_id)
    call_id = await publish_call(bus, task_id, "calculator", {"expression": "6*7"})
    first = await _fetch_own(bus, task_id)
    # The first runner published tool.started long ago (past the duplicate window: another msg id), then died.
    data = ev.ToolStartedData(call_id=call_id, name="calculator", arguments='{"expression": "6*7"}')
    await EventWriter(bus, SOURCE).emit(ev.ToolStarted, task_id, data, msg_id=f"{task_id}:long-ago")
    await first.nak()
    async with running_worker(bus):
        done = await completed_event(bus, task_id, call_id)
    assert done.data.result == "42"
    assert names_of(await call_events(bus, task_id, call_id)) == ["tool.started", "tool.completed"]


async def test_a_call_delivered_more_than_max_deliver_times_fails_and_is_terminated(bus: Bus) -> None:
    task_id = new_task_id()
    await create_task(bus, task_id)
    call_id = await publish_call(bus, task_id, "calculator", {"expression": "6*7"})
    await (await _fetch_own(bus, task_id)).nak()  # delivery 1 went to a runner that died
    async with running_worker(bus, max_deliver=1) as running:
        done = await completed_event(bus, task_id, call_id)
        assert running.metrics.count("calculator", "poison") == 1
    assert done.data.ok is False and "abandoned after 2 attempts" in (done.data.error or "")


async def test_an_undecodable_message_is_terminated_without_stopping_the_runner(bus: Bus) -> None:
    task_id = new_task_id()
    async with running_worker(bus, concurrency=1) as running:
        await bus.publish(subjects.tool_call("calculator", task_id), b"not a tool call", msg_id=f"{task_id}:junk")
        await _sentinel(bus)
        assert running.metrics.count("", "undecodable") >= 1


async def test_no_more_calls_run_at_once_than_the_concurrency_allows(bus: Bus) -> None:
    task_id = new_task_id()
    await create_task(bus, task_id)
    async with running_worker(bus, concurrency=2):
        call_ids = [await publish_call(bus, task_id, "slow_echo", {"text": "x", "seconds": 0.3}) for _ in range(5)]
        for call_id in call_ids:
            await completed_event(bus, task_id, call_id)
    # tool.started is published after a slot is taken and tool.completed before it is freed, so their
    # intervals overlap no more than the slots do.
    changes: list[tuple[datetime, int]] = []
    for call_id in call_ids:
        started, completed = await call_events(bus, task_id, call_id)
        changes += [(datetime.fromisoformat(started.ts), 1), (datetime.fromisoformat(completed.ts), -1)]
    running, peak = 0, 0
    for _, delta in sorted(changes):  # at equal times an end (-1) sorts before a start
        running += delta
        peak = max(peak, running)
    assert peak == 2


async def test_the_execute_tool_span_continues_the_callers_trace(bus: Bus) -> None:
    capture = span_capture()
    task_id, trace = new_task_id(), "0af7651916cd43dd8448eb211c80319c"
    await create_task(bus, task_id)
    async with running_worker(bus):
        call_id = await publish_call(
            bus,
            task_id,
            "calculator",
            {"expression": "2**10"},
            headers=_traced(trace),
        )
        done = await completed_event(bus, task_id, call_id)
    assert done.data.result == "1024" and done.trace_id == trace
    span = (await eventually(lambda: _spans(capture, trace), what="execute_tool span"))[0]
    assert span.parent is not None and span.parent.span_id == int(PARENT_SPAN, 16)
    attributes = dict(span.attributes or {})
    assert {k: attributes[k] for k in _EXPECTED_ATTRIBUTES} == {**_EXPECTED_ATTRIBUTES, "gen_ai.tool.call.id": call_id}
    assert attributes["messaging.nats.delivery_count"] == 1 and attributes["sluice.task_id"] == task_id
    # The events' publishes are children of the tool span.
    sends = [s for s in capture.spans(trace_id=int(trace, 16)) if s.name.startswith("send sluice.evt")]
    assert {s.parent.span_id for s in sends if s.parent} == {span.context.span_id}


_EXPECTED_ATTRIBUTES = {
    "gen_ai.operation.name": "execute_tool",
    "gen_ai.tool.name": "calculator",
    "gen_ai.tool.call.id": "",
    "messaging.system": "nats",
    "messaging.destination.name": "sluice.tool.{name}.{task_id}",
    "messaging.operation.type": "process",
}


async def _spans(capture: SpanCapture, trace: str) -> list[ReadableSpan]:
    return capture.spans(trace_id=int(trace, 16), name="execute_tool calculator")


async def test_on_stop_a_call_past_the_grace_period_is_handed_back_and_completed_once_elsewhere(bus: Bus) -> None:
    task_id = new_task_id()
    await create_task(bus, task_id)
    async with running_worker(bus, grace_s=0.2) as running:
        call_id = await publish_call(bus, task_id, "slow_echo", {"text": "handed back", "seconds": 1.5})
        await eventually(lambda: call_events(bus, task_id, call_id), what="tool.started")
        await running.stop()
    # Stop did not wait for the 1.5 s call: the worker that ran it published no tool.completed.
    assert names_of(await call_events(bus, task_id, call_id)) == ["tool.started"]
    async with running_worker(bus):
        done = await completed_event(bus, task_id, call_id)
    assert done.data.result == "handed back"
    assert names_of(await call_events(bus, task_id, call_id)) == ["tool.started", "tool.completed"]


async def test_five_rolling_stops_during_one_call_never_count_toward_the_poison_limit(bus: Bus) -> None:
    """max_deliver 5 and five tool-runners stopped (SIGTERM's path) one after another mid-call: each hands the call
    back, none of that is a crash, and the sixth runs it to the end instead of abandoning it as poison."""
    task_id = new_task_id()
    await create_task(bus, task_id)
    call_id = await publish_call(bus, task_id, "slow_echo", {"text": "still here", "seconds": 1.0})
    for restart in range(5):
        async with running_worker(bus, grace_s=0.05, max_deliver=5) as running:
            await eventually(partial(_busy, running), what=f"tool-runner {restart} to take the call")
    async with running_worker(bus, max_deliver=5) as last:
        done = await completed_event(bus, task_id, call_id)
    assert done.data.ok and done.data.result == "still here", done.data.error
    assert last.metrics.count("slow_echo", "poison") == 0
    assert names_of(await call_events(bus, task_id, call_id)) == ["tool.started", "tool.completed"]


async def test_on_stop_a_running_call_within_the_grace_period_finishes_and_is_acked(bus: Bus) -> None:
    task_id = new_task_id()
    await create_task(bus, task_id)
    async with running_worker(bus, grace_s=5) as running:
        call_id = await publish_call(bus, task_id, "slow_echo", {"text": "finished", "seconds": 0.5})
        await eventually(lambda: call_events(bus, task_id, call_id), what="tool.started")
        await running.stop()
        assert running.metrics.count("slow_echo", "ok") == 1
    done = await completed_event(bus, task_id, call_id, timeout_s=1)
    assert done.data.result == "finished"


async def _busy(running: RunningWorker) -> bool:
    return running.worker.running > 0


async def _positive(value: float) -> bool:
    return value > 0


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{}",
        b'{"task_id": "../x", "call_id": "c", "name": "calculator", "arguments": ""}',
    ],
    ids=["empty", "fields_missing", "task_id_invalid"],
)
async def test_an_undecodable_payload_is_terminated(bus: Bus, payload: bytes) -> None:
    handler = ToolCallHandler(bus, await task_store(bus), ToolMetrics(), max_deliver=5)
    assert await handler.handle(_PayloadOnly(payload)) is Disposition.TERM  # type: ignore[arg-type]


class _PayloadOnly:
    """All of a message the handler reads before it gives up on an undecodable payload."""

    subject = "sluice.tool.calculator.x"
    headers: dict[str, str] | None = None

    def __init__(self, data: bytes) -> None:
        self.data = data
