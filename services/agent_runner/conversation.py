"""A task's state rebuilt from its event log: the conversation to send the model and where the loop stands.

`TaskLog.apply` folds one event in; `TaskLog.rebuild` folds a whole log. The loop applies each event it publishes
too, so a runner that resumes a task from the log and one that ran it from the start see the same state. What
counts (CONTRACT §3): `task.submitted`, the last attempt's `llm.completed` of each step, `tool.completed`,
`task.input_required` + `task.resumed`; `agent.*`, `task.started`, `budget.*` and the terminal event say where
the task stands. Deltas and `tool.started` are ignored. Pure: no I/O, the clock is a parameter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sluice.events import (
    AgentCompleted,
    AgentStarted,
    BudgetExceeded,
    BudgetWarning,
    Event,
    LlmCompleted,
    LlmCompletedData,
    LlmStarted,
    TaskCanceled,
    TaskCompleted,
    TaskFailed,
    TaskInputRequired,
    TaskInputRequiredData,
    TaskResumed,
    TaskResumedData,
    TaskStarted,
    TaskSubmitted,
    TaskSubmittedData,
    ToolCompleted,
    ToolCompletedData,
    Usage,
)

__all__ = ["Ask", "StepState", "TaskLog", "stage_messages", "tool_message"]


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


@dataclass
class StepState:
    """One model call of the task (steps are numbered across the whole task, crew stages included)."""

    step: int
    stage: int
    agent: str
    attempt: int = 0
    completed: LlmCompletedData | None = None
    completed_seq: int = 0


@dataclass
class Ask:
    """A `task.input_required` and, once the human answered, the `task.resumed` that answers it."""

    key: str
    seq: int
    data: TaskInputRequiredData
    answer: TaskResumedData | None = None


@dataclass
class TaskLog:
    task_id: str
    submitted: TaskSubmittedData | None = None
    attempts: int = 0
    stage: int = 1
    stages_started: set[int] = field(default_factory=set)
    stage_outputs: dict[int, str] = field(default_factory=dict)
    steps: dict[int, StepState] = field(default_factory=dict)
    tool_results: dict[str, ToolCompletedData] = field(default_factory=dict)
    asks: dict[str, Ask] = field(default_factory=dict)
    open_ask: str | None = None
    budget_events: set[tuple[str, str]] = field(default_factory=set)
    terminal: Event | None = None
    last_seq: int = 0
    first_started_at: float | None = None
    paused_s: float = 0.0
    _paused_since: float | None = None

    @classmethod
    def rebuild(cls, task_id: str, events: Iterable[Event]) -> TaskLog:
        log = cls(task_id)
        for event in events:
            log.apply(event)
        return log

    def apply(self, event: Event) -> None:
        if event.id is not None:
            self.last_seq = max(self.last_seq, int(event.id))
        match event:
            case TaskSubmitted(data=data):
                self.submitted = data
            case TaskStarted(data=data):
                self.attempts = max(self.attempts, data.attempt)
                if self.first_started_at is None:
                    self.first_started_at = _epoch(event.ts)
            case AgentStarted(data=data):
                self.stage = data.stage
                self.stages_started.add(data.stage)
            case AgentCompleted(data=data):
                self.stage_outputs[data.stage] = data.output
            case LlmStarted(data=data):
                step = self.steps.setdefault(data.step, StepState(data.step, self.stage, data.agent))
                step.attempt = max(step.attempt, data.attempt)
            case LlmCompleted(data=data):
                step = self.steps.setdefault(data.step, StepState(data.step, self.stage, ""))
                step.attempt = max(step.attempt, data.attempt)
                if step.completed is None or data.attempt >= step.completed.attempt:
                    step.completed = data
                    step.completed_seq = int(event.id or 0)
            case ToolCompleted(data=data):
                self.tool_results.setdefault(data.call_id, data)
            case BudgetWarning(data=data):
                self.budget_events.add((data.kind, "warning"))
            case BudgetExceeded(data=data):
                self.budget_events.add((data.kind, "exceeded"))
            case TaskInputRequired(data=data):
                key = data.call_id or f"seq:{event.id}"
                self.asks[key] = Ask(key=key, seq=int(event.id or 0), data=data)
                self.open_ask = key
                self._paused_since = _epoch(event.ts)
            case TaskResumed(data=data):
                if self.open_ask is not None:
                    self.asks[self.open_ask].answer = data
                    self.open_ask = None
                if self._paused_since is not None:
                    self.paused_s += max(0.0, _epoch(event.ts) - self._paused_since)
                    self._paused_since = None
            case TaskCompleted() | TaskFailed() | TaskCanceled():
                if self.terminal is None:
                    self.terminal = event
            case _:
                pass

    # ------------------------------------------------------------------ questions the loop asks

    @property
    def usage(self) -> Usage:
        total = Usage()
        for step in self.steps.values():
            if step.completed is not None:
                total = total + step.completed.usage
        return total

    @property
    def steps_done(self) -> int:
        return sum(1 for s in self.steps.values() if s.completed is not None)

    @property
    def last_step(self) -> int:
        return max(self.steps, default=0)

    @property
    def call_ids(self) -> set[str]:
        return {c.call_id for s in self.steps.values() if s.completed for c in s.completed.tool_calls}

    def stage_steps(self, stage: int) -> list[StepState]:
        return sorted((s for s in self.steps.values() if s.stage == stage), key=lambda s: s.step)

    def working_s(self, now: float) -> float:
        """Seconds since the first `task.started`, less the time spent waiting for a human."""
        if self.first_started_at is None:
            return 0.0
        paused = self.paused_s + (now - self._paused_since if self._paused_since is not None else 0.0)
        return max(0.0, now - self.first_started_at - paused)


def tool_message(result: ToolCompletedData) -> str:
    """What the model reads for a tool result: `{"ok": true, "result": ...}` or `{"ok": false, "error": ...}`."""
    if result.ok:
        return json.dumps({"ok": True, "result": result.result if result.result is not None else ""})
    return json.dumps({"ok": False, "error": result.error or "the tool failed"})


def _stage_prompt(task_input: str, previous: Sequence[tuple[str, str]]) -> str:
    if not previous:
        return task_input
    parts = [task_input, "", "Work of the earlier stages:"]
    for agent, output in previous:
        parts += ["", f"### {agent}", output]
    return "\n".join(parts)


def stage_messages(
    log: TaskLog, stage: int, instructions: str, previous: Sequence[tuple[str, str]] = ()
) -> list[dict[str, Any]]:
    """The OpenAI message list for `stage`: instructions, history, the input (with earlier stages' output for a
    crew), then each completed step's assistant message and the results of its tool calls that exist."""
    assert log.submitted is not None, "a task's log starts with task.submitted"
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    messages += [{"role": h.role, "content": h.content} for h in log.submitted.history]
    messages.append({"role": "user", "content": _stage_prompt(log.submitted.input, previous)})
    for step in log.stage_steps(stage):
        done = step.completed
        if done is None:
            continue
        assistant: dict[str, Any] = {"role": "assistant", "content": done.content or None}
        if done.tool_calls:
            assistant["tool_calls"] = [
                {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in done.tool_calls
            ]
        elif not done.content:
            assistant["content"] = ""
        messages.append(assistant)
        for call in done.tool_calls:
            result = log.tool_results.get(call.call_id)
            if result is not None:
                messages.append({"role": "tool", "tool_call_id": call.call_id, "content": tool_message(result)})
    return messages
