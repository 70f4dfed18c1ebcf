"""Sluice events → AG-UI events (the `ag-ui-protocol` package's types), CONTRACT §10.

A pure mapping, like `ai_sdk.py`: each event's AG-UI events come from the event and the task's fixed facts
alone, every id is derived from the log, and each event's `timestamp` is the Sluice event's `ts`, so any replica
builds the same bytes and `Last-Event-ID` resumes exactly. The sequence satisfies `@ag-ui/client`'s verifier:
every text message and tool call that starts also ends, steps are finished by name, and the run ends with
`RUN_FINISHED` (completed) or `RUN_ERROR` (failed, canceled) and nothing after it.

| Sluice event              | AG-UI events                                                                         |
| ------------------------- | ------------------------------------------------------------------------------------ |
| `task.submitted`          | `RUN_STARTED` (`threadId` = context id, `runId`)                                     |
| `agent.started/completed` | `STEP_STARTED` / `STEP_FINISHED` (`stepName` = `N/M agent`: a crew's stages)          |
| `llm.started`             | `TEXT_MESSAGE_START` (a retried attempt first ends the superseded message)           |
| `llm.delta`               | `TEXT_MESSAGE_CONTENT` (an empty delta is left out: AG-UI forbids it)               |
| `llm.completed`           | `TEXT_MESSAGE_END`, then per tool call `TOOL_CALL_START` / `_ARGS` / `_END`          |
| `tool.completed`          | `TOOL_CALL_RESULT` (the result, or `{"error": ...}`, as the content)                 |
| `budget.*`                | `CUSTOM` `sluice.budget`                                                             |
| `task.input_required`     | `CUSTOM` `sluice.input_required` (the question, and where to answer it)              |
| `task.resumed`            | `CUSTOM` `sluice.resumed`                                                            |
| `task.completed`          | `RUN_FINISHED` (`result` = the output)                                               |
| `task.failed`             | `RUN_ERROR` (`code`, `message`)                                                      |
| `task.canceled`           | `RUN_ERROR` (`code` `canceled`: a run cut short may leave a message open, which only |
|                           | `RUN_ERROR` allows)                                                                  |
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

import msgspec
from ag_ui.core import (
    PROTOCOL_VERSION,
    BaseEvent,
    CustomEvent,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)

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
    TaskSubmitted,
    ToolCompleted,
    decode_event,
    encode,
)
from stream_edge.protocols.facts import TaskFacts
from stream_edge.streaming import encodings, frames

__all__ = ["ag_ui_events", "encode_event", "encoding_for", "message_id", "step_name"]

log = logging.getLogger(__name__)


def message_id(task_id: str, step: int, attempt: int) -> str:
    return f"{task_id}-s{step}-a{attempt}"


def step_name(event: AgentStarted | AgentCompleted) -> str:
    return f"{event.data.stage}/{event.data.stages} {event.data.agent}"


def _millis(ts: str) -> int | None:
    try:
        return int(datetime.fromisoformat(ts).timestamp() * 1000)
    except ValueError:
        return None


def _events(event: Event, facts: TaskFacts) -> list[BaseEvent]:
    task = facts.task_id
    if isinstance(event, TaskSubmitted):
        return [RunStartedEvent(thread_id=facts.context_id, run_id=facts.run_id, protocol_version=PROTOCOL_VERSION)]
    if isinstance(event, AgentStarted):
        return [StepStartedEvent(step_name=step_name(event))]
    if isinstance(event, AgentCompleted):
        return [StepFinishedEvent(step_name=step_name(event))]
    if isinstance(event, LlmStarted):
        started = event.data
        superseded: list[BaseEvent] = []
        if started.attempt > 1:
            superseded.append(TextMessageEndEvent(message_id=message_id(task, started.step, started.attempt - 1)))
        return [
            *superseded,
            TextMessageStartEvent(message_id=message_id(task, started.step, started.attempt), role="assistant"),
        ]
    if isinstance(event, LlmDelta):
        delta = event.data
        if not delta.text:
            return []
        return [TextMessageContentEvent(message_id=message_id(task, delta.step, delta.attempt), delta=delta.text)]
    if isinstance(event, LlmCompleted):
        done = event.data
        parent = message_id(task, done.step, done.attempt)
        out: list[BaseEvent] = [TextMessageEndEvent(message_id=parent)]
        for call in done.tool_calls:
            out.append(
                ToolCallStartEvent(tool_call_id=call.call_id, tool_call_name=call.name, parent_message_id=parent)
            )
            if call.arguments:
                out.append(ToolCallArgsEvent(tool_call_id=call.call_id, delta=call.arguments))
            out.append(ToolCallEndEvent(tool_call_id=call.call_id))
        return out
    if isinstance(event, ToolCompleted):
        tool = event.data
        content = (tool.result or "") if tool.ok else json.dumps({"error": tool.error or "the tool failed"})
        return [
            ToolCallResultEvent(
                message_id=f"{task}-{tool.call_id}-result", tool_call_id=tool.call_id, content=content, role="tool"
            )
        ]
    if isinstance(event, BudgetWarning | BudgetExceeded):
        level = "warning" if isinstance(event, BudgetWarning) else "exceeded"
        value = {"level": level, **json.loads(encode(event.data))}
        return [CustomEvent(name="sluice.budget", value=value)]
    if isinstance(event, TaskInputRequired):
        value = {"taskId": task, "answer": f"/v1/tasks/{task}/input", **json.loads(encode(event.data))}
        return [CustomEvent(name="sluice.input_required", value=value)]
    if isinstance(event, TaskResumed):
        return [CustomEvent(name="sluice.resumed", value=json.loads(encode(event.data)))]
    if isinstance(event, TaskCompleted):
        return [RunFinishedEvent(thread_id=facts.context_id, run_id=facts.run_id, result=event.data.output)]
    if isinstance(event, TaskFailed):
        return [RunErrorEvent(message=event.data.error.message, code=event.data.error.code)]
    if isinstance(event, TaskCanceled):
        return [RunErrorEvent(message=event.data.reason or "canceled", code="canceled")]
    return []


def ag_ui_events(event: Event, facts: TaskFacts) -> list[BaseEvent]:
    """The AG-UI events of one Sluice event, in order (possibly none), stamped with the event's time."""
    out = _events(event, facts)
    stamp = _millis(event.ts)
    for item in out:
        item.timestamp = stamp
    return out


