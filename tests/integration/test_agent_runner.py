"""The agent-runner in this process against a real nats-server and the demo model on a real socket (real openai
SDK): tool calls, crews, human input and approval, and what the log looks like afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from sluice.events import HistoryMessage, LlmCompleted, LlmStarted, TaskCompleted, TaskInputRequired, TaskRecord
from support.runners import (
    LogWatch,
    RunnerStack,
    by_type,
    data_of,
    demo_requests,
    record_of,
    resume,
    runner_stack,
    submit,
    types_of,
    wait_for_end,
)
from support.waiting import eventually

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunnerStack]:
    async with runner_stack(tmp_path_factory.mktemp("agent-runner")) as s:
        yield s


async def test_calculator_question_is_answered_from_the_tool_result(stack: RunnerStack) -> None:
    task = await submit(stack.bus, "what is 17*23?")
    events = await wait_for_end(stack.bus, task)
    types = types_of(events)
    assert types[-1] == "task.completed", types
    assert "tool.completed" in types
    done = by_type(events, "task.completed")[0]
    assert isinstance(done, TaskCompleted)
    assert "391" in done.data.output
    steps = [e for e in events if isinstance(e, LlmCompleted)]
    assert [s.data.finish_reason for s in steps] == ["tool_calls", "stop"]
    assert steps[0].data.tool_calls[0].name == "calculator"
    assert done.data.usage.output_tokens == sum(s.data.usage.output_tokens for s in steps) > 0
    assert done.data.usage.cost_usd > 0
    record = await eventually(lambda: _state_is(stack, task, "completed"), what="completed record")
    assert record.output == done.data.output
    await eventually(lambda: _last_event_id_is(stack, task, done.id), what="last_event_id")
    assert data_of(events, "task.started")[0].attempt == 1


async def test_parallel_tool_calls_of_one_step_all_complete_before_the_answer(stack: RunnerStack) -> None:
    task = await submit(stack.bus, "what is 2+3 and what is 4*5?")
    events = await wait_for_end(stack.bus, task)
    first = by_type(events, "llm.completed")[0]
    assert isinstance(first, LlmCompleted)
    calls = first.data.tool_calls
    assert [c.name for c in calls] == ["calculator", "calculator"]
    completed = data_of(events, "tool.completed")
    assert sorted(c.call_id for c in completed) == sorted(c.call_id for c in calls)
    answer = data_of(events, "task.completed")[0].output
    assert "5" in answer and "20" in answer
    assert all(stack.tools.calls.get(c.call_id) == 1 for c in calls)  # each sent and run exactly once


async def test_dev_team_runs_four_stages_in_order_each_seeing_the_earlier_output(stack: RunnerStack) -> None:
    task = await submit(stack.bus, "a URL shortener", agent="dev-team")
    events = await wait_for_end(stack.bus, task)
    assert types_of(events)[-1] == "task.completed"
    started = data_of(events, "agent.started")
    done = data_of(events, "agent.completed")
    names = ["architect", "coder", "reviewer", "documenter"]
    assert [(s.agent, s.stage, s.stages) for s in started] == [(n, i, 4) for i, n in enumerate(names, 1)]
    assert [(d.agent, d.stage) for d in done] == [(n, i) for i, n in enumerate(names, 1)]
    assert "architect" in done[0].output  # the demo model names the role its instructions give it
    types = types_of(events)
    for stage in range(4):  # each stage's model call lies between its agent.started and agent.completed
        begin = [i for i, t in enumerate(types) if t == "agent.started"][stage]
        end = [i for i, t in enumerate(types) if t == "agent.completed"][stage]
        assert "llm.completed" in types[begin:end]
    assert data_of(events, "task.completed")[0].output == done[-1].output
    seen = [r.get("last_user") or "" for r in await demo_requests(stack.demo)]
    coder_prompt = next(text for text in seen if "a URL shortener" in text and "### architect" in text)
    assert done[0].output[:60] in coder_prompt


async def test_question_pauses_the_task_without_holding_a_slot_and_the_answer_resumes_it(stack: RunnerStack) -> None:
    task = await submit(stack.bus, "please ask me what my favourite colour is")
    watch = LogWatch(stack.bus, task)
    asked = await watch.first("task.input_required")
    assert isinstance(asked, TaskInputRequired)
    assert asked.data.kind == "question" and "favourite colour" in asked.data.prompt
    record = await eventually(lambda: _state_is(stack, task, "input-required"), what="input-required record")
    assert record.last_event_id == asked.id
    await eventually(lambda: _async(stack.worker.held == 0), what="the runner to free the slot")
    await resume(stack.bus, task, "blue")
    events = await wait_for_end(stack.bus, task)
    assert types_of(events)[-1] == "task.completed"
    assert [s.attempt for s in data_of(events, "task.started")] == [1, 2]
    answer = data_of(events, "tool.completed")[0]
    assert answer.ok and answer.result == "blue" and answer.name == "ask_user"
    assert "blue" in data_of(events, "task.completed")[0].output
    assert answer.call_id not in stack.tools.received  # ask_user never goes to a tool-runner


async def test_denied_approval_is_reported_to_the_model_which_then_answers(stack: RunnerStack) -> None:
    task = await submit(stack.bus, "what is 17*23?", agent="careful-assistant")
    asked = await LogWatch(stack.bus, task).first("task.input_required")
    assert isinstance(asked, TaskInputRequired)
    assert asked.data.kind == "approval" and asked.data.name == "calculator"
    assert asked.data.call_id and asked.data.arguments and "17*23" in asked.data.arguments
    await eventually(lambda: _state_is(stack, task, "input-required"), what="input-required record")
    await resume(stack.bus, task, "", approved=False)
    events = await wait_for_end(stack.bus, task)
    assert types_of(events)[-1] == "task.completed"
    result = data_of(events, "tool.completed")[0]
    assert not result.ok and result.error == "denied by the user" and result.call_id == asked.data.call_id
    assert "denied by the user" in data_of(events, "task.completed")[0].output
    assert asked.data.call_id not in stack.tools.received


async def test_approved_call_runs_and_its_result_is_used(stack: RunnerStack) -> None:
    task = await submit(stack.bus, "what is 17*23?", agent="careful-assistant")
    await LogWatch(stack.bus, task).first("task.input_required")
    await eventually(lambda: _state_is(stack, task, "input-required"), what="input-required record")
    await resume(stack.bus, task, "", approved=True)
    events = await wait_for_end(stack.bus, task)
    assert data_of(events, "tool.completed")[0].ok
    assert "391" in data_of(events, "task.completed")[0].output


async def test_malformed_tool_arguments_reach_the_model_as_a_failed_call(stack: RunnerStack) -> None:
    task = await submit(stack.bus, f"what is 17*23? [fault:bad-args] {task_tag()}")
    events = await wait_for_end(stack.bus, task)
    assert types_of(events)[-1] == "task.completed"
    result = data_of(events, "tool.completed")[0]
    assert not result.ok and "not valid JSON" in (result.error or "")
    assert result.call_id not in stack.tools.received
    assert "failed" in data_of(events, "task.completed")[0].output


async def test_unknown_agent_fails_the_task_with_a_clear_code(stack: RunnerStack) -> None:
    task = await submit(stack.bus, "hello", agent="nobody")
    events = await wait_for_end(stack.bus, task)
    assert types_of(events) == ["task.submitted", "task.started", "task.failed"]
    error = data_of(events, "task.failed")[0].error
    assert error.code == "unknown_agent" and "dev-team" in error.message


async def test_history_reaches_the_model(stack: RunnerStack) -> None:
    history = [HistoryMessage(role="user", content="earlier"), HistoryMessage(role="assistant", content="reply")]
    task = await submit(stack.bus, "and now?", history=history)
    events = await wait_for_end(stack.bus, task)
    assert types_of(events)[-1] == "task.completed"
    started = by_type(events, "llm.started")[0]
    assert isinstance(started, LlmStarted) and started.data.model == "sluice-demo"
    deltas = "".join(d.text for d in data_of(events, "llm.delta"))
    assert deltas == data_of(events, "llm.completed")[0].content


def task_tag() -> str:
    return f"tag-{uuid.uuid4().hex[:10]}"


async def _async(value: bool) -> bool:
    return value


async def _last_event_id_is(stack: RunnerStack, task: str, event_id: str | None) -> bool:
    return (await record_of(stack.bus, task)).last_event_id == event_id


async def _state_is(stack: RunnerStack, task: str, state: str) -> TaskRecord | None:
    record = await record_of(stack.bus, task)
    return record if record.state == state else None
