"""The agent loop: model call → tool calls → next model call, until the model answers or a limit stops it.

It works on a `TaskLog` (rebuilt from the task's log, or fresh) and continues from wherever that log stands: an
unfinished step is redone with a higher attempt, a tool call whose `tool.completed` exists is never sent again, a
question already asked is not asked twice. It publishes through an `EventSink` and calls the model through a
`ModelClient` (see `ports.py`); it knows neither NATS nor HTTP.

Per step: `llm.started` → `llm.delta`… (coalesced) → `llm.completed`; a retryable model failure starts the step
again as a new attempt (backoff, Retry-After honoured), up to the configured attempts. Then the step's tool calls:
unknown tools and malformed arguments are answered ok=false here, the model sees why; `ask_user` and calls that
need approval pause the task (`task.input_required`); the rest run in parallel through the sink.

Outcomes: `Completed`, `Failed` (model errors, budget), `Paused` (waiting for a human), `Interrupted` (the
checkpoint said canceled or hand back). Cancellation from outside (the worker cancelling the task) propagates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from agent_runner.agents import AgentSpec, Plan
from agent_runner.budget import Crossing, Limits, after_call, before_call
from agent_runner.coalesce import drain
from agent_runner.conversation import StepState, TaskLog, stage_messages
from agent_runner.ports import ChatRequest, EventSink, ModelCallError, ModelClient, ToolDescriptor, ToolDispatch
from sluice import msgids
from sluice.events import (
    AgentCompleted,
    AgentCompletedData,
    AgentStarted,
    AgentStartedData,
    BudgetData,
    BudgetExceeded,
    BudgetWarning,
    Event,
    LlmCompleted,
    LlmCompletedData,
    LlmDelta,
    LlmDeltaData,
    LlmStarted,
    LlmStartedData,
    TaskInputRequired,
    TaskInputRequiredData,
    ToolCall,
    ToolCompleted,
    ToolCompletedData,
    Usage,
)

__all__ = ["AgentLoop", "Completed", "Failed", "Interrupted", "LoopConfig", "Outcome", "Paused"]

log = logging.getLogger(__name__)

StopReason = Literal["canceled", "hand_back"]
Checkpoint = Callable[[], Awaitable[StopReason | None]]
_YES = frozenset({"y", "yes", "ok", "approve", "approved", "allow", "true"})


@dataclass(frozen=True)
class Completed:
    output: str
    usage: Usage


@dataclass(frozen=True)
class Failed:
    code: str
    message: str
    usage: Usage


@dataclass(frozen=True)
class Paused:
    """Waiting for a human; `seq` is the `task.input_required` event's id."""

    seq: int


@dataclass(frozen=True)
class Interrupted:
    reason: StopReason


Outcome = Completed | Failed | Paused | Interrupted


@dataclass(frozen=True)
class LoopConfig:
    delta_window_s: float = 0.025
    model_max_attempts: int = 4
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0


async def _no_checkpoint() -> StopReason | None:
    return None