def encode_event(seq: int, event: Event, facts: TaskFacts) -> bytes:
    """The SSE bytes of one Sluice event: its AG-UI events as `data:` frames, the last with `id: <seq>`."""
    bodies = [item.model_dump_json(by_alias=True, exclude_none=True).encode() for item in ag_ui_events(event, facts)]
    return frames.sse_data(seq, bodies)


def encoding_for(facts: TaskFacts) -> encodings.Encoding:
    """The `ag-ui` encoding of one task. Per task, not registered once: the events that end a run name its thread and
    run, which only the task's record holds. Every client of a task gets the same facts, so the engine's bytes,
    cached per encoding name in the task's feed, are the same for all of them."""

    def event(seq: int, event_type: bytes, payload: bytes) -> bytes:
        try:
            decoded = decode_event(payload)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            log.warning("leaving out an event the AG-UI stream cannot read: %s", exc, extra={"seq": seq})
            return b""
        return encode_event(seq, decoded, facts)

    def frame(id: str | None, event_type: str, body: bytes) -> bytes:
        custom = CustomEvent(name="sluice." + event_type.replace(".", "_"), value=json.loads(body))
        return frames.sse_data(None, [custom.model_dump_json(by_alias=True, exclude_none=True).encode()])

    return encodings.Encoding(
        name="ag-ui",
        media_type=frames.SSE_CONTENT_TYPE,
        event=event,
        frame=frame,
        heartbeat=lambda ts: frames.SSE_KEEPALIVE,
        preamble=frames.sse_retry,
    )
