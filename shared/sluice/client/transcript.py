"""A task's events folded into what a person wants to see — pure, no I/O, the same for every client.

`Transcript.apply(event)` returns the `Update`s the event makes (none for an event already seen or a delta of a
superseded attempt), so a renderer only has to say how each kind of update looks:

    text            streamed text appended to a step          (step, text)
    restart         a step started over (a retried attempt)   (step, text = what it had shown, now void)
    step_done       the model finished a step                 (step)
    tool_call       the model asked for a tool                (tool)
    tool_started    a tool-runner started it                  (tool)
    tool_done       its result (or error) arrived             (tool)
    stage_started   a crew stage began: "2/4 coder"           (stage)
    stage_done      a crew stage finished                     (stage)
    input_required  the task waits for an answer or approval  (event)
    resumed         the answer arrived                        (event)
    budget          a budget warning or breach                (event)
    state           submitted / started                       (event)
    recovered       another runner took the task over after
                    one stopped mid-way (attempt n)           (event)
    gap             the log no longer holds earlier events    (event)
    snapshot        a late joiner's view of the record        (event)
    end             the terminal event                        (event)

Retries: a new `llm.started` for a step with a higher `attempt` voids that step's text; deltas of lower attempts
that still arrive are dropped (CONTRACT §3). Duplicates: an event whose id is not above the last one seen is
dropped, so a client may feed it the overlap of a reconnect without care.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

from sluice import events as ev
from sluice.events import TERMINAL_TYPES, Event, Usage, event_type

__all__ = ["Stage", "StepText", "ToolCallView", "Transcript", "Update", "UpdateKind"]

UpdateKind = Literal[
    "text",
    "restart",
    "step_done",
    "tool_call",
    "tool_started",
    "tool_done",
    "stage_started",
    "stage_done",
    "input_required",
    "resumed",
    "budget",
    "state",
    "recovered",
    "gap",
    "snapshot",
    "end",
]


@dataclass
class StepText:
    """The text of one model step (current attempt only)."""

    stage: int
    step: int
    attempt: int
    agent: str = ""
    text: str = ""
    done: bool = False


@dataclass
class ToolCallView:
    call_id: str
    name: str
    arguments: str
    started: bool = False
    done: bool = False
    ok: bool | None = None
    result: str | None = None
    error: str | None = None
    duration_ms: float | None = None


@dataclass
class Stage:
    agent: str
    stage: int
    stages: int
    done: bool = False
    output: str | None = None

    @property
    def label(self) -> str:
        """`2/4 coder`."""
        return f"{self.stage}/{self.stages} {self.agent}"


@dataclass(frozen=True)
class Update:
    kind: UpdateKind
    event: Event
    step: StepText | None = None
    tool: ToolCallView | None = None
    stage: Stage | None = None
    text: str = ""


@dataclass
class Transcript:
    task_id: str | None = None
    state: str = "submitted"
    agent: str = ""
    input: str = ""
    attempt: int = 0
    steps: list[StepText] = field(default_factory=list)
    tools: dict[str, ToolCallView] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    output: str | None = None
    error: ev.ErrorInfo | None = None
    cancel_reason: str | None = None
    input_request: ev.TaskInputRequiredData | None = None
    first_ts: str | None = None
    end_ts: str | None = None
    last_id: int | None = None
    _resuming: bool = False  # a task.resumed came: the next task.started is the answer's, not a recovery

    # ------------------------------------------------------------------ derived views

    @property
    def terminal(self) -> bool:
        return self.state in ev.TERMINAL_STATES

    @property
    def stage(self) -> Stage | None:
        return self.stages[-1] if self.stages else None

    @property
    def text(self) -> str:
        """Every step's text as streamed (current attempts), in order."""
        return "".join(step.text for step in self.steps)

    def elapsed_s(self, now: dt.datetime | None = None) -> float:
        """From the first event to the terminal one (or to `now` while the task runs)."""
        start = _parse_ts(self.first_ts)
        if start is None:
            return 0.0
        end = _parse_ts(self.end_ts) or now or dt.datetime.now(dt.UTC)
        return max(0.0, (end - start).total_seconds())

    # ------------------------------------------------------------------ folding

    def apply(self, event: Event) -> list[Update]:
        """Folds one event in; returns what changed (empty: a duplicate or a superseded delta)."""
        if event.id is not None:
            seq = int(event.id)
            if self.last_id is not None and seq <= self.last_id:
                return []
            self.last_id = seq
        self.task_id = self.task_id or event.task_id
        if self.first_ts is None and not isinstance(event, ev.StreamGap):
            self.first_ts = event.ts
        handler = _HANDLERS.get(event_type(type(event)))
        return handler(self, event) if handler else []

    def _step(self, step: int) -> StepText | None:
        stage = self.stage.stage if self.stage else 0
        for item in reversed(self.steps):
            if item.step == step and item.stage == stage:
                return item
        return None

    def _new_step(self, step: int, attempt: int, agent: str = "") -> StepText:
        item = StepText(stage=self.stage.stage if self.stage else 0, step=step, attempt=attempt, agent=agent)
        self.steps.append(item)
        return item

    def _on_submitted(self, e: Event) -> list[Update]:
        assert isinstance(e, ev.TaskSubmitted)
        self.agent, self.input, self.state = e.data.agent, e.data.input, "submitted"
        return [Update("state", e)]

    def _on_started(self, e: Event) -> list[Update]:
        assert isinstance(e, ev.TaskStarted)
        recovered = e.data.attempt > 1 and not self._resuming
        self.attempt, self.state, self._resuming = e.data.attempt, "working", False
        return [Update("recovered" if recovered else "state", e)]

    def _on_agent_started(self, e: Event) -> list[Update]:
        assert isinstance(e, ev.AgentStarted)
        if self.stage and self.stage.stage == e.data.stage and not self.stage.done:
            return []  # the same stage again after a runner restart
        stage = Stage(agent=e.data.agent, stage=e.data.stage, stages=e.data.stages)
        self.stages.append(stage)
        return [Update("stage_started", e, stage=stage)]

    def _on_agent_completed(self, e: Event) -> list[Update]:
        assert isinstance(e, ev.AgentCompleted)
        stage = self.stage
        if stage is None or stage.stage != e.data.stage:
            stage = Stage(agent=e.data.agent, stage=e.data.stage, stages=e.data.stages)
            self.stages.append(stage)
        stage.done, stage.output = True, e.data.output
        return [Update("stage_done", e, stage=stage)]

    def _on_llm_started(self, e: Event) -> list[Update]:
        assert isinstance(e, ev.LlmStarted)
        step = self._step(e.data.step)
        if step is None:
            self._new_step(e.data.step, e.data.attempt, e.data.agent)
            return []
        if e.data.attempt <= step.attempt:
            return []
        return self._restart(e, step, e.data.attempt)

    def _restart(self, e: Event, step: StepText, attempt: int) -> list[Update]:
        void = step.text
        step.attempt, step.text, step.done = attempt, "", False
        return [Update("restart", e, step=step, text=void)]

    def _on_delta(self, e: Event) -> list[Update]:
        assert isinstance(e, ev.LlmDelta)
        step = self._step(e.data.step)
        updates: list[Update] = []
        if step is None:
            step = self._new_step(e.data.step, e.data.attempt)
        elif e.data.attempt < step.attempt:
            return []  # a superseded attempt
        elif e.data.attempt > step.attempt:  # its llm.started was lost (a gap): restart all the same
            updates = self._restart(e, step, e.data.attempt)
        if not e.data.text:
            return updates
        step.text += e.data.text
        return [*updates, Update("text", e, step=step, text=e.data.text)]

    def _on_llm_completed(self, e: Event) -> list[Update]:
        assert isinstance(e, ev.LlmCompleted)
        d = e.data
        step = self._step(d.step)
        updates: list[Update] = []
        if step is None:
            step = self._new_step(d.step, d.attempt)
        elif d.attempt < step.attempt:
            return []
        elif d.attempt > step.attempt:
            updates = self._restart(e, step, d.attempt)
        # Deltas lost (a gap) or never streamed: the completed content is the truth.
        if d.content != step.text:
            if d.content.startswith(step.text):
                rest = d.content[len(step.text) :]
                step.text = d.content
                updates.append(Update("text", e, step=step, text=rest))
            else:
                updates.append(Update("restart", e, step=step, text=step.text))
                step.text = d.content
                updates.append(Update("text", e, step=step, text=d.content))
        step.done = True
        self.usage = self.usage + d.usage
        updates.append(Update("step_done", e, step=step))
        for call in d.tool_calls:
            if call.call_id not in self.tools:
                tool = ToolCallView(call_id=call.call_id, name=call.name, arguments=call.arguments)
                self.tools[call.call_id] = tool
                updates.append(Update("tool_call", e, tool=tool))
        return updates

    def _on_tool_started(self, e: Event) -> list[Update]:
        assert isinstance(e, ev.ToolStarted)
        tool = self.tools.get(e.data.call_id)
        if tool is None:
            tool = self.tools[e.data.call_id] = ToolCallView(e.data.call_id, e.data.name, e.data.arguments)
        tool.started = True
        return [Update("tool_started", e, tool=tool)]

    def _on_tool_completed(self, e: Event) -> list[Update]:
        assert isinstance(e, ev.ToolCompleted)
        d = e.data
        tool = self.tools.get(d.call_id)
        if tool is None:
            tool = self.tools[d.call_id] = ToolCallView(d.call_id, d.name, "")
        tool.started = tool.done = True
        tool.ok, tool.result, tool.error, tool.duration_ms = d.ok, d.result, d.error, d.duration_ms
        return [Update("tool_done", e, tool=tool)]

    def _on_input_required(self, e: Event) -> list[Update]:
        assert isinstance(e, ev.TaskInputRequired)
        self.state, self.input_request = "input-required", e.data
        return [Update("input_required", e)]

    def _on_resumed(self, e: Event) -> list[Update]:
        assert isinstance(e, ev.TaskResumed)
        self.state, self.input_request, self._resuming = "working", None, True
        return [Update("resumed", e)]

    def _on_budget(self, e: Event) -> list[Update]:
        return [Update("budget", e)]

    def _on_end(self, e: Event) -> list[Update]:
        self.end_ts, self.input_request = e.ts, None
        if isinstance(e, ev.TaskCompleted):
            self.state, self.output, self.usage = "completed", e.data.output, e.data.usage
        elif isinstance(e, ev.TaskFailed):
            self.state, self.error, self.usage = "failed", e.data.error, e.data.usage
        elif isinstance(e, ev.TaskCanceled):
            self.state, self.cancel_reason = "canceled", e.data.reason
        return [Update("end", e)]

    def _on_gap(self, e: Event) -> list[Update]:
        return [Update("gap", e)]

    def _on_snapshot(self, e: Event) -> list[Update]:
        assert isinstance(e, ev.TaskSnapshot)
        record = e.data
        self.state, self.agent, self.input, self.usage = record.state, record.agent, record.input, record.usage
        self.output, self.error, self.first_ts = record.output, record.error, record.created_at
        if record.terminal:
            self.end_ts = record.updated_at
        return [Update("snapshot", e)]


_HANDLERS = {
    "task.submitted": Transcript._on_submitted,
    "task.started": Transcript._on_started,
    "agent.started": Transcript._on_agent_started,
    "agent.completed": Transcript._on_agent_completed,
    "llm.started": Transcript._on_llm_started,
    "llm.delta": Transcript._on_delta,
    "llm.completed": Transcript._on_llm_completed,
    "tool.started": Transcript._on_tool_started,
    "tool.completed": Transcript._on_tool_completed,
    "task.input_required": Transcript._on_input_required,
    "task.resumed": Transcript._on_resumed,
    "budget.warning": Transcript._on_budget,
    "budget.exceeded": Transcript._on_budget,
    "stream.gap": Transcript._on_gap,
    "task.snapshot": Transcript._on_snapshot,
    **dict.fromkeys(TERMINAL_TYPES, Transcript._on_end),
}


def _parse_ts(ts: str | None) -> dt.datetime | None:
    if not ts:
        return None
    try:
        return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
