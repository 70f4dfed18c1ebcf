"""Every fault the demo model can inject ends in success after a retry or in a clear task.failed: retried steps
show as new `llm.started` events with the same step and a higher attempt."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from support.runners import RunnerStack, data_of, runner_stack, submit, types_of, wait_for_end

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunnerStack]:
    # Three attempts per step, a short silence limit so a stalled stream is retried quickly.
    async with runner_stack(tmp_path_factory.mktemp("runner-faults"), model_max_attempts=3, model_timeout_s=0.6) as s:
        yield s


def prompt(text: str) -> str:
    """Once-faults are remembered per conversation (its first user message): a unique word keeps tests apart."""
    return f"{text} ({uuid.uuid4().hex[:10]})"


@pytest.mark.parametrize("fault", ["429-once", "500-once", "503-once", "cut-once:3", "cut-once:0", "stall:0.2"])
async def test_a_passing_fault_is_retried_and_the_task_completes(stack: RunnerStack, fault: str) -> None:
    task = await submit(stack.bus, prompt(f"tell me a story [fault:{fault}]"))
    events = await wait_for_end(stack.bus, task)
    assert types_of(events)[-1] == "task.completed"
    attempts = [(s.step, s.attempt) for s in data_of(events, "llm.started")]
    if fault.startswith("stall"):
        assert attempts == [(1, 1)]
    else:
        assert attempts == [(1, 1), (1, 2)]
    completed = data_of(events, "llm.completed")
    assert [(c.step, c.attempt) for c in completed] == [attempts[-1]]
    last_attempt_text = "".join(d.text for d in data_of(events, "llm.delta") if d.attempt == attempts[-1][1])
    assert last_attempt_text == completed[0].content == data_of(events, "task.completed")[0].output


async def test_a_stream_cut_mid_answer_leaves_partial_deltas_that_the_retry_supersedes(stack: RunnerStack) -> None:
    task = await submit(stack.bus, prompt("tell me a story [fault:cut-once:8]"))
    events = await wait_for_end(stack.bus, task)
    first = "".join(d.text for d in data_of(events, "llm.delta") if d.attempt == 1)
    second = "".join(d.text for d in data_of(events, "llm.delta") if d.attempt == 2)
    assert first and second.startswith(first) and len(second) > len(first)
    types = types_of(events)
    assert types.index("llm.started", types.index("llm.delta")) > types.index("llm.delta")  # attempt 2 after deltas


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("429", "rate limited"), ("500", "failed (500)"), ("cut:3", "ended before"), ("stall:5", "in time")],
)
async def test_a_persistent_fault_fails_the_task_after_the_last_attempt(
    stack: RunnerStack, fault: str, reason: str
) -> None:
    task = await submit(stack.bus, prompt(f"tell me a story [fault:{fault}]"))
    events = await wait_for_end(stack.bus, task)
    types = types_of(events)
    assert types[-1] == "task.failed" and types.count("task.failed") == 1
    assert [(s.step, s.attempt) for s in data_of(events, "llm.started")] == [(1, 1), (1, 2), (1, 3)]
    assert "llm.completed" not in types
    error = data_of(events, "task.failed")[0].error
    assert error.code == "model_unavailable" and reason in error.message


async def test_a_rejected_request_fails_at_once_without_retries(stack: RunnerStack) -> None:
    task = await submit(stack.bus, prompt("tell me a story [fault:400]"))
    events = await wait_for_end(stack.bus, task)
    assert [(s.step, s.attempt) for s in data_of(events, "llm.started")] == [(1, 1)]
    error = data_of(events, "task.failed")[0].error
    assert error.code == "model_error" and "400" in error.message


async def test_a_burst_of_chunks_is_coalesced_into_a_few_deltas(stack: RunnerStack) -> None:
    task = await submit(stack.bus, prompt("tell me a story"))
    events = await wait_for_end(stack.bus, task)
    assert types_of(events)[-1] == "task.completed"
    deltas = data_of(events, "llm.delta")
    words = len(data_of(events, "llm.completed")[0].content.split())
    assert 1 <= len(deltas) <= words // 4  # one chunk per word, as fast as the demo model can send them
