"""Rebuilding a task from its log: the OpenAI message list and where the loop stands."""

from __future__ import annotations

import json
from typing import Any

from agent_runner.conversation import TaskLog, stage_messages, tool_message
from sluice.events import (
    AgentCompleted,
    AgentCompletedData,
    AgentStarted,
    AgentStartedData,
    Budget,
    BudgetData,
    BudgetWarning,
    Event,
    HistoryMessage,
    LlmCompleted,
    LlmCompletedData,
    LlmStarted,
    LlmStartedData,
    TaskCanceled,
    TaskCanceledData,
    TaskInputRequired,
    TaskInputRequiredData,
    TaskResumed,
    TaskResumedData,
    TaskStarted,
    TaskStartedData,
    TaskSubmitted,
    TaskSubmittedData,
    ToolCall,
    ToolCompleted,
    ToolCompletedData,
    Usage,
)

TASK = "01JTESTTASK0000000000000000"


class Log:
    """Builds a log as a runner would have written it, with sequences and timestamps."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.clock = 0

    def add(self, cls: type[Event], data: Any, *, at: int | None = None) -> Log:
        self.clock = at if at is not None else self.clock + 1
        ts = f"2026-11-21T10:00:{self.clock:02d}.000Z"
        event = cls(task_id=TASK, ts=ts, source="test", data=data)  # type: ignore[call-arg]
        event.id = str(len(self.events) + 1)
        self.events.append(event)
        return self

    def submitted(self, text: str = "what is 17*23?", **kw: Any) -> Log:
        data = TaskSubmittedData(input=text, agent=kw.pop("agent", "assistant"), history=kw.pop("history", []),
                                 metadata={}, budget=kw.pop("budget", Budget()))  # fmt: skip
        return self.add(TaskSubmitted, data, **kw)

    def started(self, attempt: int = 1, **kw: Any) -> Log:
        return self.add(TaskStarted, TaskStartedData(attempt=attempt, runner="r"), **kw)

    def llm_started(self, step: int, attempt: int = 1, agent: str = "assistant") -> Log:
        return self.add(LlmStarted, LlmStartedData(step=step, attempt=attempt, model="m", agent=agent))

    def llm_done(self, step: int, content: str = "", calls: list[ToolCall] | None = None, attempt: int = 1,
                 out: int = 10) -> Log:  # fmt: skip
        data = LlmCompletedData(step=step, attempt=attempt, content=content, tool_calls=calls or [],
                                usage=Usage(input_tokens=5, output_tokens=out, cost_usd=0.001),
                                finish_reason="tool_calls" if calls else "stop")  # fmt: skip
        return self.add(LlmCompleted, data)

    def tool_done(self, call_id: str, result: str = "391", ok: bool = True) -> Log:
        data = ToolCompletedData(call_id=call_id, name="calculator", ok=ok, result=result if ok else None,
                                 error=None if ok else result)  # fmt: skip
        return self.add(ToolCompleted, data)

    def rebuild(self) -> TaskLog:
        return TaskLog.rebuild(TASK, self.events)


CALC = ToolCall(call_id="call_1", name="calculator", arguments='{"expression":"17*23"}')


def test_a_tool_step_becomes_an_assistant_message_with_calls_and_a_tool_message() -> None:
    log = Log().submitted().started().llm_started(1).llm_done(1, calls=[CALC]).tool_done("call_1").rebuild()
    messages = stage_messages(log, 1, "Be helpful.")
    call = {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": CALC.arguments}}
    assert messages == [
        {"role": "system", "content": "Be helpful."},
        {"role": "user", "content": "what is 17*23?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"ok": True, "result": "391"})},
    ]
    assert log.steps_done == 1 and log.last_step == 1 and log.attempts == 1
    assert log.usage == Usage(input_tokens=5, output_tokens=10, cost_usd=0.001)


def test_history_comes_between_the_instructions_and_the_input() -> None:
    history = [HistoryMessage(role="user", content="hi"), HistoryMessage(role="assistant", content="hello")]
    log = Log().submitted("and now?", history=history).rebuild()
    assert [m["role"] for m in stage_messages(log, 1, "")] == ["user", "assistant", "user"]


def test_only_the_last_attempt_of_a_step_counts_and_an_unfinished_step_is_visible() -> None:
    log = (
        Log().submitted().started()
        .llm_started(1, attempt=1).llm_done(1, "first try", attempt=1, out=100)
        .llm_started(1, attempt=2).llm_done(1, "second try", attempt=2, out=7)
        .llm_started(2, attempt=1)
        .started(attempt=2).llm_started(2, attempt=2)
        .rebuild()
    )  # fmt: skip
    assert log.steps[1].completed is not None and log.steps[1].completed.content == "second try"
    assert log.usage.output_tokens == 7
    assert log.steps[2].completed is None and log.steps[2].attempt == 2
    assert log.attempts == 2 and log.steps_done == 1


def test_a_failed_tool_result_reads_as_an_error_for_the_model() -> None:
    failed = ToolCompletedData(call_id="c", name="calculator", ok=False, error="denied by the user")
    assert json.loads(tool_message(failed)) == {"ok": False, "error": "denied by the user"}


def test_a_question_and_its_answer_pair_up_and_the_wait_does_not_count_as_working_time() -> None:
    ask = TaskInputRequiredData(prompt="Your name?", kind="question", call_id="call_9", name="ask_user",
                                arguments='{"question":"Your name?"}')  # fmt: skip
    log = (
        Log().submitted(at=0).started(at=1)
        .add(TaskInputRequired, ask, at=5)
        .add(TaskResumed, TaskResumedData(input="Ada"), at=35)
        .started(attempt=2, at=36)
        .rebuild()
    )  # fmt: skip
    asked = log.asks["call_9"]
    assert asked.answer is not None and asked.answer.input == "Ada" and asked.seq == 3
    assert log.open_ask is None
    start = log.first_started_at
    assert start is not None
    assert log.working_s(start + 40) == 10.0  # 40 s since the start, 30 of them waiting for the human


def test_an_unanswered_question_is_open() -> None:
    ask = TaskInputRequiredData(prompt="?", kind="approval", call_id="call_2", name="calculator", arguments="{}")
    log = Log().submitted().started().add(TaskInputRequired, ask).rebuild()
    assert log.open_ask == "call_2" and log.asks["call_2"].answer is None


def test_crew_steps_belong_to_the_stage_that_was_running_and_later_stages_see_earlier_output() -> None:
    log = (
        Log().submitted("a URL shortener", agent="dev-team").started()
        .add(AgentStarted, AgentStartedData(agent="architect", stage=1, stages=2))
        .llm_started(1, agent="architect").llm_done(1, "the design")
        .add(AgentCompleted, AgentCompletedData(agent="architect", stage=1, stages=2, output="the design"))
        .add(AgentStarted, AgentStartedData(agent="coder", stage=2, stages=2))
        .llm_started(2, agent="coder")
        .rebuild()
    )  # fmt: skip
    assert [s.step for s in log.stage_steps(1)] == [1] and [s.step for s in log.stage_steps(2)] == [2]
    assert log.stage_outputs == {1: "the design"} and log.stages_started == {1, 2}
    messages = stage_messages(log, 2, "You are the coder.", [("architect", "the design")])
    assert messages[-1]["role"] == "user"
    assert (
        messages[-1]["content"].startswith("a URL shortener") and "### architect\nthe design" in messages[-1]["content"]
    )


def test_budget_events_and_the_terminal_event_are_remembered() -> None:
    log = (
        Log().submitted().started()
        .add(BudgetWarning, BudgetData(kind="tokens", used=8, limit=10))
        .add(TaskCanceled, TaskCanceledData(reason="bye"))
        .rebuild()
    )  # fmt: skip
    assert log.budget_events == {("tokens", "warning")}
    assert isinstance(log.terminal, TaskCanceled)
    assert log.last_seq == 4
