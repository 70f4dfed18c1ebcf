"""`sluice agent-runner` and `sluice tool-runner` as real processes, killed with SIGKILL mid-task: every task
completes, the log shows the retried attempts, no tool call completes twice, and exactly one terminal event ends
the log. Also: SIGTERM hands a running task to another runner.

These tests own their nats-server, so a 2 s ack wait makes a crash visible fast, and no other test's runner takes
their work (durable consumers are shared by name).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from sluice import subjects
from sluice.bus import Bus, connect
from sluice.config import CommonConfig
from sluice.events import TERMINAL_TYPES, Event, LlmCompleted
from sluice.provision import provision
from support.nats_server import NatsServer
from support.procs import ServiceProcess
from support.runners import LogWatch, data_of, submit, types_of, wait_for_end
from support.stack import Stack
from support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ACK_WAIT_S = 2.0


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """NATS and the demo model for the module; each test starts the runners it needs (and the end kills them)."""
    root = tmp_path_factory.mktemp("runner-crash")
    env = {"SLUICE_ACK_WAIT": f"{ACK_WAIT_S}s", "SLUICE_RUNNER_GRACE_S": "1", "SLUICE_MODEL_BACKOFF_S": "0.05"}
    stack = Stack(root=root, env=env)
    stack.nats = NatsServer(store_dir=root / "nats").start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
async def bus(procs: Stack) -> AsyncIterator[Bus]:
    config = CommonConfig(nats_urls=(procs.nats_url,), ack_wait_s=ACK_WAIT_S)
    b = await connect(config, name="sluice-tests-runner-crash")
    await provision(b.js, config)  # first, so the consumers get the short ack wait
    procs.start_service("demo-llm")
    yield b
    await b.close()


@pytest.fixture
def runners(procs: Stack) -> Iterator[Stack]:
    procs.start_service("tool-runner")
    procs.start_service("agent-runner")
    yield procs
    for name in ("agent-runner", "tool-runner"):
        procs.kill(name)


def nonce() -> str:
    return uuid.uuid4().hex[:10]


def assert_ends_once(events: list[Event], terminal: str = "task.completed") -> None:
    types = types_of(events)
    assert types[-1] == terminal, types
    assert sum(t in TERMINAL_TYPES for t in types) == 1, types


def assert_each_call_completed_once(events: list[Event]) -> None:
    completed = [d.call_id for d in data_of(events, "tool.completed")]
    started = [d.call_id for d in data_of(events, "tool.started")]
    assert len(completed) == len(set(completed)) and len(started) == len(set(started))
    asked = {c.call_id for d in data_of(events, "llm.completed") for c in d.tool_calls}
    assert set(completed) == asked


async def test_agent_runner_killed_mid_answer_is_replaced_and_the_step_retried(bus: Bus, runners: Stack) -> None:
    task = await submit(bus, f"tell me a long story [fault:slow:40] ({nonce()})")
    watch = LogWatch(bus, task)
    await watch.until(lambda es: len(data_of(es, "llm.delta")) >= 3 or None, what="three deltas")
    runners.kill("agent-runner")
    runners.start_service("agent-runner")

    events = await wait_for_end(bus, task, timeout_s=40)
    assert_ends_once(events)
    assert [s.attempt for s in data_of(events, "task.started")] == [1, 2]
    assert [(s.step, s.attempt) for s in data_of(events, "llm.started")] == [(1, 1), (1, 2)]
    (completed,) = data_of(events, "llm.completed")
    assert completed.attempt == 2
    assert "".join(d.text for d in data_of(events, "llm.delta") if d.attempt == 2) == completed.content
    assert data_of(events, "task.completed")[0].output == completed.content


async def test_agent_runner_killed_while_waiting_for_a_tool_never_reruns_the_call(bus: Bus, runners: Stack) -> None:
    runners.kill("tool-runner")  # nobody answers yet: the agent-runner will be waiting
    task = await submit(bus, f"what is 17*23? ({nonce()})")
    step = await LogWatch(bus, task).first("llm.completed")
    assert isinstance(step, LlmCompleted)
    assert step.data.tool_calls
    await eventually(lambda: _queued(bus), what="the tool call message")
    runners.kill("agent-runner")
    runners.start_service("tool-runner")  # the call runs while no agent-runner holds the task
    await LogWatch(bus, task).first("tool.completed")
    runners.start_service("agent-runner")

    events = await wait_for_end(bus, task, timeout_s=40)
    assert_ends_once(events)
    assert_each_call_completed_once(events)
    assert [s.attempt for s in data_of(events, "task.started")] == [1, 2]
    assert [(s.step, s.attempt) for s in data_of(events, "llm.started")] == [(1, 1), (2, 1)]  # step 1 not redone
    assert "391" in data_of(events, "task.completed")[0].output


async def test_tool_runner_killed_mid_call_is_replaced_and_the_task_completes(bus: Bus, runners: Stack) -> None:
    tool_runner = runners.service("tool-runner")
    for _ in range(5):
        # Frozen, the tool-runner still has a pull request open for up to its fetch timeout: the call is delivered
        # to it and held there, unacknowledged — a tool-runner that took the call and died before answering.
        assert tool_runner.proc is not None
        os.kill(tool_runner.proc.pid, signal.SIGSTOP)
        task = await submit(bus, f"what is 17*23? ({nonce()})")
        await LogWatch(bus, task).first("llm.completed")
        held = await eventually(lambda: _delivery_state(bus), what="the call to be delivered or queued")
        if held == "held":
            break
        os.kill(tool_runner.proc.pid, signal.SIGCONT)  # its pull had expired: let it answer, and try again
        await wait_for_end(bus, task, timeout_s=30)
    else:
        pytest.fail("the frozen tool-runner never took a call")
    runners.kill("tool-runner")
    replacement_log = tool_runner.log_path.stat().st_size  # the log file is shared by every tool-runner run
    runners.start_service("tool-runner")

    events = await wait_for_end(bus, task, timeout_s=40)
    assert_ends_once(events)
    assert_each_call_completed_once(events)
    assert [s.attempt for s in data_of(events, "task.started")] == [1]  # the agent-runner just waited
    [call] = data_of(events, "tool.started")
    # The replacement (its own lines, this task's call) got the held call.
    assert f"tool call {call.call_id} redelivered (delivery 2)" in tool_runner.log_text(replacement_log)
    assert "391" in data_of(events, "task.completed")[0].output


async def test_sigterm_hands_a_running_task_to_another_runner(bus: Bus, runners: Stack) -> None:
    first = runners.service("agent-runner")
    own_lines = first.log_path.stat().st_size  # the log file is shared by every agent-runner run
    task = await submit(bus, f"tell me a long story [fault:slow:60] ({nonce()})")
    await LogWatch(bus, task).first("llm.delta")
    assert first.terminate(timeout_s=20) == 0  # grace 1 s, then the task is handed back mid-step
    runners.start_service("agent-runner")
    events = await wait_for_end(bus, task, timeout_s=40)
    assert_ends_once(events)
    assert [s.attempt for s in data_of(events, "task.started")] == [1, 2]
    assert [(s.step, s.attempt) for s in data_of(events, "llm.started")] == [(1, 1), (1, 2)]
    leaving = [line for line in first.log_text(own_lines).splitlines() if task in line]
    assert any("handing back" in line or "handed back" in line for line in leaving), leaving


async def _queued(bus: Bus) -> bool:
    info = await bus.js.consumer_info(subjects.TOOLS_STREAM, subjects.TOOL_CONSUMER)
    return bool(info.num_pending or info.num_ack_pending)


async def _delivery_state(bus: Bus) -> str | None:
    info = await bus.js.consumer_info(subjects.TOOLS_STREAM, subjects.TOOL_CONSUMER)
    if info.num_ack_pending:
        return "held"
    if info.num_pending:
        return "queued"
    return None


async def test_a_frozen_runner_that_wakes_after_its_takeover_writes_nothing_more(
    bus: Bus, runners: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SIGSTOP the runner mid-answer, past the ack wait: a second runner takes the task over (attempt 2) and
    finishes it. Then SIGCONT: the first runner wakes up mid-stream, finds itself superseded, and the log it
    finds is the log it leaves — not one token, record change or second end from the old attempt."""
    task = await submit(bus, f"tell me a long story [fault:slow:40] ({nonce()})")
    watch = LogWatch(bus, task)
    await watch.until(lambda es: len(data_of(es, "llm.delta")) >= 3 or None, what="three deltas")
    frozen = runners.service("agent-runner")
    assert frozen.proc is not None
    os.kill(frozen.proc.pid, signal.SIGSTOP)
    second = dataclasses.replace(
        runners._process("agent-runner"), log_path=tmp_path_factory.mktemp("second") / "agent-runner.log"
    )
    try:
        second.start(timeout_s=60)
        events = await wait_for_end(bus, task, timeout_s=60)
        assert [(s.attempt, s.runner) for s in data_of(events, "task.started")][-1][0] == 2
        ended = [e.id for e in events]
        os.kill(frozen.proc.pid, signal.SIGCONT)
        await eventually(lambda: _logged(frozen, "attempt superseded"), timeout_s=30, what="the old attempt")
        after = await wait_for_end(bus, task, timeout_s=5)
        assert [e.id for e in after] == ended, f"the superseded attempt wrote {types_of(after)[len(ended) :]}"
        assert_ends_once(after)
        record = await (await bus.js.key_value(subjects.TASKS_BUCKET)).get(task)
        assert b'"attempt":2' in (record.value or b"") and b'"state":"completed"' in (record.value or b"")
    finally:
        os.kill(frozen.proc.pid, signal.SIGCONT)
        second.kill()


