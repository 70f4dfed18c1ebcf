"""The agent loop with a scripted model and an in-memory sink: retries as attempts, tool calls, pauses, budgets,
and continuing from a log that another runner left behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from agent_runner.agents import load_catalog
from agent_runner.budget import Limits
from agent_runner.conversation import TaskLog
from agent_runner.loop import AgentLoop, Completed, Failed, Interrupted, LoopConfig, Outcome, Paused
from agent_runner.ports import ChatRequest, ModelCallError, ModelReply, ToolDispatch
from sluice.clock import now_iso
from sluice.events import (
    Budget,
    Event,
    TaskResumed,
    TaskResumedData,
    TaskSubmitted,
    TaskSubmittedData,
    ToolCall,
    ToolCompleted,
    ToolCompletedData,
    event_type,
)
from support.catalog import static_tools as tool_descriptors

TASK = "01JLOOPTEST000000000000000"
E = TypeVar("E", bound=Event)
CATALOG = load_catalog(None, default_model="sluice-demo")
TOOLS = tool_descriptors()


@dataclass
class MemorySink:
    """Events in a list, tool calls answered from `answers` (call id → result), or never."""

    answers: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    msg_ids: dict[str, Event] = field(default_factory=dict)
    dispatched: list[str] = field(default_factory=list)

    async def emit(self, cls: type[E], data: Any, *, msg_id: str) -> E:
        if msg_id in self.msg_ids:  # JetStream's deduplication
            return self.msg_ids[msg_id]  # type: ignore[return-value]
        event = cls(task_id=TASK, ts=now_iso(), source="agent-runner", data=data)  # type: ignore[call-arg]
        event.id = str(len(self.events) + 1)
        self.events.append(event)
        self.msg_ids[msg_id] = event
        return event

    async def run_tools(self, calls: Sequence[ToolDispatch], *, after_seq: int) -> list[ToolCompleted]:
        out = []
        for d in calls:
            self.dispatched.append(d.call.call_id)
            data = ToolCompletedData(call_id=d.call.call_id, name=d.call.name, ok=True,
                                     result=self.answers.get(d.call.call_id, "42"))  # fmt: skip
            out.append(await self.emit(ToolCompleted, data, msg_id=f"{TASK}:tool:{d.call.call_id}:done"))
        return out

    @property
    def types(self) -> list[str]:
        return [event_type(type(e)) for e in self.events]

    def of(self, type_: str) -> list[Any]:
        return [getattr(e, "data") for e in self.events if event_type(type(e)) == type_]  # noqa: B009


Step = ModelReply | ModelCallError | tuple[list[str], ModelReply | ModelCallError]


@dataclass
class ScriptedModel:
    """Answers each call with the next scripted step: a reply, an error, or (text chunks, then reply/error)."""

    script: list[Step]
    requests: list[ChatRequest] = field(default_factory=list)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str | ModelReply, None]:
        self.requests.append(request)
        step = self.script.pop(0)
        chunks, end = step if isinstance(step, tuple) else ([], step)
        for chunk in chunks:
            yield chunk
        if isinstance(end, ModelCallError):
            raise end
        yield end


def text(content: str, out: int = 10) -> ModelReply:
    return ModelReply(content=content, tool_calls=[], input_tokens=20, output_tokens=out, finish_reason="stop")


def calls(*tool_calls: ToolCall, out: int = 10) -> ModelReply:
    return ModelReply(content="", tool_calls=list(tool_calls), input_tokens=20, output_tokens=out,
                      finish_reason="tool_calls")  # fmt: skip


def cut() -> ModelCallError:
    return ModelCallError("model_unavailable", "cut", reason="stream_cut", retryable=True)


def submitted_log(text_: str = "q", agent: str = "assistant", budget: Budget | None = None) -> TaskLog:
    data = TaskSubmittedData(input=text_, agent=agent, history=[], metadata={}, budget=budget or Budget())
    event = TaskSubmitted(task_id=TASK, ts=now_iso(), source="edge", data=data, id="1")
    return TaskLog.rebuild(TASK, [event])


async def run(
    model: ScriptedModel, sink: MemorySink, log: TaskLog | None = None, agent: str = "assistant", **limits: Any
) -> Outcome:
    log = log or submitted_log(agent=agent)
    plan = CATALOG.plan(agent)
    assert plan is not None and log.submitted is not None
    loop = AgentLoop(log=log, plan=plan, limits=Limits.resolve(Budget(**limits), plan.ceilings), sink=sink,
                     model=model, tools=TOOLS, config=LoopConfig(delta_window_s=0, backoff_s=0.001,
                                                                  backoff_max_s=0.002))  # fmt: skip
    return await loop.run()


CALC = ToolCall(call_id="call_a", name="calculator", arguments='{"expression":"17*23"}')


async def test_a_tool_step_then_an_answer_completes_with_summed_usage() -> None:
    sink = MemorySink(answers={"call_a": "391"})
    outcome = await run(ScriptedModel([calls(CALC), (["17*23 ", "= 391"], text("17*23 = 391"))]), sink)
    assert outcome == Completed(output="17*23 = 391", usage=sink.of("llm.completed")[0].usage
                                + sink.of("llm.completed")[1].usage)  # fmt: skip
    assert sink.types == ["llm.started", "llm.completed", "tool.completed", "llm.started", "llm.delta", "llm.delta",
                          "llm.completed"]  # fmt: skip
    assert [s.step for s in sink.of("llm.started")] == [1, 2]
    assert outcome.usage.cost_usd == pytest.approx((40 * 0.15 + 20 * 0.60) / 1e6)


async def test_a_retryable_failure_starts_the_step_again_as_the_next_attempt() -> None:
    sink = MemorySink()
    model = ScriptedModel([(["par", "tial"], cut()), text("whole answer")])
    outcome = await run(model, sink)
    assert isinstance(outcome, Completed) and outcome.output == "whole answer"
    assert [(s.step, s.attempt) for s in sink.of("llm.started")] == [(1, 1), (1, 2)]
    assert [(d.attempt, d.text) for d in sink.of("llm.delta")] == [(1, "par"), (1, "tial")]
    assert len(model.requests) == 2 and model.requests[0] == model.requests[1]


async def test_failures_beyond_the_attempts_fail_the_task_with_the_models_code() -> None:
    sink = MemorySink()
    outcome = await run(ScriptedModel([cut(), cut(), cut(), cut()]), sink)
    assert isinstance(outcome, Failed) and outcome.code == "model_unavailable"
    assert [s.attempt for s in sink.of("llm.started")] == [1, 2, 3, 4]


async def test_a_non_retryable_failure_is_not_retried() -> None:
    rejected = ModelCallError("model_error", "400", reason="rejected", retryable=False)
    sink = MemorySink()
    outcome = await run(ScriptedModel([rejected, text("never")]), sink)
    assert isinstance(outcome, Failed) and outcome.code == "model_error"
    assert len(sink.of("llm.started")) == 1


async def test_unknown_tools_and_bad_arguments_are_answered_without_dispatch() -> None:
    sink = MemorySink()
    ghost = ToolCall(call_id="g", name="teleport", arguments="{}")
    broken = ToolCall(call_id="b", name="calculator", arguments='{"expression": "1+')
    outcome = await run(ScriptedModel([calls(ghost, broken), text("sorry")]), sink)
    assert isinstance(outcome, Completed)
    results = {r.call_id: r for r in sink.of("tool.completed")}
    assert not results["g"].ok and "unknown tool 'teleport'" in (results["g"].error or "")
    assert not results["b"].ok and "not valid JSON" in (results["b"].error or "")
    assert sink.dispatched == []


async def test_missing_or_repeated_call_ids_are_made_unique() -> None:
    sink = MemorySink()
    same = ToolCall(call_id="call_0", name="calculator", arguments='{"expression":"1+1"}')
    nameless = ToolCall(call_id="", name="calculator", arguments='{"expression":"2+2"}')
    await run(ScriptedModel([calls(same, nameless), calls(same), text("done")]), sink)
    ids = [c.call_id for step in sink.of("llm.completed") for c in step.tool_calls]
    assert ids == ["call_0", "call_s1_1", "call_s2_0"]
    assert sink.dispatched == ids


async def test_ask_user_pauses_and_the_answer_continues_the_same_call() -> None:
    ask = ToolCall(call_id="q1", name="ask_user", arguments='{"question":"Your name?"}')
    sink = MemorySink()
    log = submitted_log()
    paused = await run(ScriptedModel([calls(ask)]), sink, log)
    assert isinstance(paused, Paused)
    request = sink.of("task.input_required")[0]
    assert (request.kind, request.prompt, request.call_id) == ("question", "Your name?", "q1")
    assert paused.seq == int(sink.events[-1].id or 0)
    # The human answers (the edge publishes task.resumed); the same log continues.
    log.apply(TaskResumed(task_id=TASK, ts=now_iso(), source="edge", data=TaskResumedData(input="Ada"), id="99"))
    model = ScriptedModel([text("Hello Ada")])
    outcome = await run(model, sink, log)
    assert isinstance(outcome, Completed) and outcome.output == "Hello Ada"
    answer = sink.of("tool.completed")[0]
    assert answer.ok and answer.result == "Ada"
    assert model.requests[0].messages[-1] == {"role": "tool", "tool_call_id": "q1",
                                              "content": '{"ok": true, "result": "Ada"}'}  # fmt: skip
    assert sink.dispatched == []


async def test_an_approval_asks_first_and_a_denial_reaches_the_model() -> None:
    sink = MemorySink()
    log = submitted_log(agent="careful-assistant")
    assert isinstance(await run(ScriptedModel([calls(CALC)]), sink, log, agent="careful-assistant"), Paused)
    request = sink.of("task.input_required")[0]
    assert (request.kind, request.name, request.arguments) == ("approval", "calculator", CALC.arguments)
    log.apply(TaskResumed(task_id=TASK, ts=now_iso(), source="edge", data=TaskResumedData(input="", approved=False),
                          id="99"))  # fmt: skip
    outcome = await run(ScriptedModel([text("I was not allowed.")]), sink, log, agent="careful-assistant")
    assert isinstance(outcome, Completed)
    assert sink.of("tool.completed")[0].error == "denied by the user"
    assert sink.dispatched == []


async def test_continuing_a_log_redoes_only_the_unfinished_step_and_never_reruns_a_finished_call() -> None:
    first = MemorySink(answers={"call_a": "391"})
    log = submitted_log()

    class Crash(Exception):
        pass

    class CrashingModel(ScriptedModel):
        async def stream(self, request: ChatRequest) -> AsyncGenerator[str | ModelReply, None]:
            if len(self.requests) == 1:
                self.requests.append(request)
                yield "half an ans"
                raise Crash()
            async for item in super().stream(request):
                yield item

    with pytest.raises(Crash):
        await run(CrashingModel([calls(CALC)]), first, log)
    # Another runner rebuilds the same log and continues.
    again = TaskLog.rebuild(TASK, _with_submitted(first.events))
    second = MemorySink()
    second.events = list(first.events)
    outcome = await run(ScriptedModel([text("391")]), second, again)
    assert isinstance(outcome, Completed)
    started = [(s.step, s.attempt) for s in second.of("llm.started")]
    assert started == [(1, 1), (2, 1), (2, 2)]
    assert first.dispatched == ["call_a"] and second.dispatched == []


def _with_submitted(events: list[Event]) -> list[Event]:
    data = TaskSubmittedData(input="q", agent="assistant", history=[], metadata={}, budget=Budget())
    return [TaskSubmitted(task_id=TASK, ts=now_iso(), source="edge", data=data, id="0"), *events]


async def test_tokens_over_the_budget_after_a_call_fail_the_task() -> None:
    sink = MemorySink()
    outcome = await run(ScriptedModel([calls(CALC, out=9), text("x", out=10)]), sink, max_output_tokens=10)
    assert isinstance(outcome, Failed) and outcome.code == "budget_exceeded"
    assert sink.types[-3:] == ["llm.started", "llm.completed", "budget.exceeded"]
    assert [(b.kind, b.used, b.limit) for b in sink.of("budget.warning")] == [("tokens", 9, 10)]
    assert [(b.kind, b.used, b.limit) for b in sink.of("budget.exceeded")] == [("tokens", 19, 10)]


async def test_a_budget_used_up_stops_the_task_before_the_next_call() -> None:
    sink = MemorySink()
    model = ScriptedModel([calls(CALC, out=10), text("never asked")])
    outcome = await run(model, sink, max_output_tokens=10)
    assert isinstance(outcome, Failed) and "tokens" in outcome.message
    assert sink.types == ["llm.started", "llm.completed", "budget.warning", "tool.completed", "budget.exceeded"]
    assert len(model.requests) == 1


async def test_steps_budget_stops_the_step_after_the_last_allowed() -> None:
    sink = MemorySink()
    outcome = await run(ScriptedModel([calls(CALC), text("x")]), sink, max_steps=1)
    assert isinstance(outcome, Failed)
    assert [(b.kind, b.used, b.limit) for b in sink.of("budget.exceeded")] == [("steps", 1, 1)]


async def test_time_budget_cuts_a_running_stream() -> None:
    class Slow(ScriptedModel):
        async def stream(self, request: ChatRequest) -> AsyncGenerator[str | ModelReply, None]:
            yield "start"
            await asyncio.sleep(10)
            yield text("late")

    sink = MemorySink()
    outcome = await asyncio.wait_for(run(Slow([]), sink, timeout_s=0.3), 3)
    assert isinstance(outcome, Failed) and outcome.code == "budget_exceeded"
    assert sink.types == ["llm.started", "llm.delta", "budget.warning", "budget.exceeded"]
    assert [b.kind for b in sink.of("budget.exceeded")] == ["time_s"]


async def test_a_checkpoint_can_stop_the_loop_between_steps() -> None:
    sink = MemorySink()
    log = submitted_log()
    plan = CATALOG.plan("assistant")
    assert plan is not None

    async def stop() -> Any:
        return "hand_back" if sink.of("llm.completed") else None

    loop = AgentLoop(log=log, plan=plan, limits=Limits(), sink=sink, model=ScriptedModel([calls(CALC), text("x")]),
                     tools=TOOLS, config=LoopConfig(delta_window_s=0), checkpoint=stop)  # fmt: skip
    assert await loop.run() == Interrupted("hand_back")
    assert sink.types == ["llm.started", "llm.completed", "tool.completed"]


def test_the_loop_imports_neither_nats_nor_fastapi() -> None:
    import subprocess
    import sys

    code = (
        "import sys, agent_runner.loop, agent_runner.conversation, agent_runner.coalesce, agent_runner.budget;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('nats', 'fastapi', 'openai'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
