"""The A2A view of a Sluice task, folded from its event log. Pure: no I/O, no clock.

A Sluice task *is* the A2A task: same id, same log. `TaskProjection.apply(seq, event)` folds one event in and
returns the A2A stream event it becomes (or None); `snapshot()` is the `Task` as of the last event folded. Every
A2A event comes from exactly one Sluice event and carries its id (in `metadata[REPLAY_EXTENSION].eventId`, and as
the SSE `id:` line), so a stream resumed after any id it delivered repeats nothing and loses nothing.

| Sluice event              | A2A stream event                                                                 |
| ------------------------- | -------------------------------------------------------------------------------- |
| task.submitted            | status SUBMITTED (the user's message goes to `history`)                          |
| task.started              | status WORKING                                                                   |
| agent.started / completed | status WORKING + "Stage 2/4: coder started" (text + data part)                   |
| llm.delta                 | artifact `step-N` chunk: the first of an attempt `append=false`, then `append=true` |
| llm.completed             | `lastChunk=true`: an empty append, or the whole content (`append=false`) if the   |
|                           | streamed text differs from it (a retried step drops the earlier attempt's text)  |
| tool.started / completed  | status WORKING + "Calling calculator(...)" / "calculator returned 4"             |
| budget.warning / exceeded | status WORKING + a message                                                       |
| task.input_required       | status INPUT_REQUIRED + the question (an approval adds a data part)              |
| task.resumed              | status WORKING + the user's answer                                               |
| task.completed            | status COMPLETED                                                                 |
| task.failed / canceled    | status FAILED / CANCELED + the error / the reason                                |

`llm.started` becomes nothing (it only says which attempt of a step counts). Each model step that produced text
is one artifact, named after the agent that wrote it, so a crew shows one artifact per stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from a2a.types import (
    Artifact,
    Message,
    Part,
    Role,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from google.protobuf import json_format, struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from sluice.events import (
    AgentCompleted,
    AgentStarted,
    BudgetExceeded,
    BudgetWarning,
    Event,
    LlmCompleted,
    LlmDelta,
    LlmStarted,
    TaskCanceled,
    TaskCompleted,
    TaskFailed,
    TaskInputRequired,
    TaskResumed,
    TaskStarted,
    TaskSubmitted,
    ToolCompleted,
    ToolStarted,
)

__all__ = [
    "A2A_STATE",
    "FINAL_STATES",
    "REPLAY_EXTENSION",
    "StreamEvent",
    "TaskProjection",
    "event_id_of",
]

REPLAY_EXTENSION = "https://sluice.dev/a2a/ext/replay/v1"

A2A_STATE: dict[str, TaskState] = {
    "submitted": TaskState.TASK_STATE_SUBMITTED,
    "working": TaskState.TASK_STATE_WORKING,
    "input-required": TaskState.TASK_STATE_INPUT_REQUIRED,
    "completed": TaskState.TASK_STATE_COMPLETED,
    "failed": TaskState.TASK_STATE_FAILED,
    "canceled": TaskState.TASK_STATE_CANCELED,
}
# A stream ends at these: terminal, or interrupted (the client must act before anything else happens).
FINAL_STATES: frozenset[TaskState] = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_INPUT_REQUIRED,
    }
)

StreamEvent = Task | TaskStatusUpdateEvent | TaskArtifactUpdateEvent

_TEXT_PREVIEW = 300


def _preview(text: str, limit: int = _TEXT_PREVIEW) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _data_part(data: dict[str, Any]) -> Part:
    return Part(data=json_format.ParseDict(data, struct_pb2.Value()))


def _timestamp(ts: str) -> Timestamp | None:
    stamp = Timestamp()
    try:
        stamp.FromJsonString(ts)
    except ValueError:
        return None
    return stamp


def _id_metadata(seq: int) -> struct_pb2.Struct:
    meta = struct_pb2.Struct()
    meta.update({REPLAY_EXTENSION: {"eventId": str(seq)}})
    return meta


def event_id_of(metadata: dict[str, Any] | None) -> str | None:
    """The Sluice event id an A2A event (as a JSON dict's `metadata`) carries, if any."""
    if not metadata:
        return None
    ext = metadata.get(REPLAY_EXTENSION)
    if isinstance(ext, dict):
        value = ext.get("eventId")
        if isinstance(value, str):
            return value
    return None


@dataclass
class _Step:
    """One model call's text, as the client has been shown it (`shown` None: no artifact yet)."""

    agent: str
    attempt: int = 0
    streamed: bool = False  # a delta of the current attempt has been shown
    shown: str | None = None


@dataclass
class TaskProjection:
    """The A2A task one Sluice task's events add up to. Feed it the log in order with `apply`."""

    task_id: str
    context_id: str | None = None
    agent: str = ""
    state: TaskState = TaskState.TASK_STATE_SUBMITTED
    status_message: Message | None = None
    status_ts: str = ""
    seq: int = 0
    history: list[Message] = field(default_factory=list)
    steps: dict[int, _Step] = field(default_factory=dict)
    first_message_id: str | None = None

    # ------------------------------------------------------------------ reading

    @property
    def context(self) -> str:
        """Tasks submitted without a context (the native API) are their own context."""
        return self.context_id or self.task_id

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def snapshot(self, *, state: str | None = None) -> Task:
        """The Task now. `state` (the record's, which is the truth) overrides the log's view when given."""
        status = TaskStatus(state=A2A_STATE[state] if state is not None else self.state)
        if self.status_message is not None and (state is None or A2A_STATE[state] == self.state):
            status.message.CopyFrom(self.status_message)
        if self.status_ts and (stamp := _timestamp(self.status_ts)) is not None:
            status.timestamp.CopyFrom(stamp)
        metadata = struct_pb2.Struct()
        metadata.update({"agent": self.agent, REPLAY_EXTENSION: {"eventId": str(self.seq)}})
        return Task(
            id=self.task_id,
            context_id=self.context,
            status=status,
            artifacts=[self._artifact(n, step, step.shown) for n, step in sorted(self.steps.items()) if step.shown],
            history=list(self.history),
            metadata=metadata,
        )

    # ------------------------------------------------------------------ folding

    def apply(self, seq: int, event: Event) -> StreamEvent | None:
        """Folds one event in; returns what an A2A stream shows for it, or None."""
        self.seq = seq
        match event:
            case LlmDelta(data=d):
                return self._delta(seq, d.step, d.attempt, d.text)
            case LlmStarted(data=d):
                step = self.steps.setdefault(d.step, _Step(agent=d.agent))
                step.agent = d.agent
                if d.attempt > step.attempt:
                    step.attempt, step.streamed = d.attempt, False
                return None
            case LlmCompleted(data=d):
                return self._step_done(seq, d.step, d.attempt, d.content)
            case TaskSubmitted(data=d):
                self.agent = d.agent
                if d.context_id:
                    self.context_id = d.context_id
                message_id = d.metadata.get("a2a", {}).get("messageId") if isinstance(d.metadata, dict) else None
                self.first_message_id = message_id if isinstance(message_id, str) and message_id else None
                user = self._message(seq, Role.ROLE_USER, d.input, message_id=self.first_message_id)
                self.history.append(user)
                return self._status(seq, event.ts, TaskState.TASK_STATE_SUBMITTED, None)
            case TaskStarted():
                return self._status(seq, event.ts, TaskState.TASK_STATE_WORKING, None)
            case AgentStarted(data=d):
                text = f"Stage {d.stage}/{d.stages}: {d.agent} started"
                data = {"event": "agent.started", "agent": d.agent, "stage": d.stage, "stages": d.stages}
                return self._status(seq, event.ts, TaskState.TASK_STATE_WORKING, self._agent_says(seq, text, data))
            case AgentCompleted(data=d):
                text = f"Stage {d.stage}/{d.stages}: {d.agent} finished"
                data = {"event": "agent.completed", "agent": d.agent, "stage": d.stage, "stages": d.stages}
                return self._status(seq, event.ts, TaskState.TASK_STATE_WORKING, self._agent_says(seq, text, data))
            case ToolStarted(data=d):
                text = f"Calling {d.name}({_preview(d.arguments, 200)})"
                data = {"event": "tool.started", "callId": d.call_id, "name": d.name, "arguments": d.arguments}
                return self._status(seq, event.ts, TaskState.TASK_STATE_WORKING, self._agent_says(seq, text, data))
            case ToolCompleted(data=d):
                if d.ok:
                    text = f"{d.name} returned {_preview(d.result or '')}"
                else:
                    text = f"{d.name} failed: {_preview(d.error or 'unknown error')}"
                data = {
                    "event": "tool.completed",
                    "callId": d.call_id,
                    "name": d.name,
                    "ok": d.ok,
                    "durationMs": d.duration_ms,
                    **({"result": d.result} if d.result is not None else {}),
                    **({"error": d.error} if d.error is not None else {}),
                }
                return self._status(seq, event.ts, TaskState.TASK_STATE_WORKING, self._agent_says(seq, text, data))
            case BudgetWarning(data=d) | BudgetExceeded(data=d):
                kind = "budget.warning" if isinstance(event, BudgetWarning) else "budget.exceeded"
                word = "warning" if kind == "budget.warning" else "exceeded"
                text = f"Budget {word}: {d.kind} used {d.used:g} of {d.limit:g}"
                data = {"event": kind, "kind": d.kind, "used": d.used, "limit": d.limit}
                return self._status(seq, event.ts, TaskState.TASK_STATE_WORKING, self._agent_says(seq, text, data))
            case TaskInputRequired(data=d):
                ask: dict[str, Any] = {"event": "task.input_required", "kind": d.kind}
                if d.kind == "approval":
                    ask.update(callId=d.call_id, name=d.name, arguments=d.arguments, reply={"approve": "boolean"})
                message = self._agent_says(seq, d.prompt, ask)
                return self._status(seq, event.ts, TaskState.TASK_STATE_INPUT_REQUIRED, message)
            case TaskResumed(data=d):
                answer = self._message(seq, Role.ROLE_USER, d.input)
                if d.approved is not None:
                    answer.parts.append(_data_part({"approve": d.approved}))
                self.history.append(answer)
                return self._status(seq, event.ts, TaskState.TASK_STATE_WORKING, None)
            case TaskCompleted():
                return self._status(seq, event.ts, TaskState.TASK_STATE_COMPLETED, None)
            case TaskFailed(data=d):
                text = f"Task failed ({d.error.code}): {d.error.message}"
                data = {"event": "task.failed", "error": {"code": d.error.code, "message": d.error.message}}
                return self._status(seq, event.ts, TaskState.TASK_STATE_FAILED, self._agent_says(seq, text, data))
            case TaskCanceled(data=d):
                text = f"Task canceled: {d.reason}"
                data = {"event": "task.canceled", "reason": d.reason}
                return self._status(seq, event.ts, TaskState.TASK_STATE_CANCELED, self._agent_says(seq, text, data))
        return None

    # ------------------------------------------------------------------ pieces

    def _message(self, seq: int, role: Role, text: str, *, message_id: str | None = None) -> Message:
        return Message(
            message_id=message_id or f"{self.task_id}-{seq}",
            context_id=self.context,
            task_id=self.task_id,
            role=role,
            parts=[Part(text=text)],
        )

    def _agent_says(self, seq: int, text: str, data: dict[str, Any]) -> Message:
        message = self._message(seq, Role.ROLE_AGENT, text)
        message.parts.append(_data_part(data))
        self.history.append(message)
        return message

    def _status(self, seq: int, ts: str, state: TaskState, message: Message | None) -> TaskStatusUpdateEvent:
        self.state, self.status_message, self.status_ts = state, message, ts
        status = TaskStatus(state=state)
        if message is not None:
            status.message.CopyFrom(message)
        if (stamp := _timestamp(ts)) is not None:
            status.timestamp.CopyFrom(stamp)
        return TaskStatusUpdateEvent(
            task_id=self.task_id, context_id=self.context, status=status, metadata=_id_metadata(seq)
        )

    def _artifact(self, n: int, step: _Step, text: str) -> Artifact:
        return Artifact(
            artifact_id=f"step-{n}",
            name=step.agent or "answer",
            description=f"What {step.agent or 'the agent'} wrote in step {n}",
            parts=[Part(text=text)],
        )

    def _chunk(self, seq: int, n: int, step: _Step, text: str, *, append: bool, last: bool) -> TaskArtifactUpdateEvent:
        return TaskArtifactUpdateEvent(
            task_id=self.task_id,
            context_id=self.context,
            artifact=self._artifact(n, step, text),
            append=append,
            last_chunk=last,
            metadata=_id_metadata(seq),
        )

    def _delta(self, seq: int, n: int, attempt: int, text: str) -> TaskArtifactUpdateEvent | None:
        step = self.steps.setdefault(n, _Step(agent=self.agent))
        if attempt < step.attempt or not text:
            return None  # an earlier attempt's leftovers: the client drops them (CONTRACT §3)
        if attempt > step.attempt:
            step.attempt, step.streamed = attempt, False
        if not step.streamed or step.shown is None:
            step.streamed, step.shown = True, text
            return self._chunk(seq, n, step, text, append=False, last=False)
        step.shown += text
        return self._chunk(seq, n, step, text, append=True, last=False)

    def _step_done(self, seq: int, n: int, attempt: int, content: str) -> TaskArtifactUpdateEvent | None:
        step = self.steps.setdefault(n, _Step(agent=self.agent))
        if attempt < step.attempt:
            return None
        step.attempt = attempt
        if step.shown is None and not content:
            return None
        if step.streamed and step.shown == content:
            return self._chunk(seq, n, step, "", append=True, last=True)
        step.streamed, step.shown = True, content
        return self._chunk(seq, n, step, content, append=False, last=True)