async def _logged(proc: ServiceProcess, text: str) -> bool:
    return text in proc.log_text()


@pytest.mark.timeout(400)
async def test_five_rolling_restarts_during_one_long_task_leave_it_running(bus: Bus, runners: Stack) -> None:
    """SLUICE_MAX_DELIVER is 5 and the runner is restarted (SIGTERM, the hand-back path) five times while one long
    task streams: hand-backs are not crashes, so the task goes on each time and completes."""
    # A chunk every 0.25 s: each attempt is still streaming when the next restart comes, however loaded the machine.
    task = await submit(bus, f"tell me a long story [fault:slow:250] ({nonce()})")
    watch = LogWatch(bus, task)
    for restart in range(1, 6):
        await watch.until(
            lambda es, n=restart: _streaming_in_attempt(es, n), what=f"attempt {restart} streaming", timeout_s=60
        )
        assert runners.service("agent-runner").terminate(timeout_s=20) == 0
        runners.start_service("agent-runner")
    events = await wait_for_end(bus, task, timeout_s=180)
    assert_ends_once(events)
    assert [s.attempt for s in data_of(events, "task.started")] == [1, 2, 3, 4, 5, 6]


def _streaming_in_attempt(events: list[Event], attempt: int) -> bool | None:
    """Has attempt `attempt` of the task started and streamed a delta since?"""
    types = types_of(events)
    starts = [i for i, t in enumerate(types) if t == "task.started"]
    return (len(starts) >= attempt and "llm.delta" in types[starts[attempt - 1] :]) or None