class AgentLoop:
    def __init__(
        self,
        *,
        log: TaskLog,
        plan: Plan,
        limits: Limits,
        sink: EventSink,
        model: ModelClient,
        tools: Mapping[str, ToolDescriptor],
        config: LoopConfig,
        checkpoint: Checkpoint = _no_checkpoint,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.log = log
        self.task_id = log.task_id
        self.plan = plan
        self.limits = limits
        self.sink = sink
        self.model = model
        self.tools = tools
        self.config = config
        self.checkpoint = checkpoint
        self.wall_clock = wall_clock
        self._backoff = wait_exponential_jitter(multiplier=config.backoff_s, max=config.backoff_max_s,
                                                jitter=config.backoff_s / 2)  # fmt: skip

    async def run(self) -> Outcome:
        timeout_s = self.limits.timeout_s
        if timeout_s is None:
            return await self._run_stages()
        elapsed = self.log.working_s(self.wall_clock())
        if elapsed >= timeout_s:
            return await self._exceeded(Crossing("time_s", "exceeded", round(elapsed, 3), timeout_s))
        warner = None
        if ("time_s", "warning") not in self.log.budget_events:
            warner = asyncio.create_task(self._warn_time(max(0.0, 0.8 * timeout_s - elapsed), timeout_s))
        try:
            async with asyncio.timeout(timeout_s - elapsed) as scope:
                return await self._run_stages()
        except TimeoutError:
            if not scope.expired():
                raise
            used = round(self.log.working_s(self.wall_clock()), 3)
            return await self._exceeded(Crossing("time_s", "exceeded", max(used, timeout_s), timeout_s))
        finally:
            if warner is not None:
                warner.cancel()
                await asyncio.wait([warner])

    # ------------------------------------------------------------------ stages (one for an agent, N for a crew)

    async def _run_stages(self) -> Outcome:
        stages = self.plan.stages
        for index, spec in enumerate(stages, start=1):
            if index in self.log.stage_outputs:
                continue
            if self.plan.crew and index not in self.log.stages_started:
                data = AgentStartedData(agent=spec.name, stage=index, stages=len(stages))
                await self._emit(AgentStarted, data, msgids.agent_started(self.task_id, index))
            result = await self._run_stage(index, spec)
            if not isinstance(result, str):
                return result
            if self.plan.crew:
                done = AgentCompletedData(agent=spec.name, stage=index, stages=len(stages), output=result)
                await self._emit(AgentCompleted, done, msgids.agent_completed(self.task_id, index))
            else:
                self.log.stage_outputs[index] = result
        return Completed(output=self.log.stage_outputs.get(len(stages), ""), usage=self.log.usage)

    async def _run_stage(self, stage: int, spec: AgentSpec) -> str | Outcome:
        previous = [(self.plan.stages[i - 1].name, self.log.stage_outputs.get(i, "")) for i in range(1, stage)]
        while True:
            steps = self.log.stage_steps(stage)
            last = steps[-1] if steps else None
            if last is not None and last.completed is not None:
                if not last.completed.tool_calls:
                    return last.completed.content
                paused = await self._resolve_calls(last, spec)
                if paused is not None:
                    return paused
            stop = await self.checkpoint()
            if stop is not None:
                return Interrupted(stop)
            over = before_call(self.limits, self.log.usage, self.log.steps_done)
            if over is not None:
                return await self._exceeded(over)
            redo = last if last is not None and last.completed is None else None
            step = redo.step if redo is not None else self.log.last_step + 1
            first_attempt = redo.attempt + 1 if redo is not None else 1
            # Read from the catalog for every call: a tool that changed or arrived since the last step is offered.
            offered = [self.tools[name].spec for name in spec.tool_names(self.tools)]
            request = ChatRequest(
                model=spec.model,
                messages=stage_messages(self.log, stage, spec.instructions, previous),
                tools=offered,
            )
            try:
                await self._model_step(spec, step, first_attempt, request)
            except ModelCallError as exc:
                return Failed(code=exc.code, message=exc.message, usage=self.log.usage)
            for crossing in after_call(self.limits, self.log.usage, self.log.steps_done):
                if crossing.level == "exceeded":
                    return await self._exceeded(crossing)
                await self._warn(crossing)

    # ------------------------------------------------------------------ one model call, retried as new attempts

    async def _model_step(self, spec: AgentSpec, step: int, first_attempt: int, request: ChatRequest) -> None:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.model_max_attempts),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, ModelCallError) and e.retryable),
            before_sleep=self._before_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                number = first_attempt + attempt.retry_state.attempt_number - 1
                await self._model_attempt(spec, step, number, request)

    def _wait(self, state: RetryCallState) -> float:
        wait = float(self._backoff(state))
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, ModelCallError) and exc.retry_after_s:
            wait = max(wait, min(exc.retry_after_s, self.config.backoff_max_s))
        return wait

    def _before_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        reason = exc.reason if isinstance(exc, ModelCallError) else type(exc).__name__
        log.warning("model call failed (%s), retrying in %.2fs", reason, state.upcoming_sleep,
                    extra={"reason": reason, "attempt": state.attempt_number})  # fmt: skip

    async def _model_attempt(self, spec: AgentSpec, step: int, attempt: int, request: ChatRequest) -> None:
        data = LlmStartedData(step=step, attempt=attempt, model=spec.model, agent=spec.name)
        await self._emit(LlmStarted, data, msgids.llm_started(self.task_id, step, attempt))
        deltas = 0

        async def publish(text: str) -> None:
            nonlocal deltas
            deltas += 1
            delta = LlmDeltaData(step=step, attempt=attempt, text=text)
            await self.sink.emit(LlmDelta, delta, msg_id=msgids.llm_delta(self.task_id, step, attempt, deltas))

        async with aclosing(self.model.stream(request)) as stream:
            reply = await drain(stream, self.config.delta_window_s, publish)
        if reply is None:
            raise ModelCallError("model_unavailable", "the model stream ended without a reply", reason="stream_cut",
                                 retryable=True)  # fmt: skip
        usage = Usage(
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            cost_usd=spec.cost_usd(reply.input_tokens, reply.output_tokens),
        )
        done = LlmCompletedData(
            step=step,
            attempt=attempt,
            content=reply.content,
            tool_calls=self._unique_ids(step, reply.tool_calls),
            usage=usage,
            finish_reason=reply.finish_reason,
        )
        await self._emit(LlmCompleted, done, msgids.llm_completed(self.task_id, step, attempt))

    def _unique_ids(self, step: int, calls: list[ToolCall]) -> list[ToolCall]:
        """Call ids key tool results in the log, so they must be unique in the task; a missing or reused id
        (some servers number calls per response) is replaced by one naming the step."""
        seen = self.log.call_ids
        out: list[ToolCall] = []
        for index, call in enumerate(calls):
            call_id = call.call_id
            if not call_id or call_id in seen:
                call_id = f"call_s{step}_{index}"
            seen.add(call_id)
            out.append(ToolCall(call_id=call_id, name=call.name, arguments=call.arguments))
        return out

    # ------------------------------------------------------------------ tool calls of a completed step

    async def _resolve_calls(self, step: StepState, spec: AgentSpec) -> Outcome | None:
        assert step.completed is not None
        dispatch: list[ToolDispatch] = []
        waiting: list[tuple[ToolCall, Literal["question", "approval"]]] = []
        for call in step.completed.tool_calls:
            if call.call_id in self.log.tool_results:
                continue
            tool = self.tools.get(call.name) if spec.offers(call.name) else None
            if tool is None:
                offered = ", ".join(spec.tool_names(self.tools)) or "none"
                await self._tool_failed(call, f"unknown tool {call.name!r}; the tools offered are: {offered}")
                continue
            arguments, problem = _parse_arguments(call.arguments)
            if problem is not None:
                await self._tool_failed(call, f"invalid arguments for {call.name}: {problem}")
                continue
            ask = self.log.asks.get(call.call_id)
            if tool.interactive:
                if ask is not None and ask.answer is not None:
                    await self._tool_done(call, ask.answer.input)
                elif not isinstance(arguments.get("question"), str) or not arguments["question"].strip():
                    await self._tool_failed(call, f"invalid arguments for {call.name}: a non-empty question is needed")
                else:
                    waiting.append((call, "question"))
                continue
            if call.name in spec.approval_tools:
                if ask is None or ask.answer is None:
                    waiting.append((call, "approval"))
                    continue
                if not _approved(ask.answer.approved, ask.answer.input):
                    await self._tool_failed(call, "denied by the user")
                    continue
            dispatch.append(ToolDispatch(call=call, deadline_s=tool.timeout_s))
        if dispatch:
            for event in await self.sink.run_tools(dispatch, after_seq=step.completed_seq):
                self.log.apply(event)
        if waiting:
            call, kind = waiting[0]
            return await self._ask(step.step, call, kind)
        return None

    async def _ask(self, step: int, call: ToolCall, kind: Literal["question", "approval"]) -> Paused:
        asked = self.log.asks.get(call.call_id)
        if asked is not None and asked.answer is None:
            return Paused(seq=asked.seq)
        if kind == "question":
            prompt = str(json.loads(call.arguments)["question"]).strip()
        else:
            prompt = f"The assistant wants to run {call.name} with {call.arguments}. Allow it?"
        data = TaskInputRequiredData(
            prompt=prompt, kind=kind, call_id=call.call_id, name=call.name, arguments=call.arguments
        )
        event = await self._emit(TaskInputRequired, data, msgids.input_required(self.task_id, step, call.call_id))
        return Paused(seq=int(event.id or 0))

    async def _tool_done(self, call: ToolCall, result: str) -> None:
        data = ToolCompletedData(call_id=call.call_id, name=call.name, ok=True, result=result, duration_ms=0.0)
        await self._emit(ToolCompleted, data, msgids.tool_completed(self.task_id, call.call_id))

    async def _tool_failed(self, call: ToolCall, error: str) -> None:
        data = ToolCompletedData(call_id=call.call_id, name=call.name, ok=False, error=error, duration_ms=0.0)
        await self._emit(ToolCompleted, data, msgids.tool_completed(self.task_id, call.call_id))

    # ------------------------------------------------------------------ budgets

    async def _warn(self, crossing: Crossing) -> None:
        if (crossing.kind, "warning") in self.log.budget_events:
            return
        data = BudgetData(kind=crossing.kind, used=crossing.used, limit=crossing.limit)
        await self._emit(BudgetWarning, data, msgids.budget(self.task_id, crossing.kind, "warning"))

    async def _warn_time(self, delay_s: float, limit_s: float) -> None:
        await asyncio.sleep(delay_s)
        used = round(self.log.working_s(self.wall_clock()), 3)
        await self._warn(Crossing("time_s", "warning", used, limit_s))

    async def _exceeded(self, crossing: Crossing) -> Failed:
        await self._warn(crossing)
        if (crossing.kind, "exceeded") not in self.log.budget_events:
            data = BudgetData(kind=crossing.kind, used=crossing.used, limit=crossing.limit)
            await self._emit(BudgetExceeded, data, msgids.budget(self.task_id, crossing.kind, "exceeded"))
        message = f"the {crossing.kind} budget is exhausted: used {crossing.used:g} of {crossing.limit:g}"
        return Failed(code="budget_exceeded", message=message, usage=self.log.usage)

    # ------------------------------------------------------------------ publishing

    async def _emit(self, cls: type[Event], data: Any, msg_id: str) -> Event:
        event = await self.sink.emit(cls, data, msg_id=msg_id)
        self.log.apply(event)
        return event


def _parse_arguments(text: str) -> tuple[dict[str, Any], str | None]:
    try:
        value = json.loads(text.strip() or "{}")
    except ValueError as exc:
        return {}, f"not valid JSON ({exc})"
    if not isinstance(value, dict):
        return {}, "arguments must be a JSON object"
    return value, None


def _approved(approved: bool | None, text: str) -> bool:
    if approved is not None:
        return approved
    return text.strip().lower() in _YES
