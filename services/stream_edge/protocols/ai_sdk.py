"""Sluice events → AI SDK UI message stream chunks (the protocol of the `ai` package's `useChat`), CONTRACT §10.

A pure mapping, registered with the streaming engine as the encoding `ai-sdk`: each event becomes its chunks from
the event alone, so the engine encodes it once per event however many clients read it, on any edge replica, and a
resume after any event id is exact. Every id a chunk carries is derived from the log (message id = task id; text
part id = task, step and attempt), so two replicas, or a replay after a crash, assemble exactly the same message.

| Sluice event            | UI message chunks                                                                      |
| ----------------------- | -------------------------------------------------------------------------------------- |
| `task.submitted`        | `start` (`messageId` = task id, `messageMetadata` = task and context ids)              |
| `agent.started/completed` | `data-stage` (`id` = `stage-N`; the completed one replaces the started one)          |
| `llm.started`           | `start-step`, `text-start` (a retried attempt first ends the superseded part, below)   |
| `llm.delta`             | `text-delta`                                                                           |
| `llm.completed`         | `text-end`, a `tool-input-available` per tool call, `finish-step`                      |
| `tool.completed`        | `tool-output-available` (`ok`) or `tool-output-error`                                  |
| `budget.warning/exceeded` | `data-budget` (`id` = the budget's kind)                                             |
| `task.input_required`   | approval: `tool-approval-request`; both kinds: `data-input-request` (how to answer)    |
| `task.resumed`          | `data-input-request` again, now `answered` (replaces the request)                      |
| `task.completed`        | `finish` (`finishReason` `stop`, usage in `messageMetadata`)                           |
| `task.failed`           | `error` (`errorText` = code: message), `finish` (`finishReason` `error`)               |
| `task.canceled`         | `abort` (`reason`)                                                                     |
| `task.started`, `tool.started` | nothing (the tool's input arrived with `llm.completed`)                         |

A retried step (`llm.started` with `attempt` > 1, CONTRACT §3): the superseded attempt's text part is ended with
`providerMetadata.sluice.superseded = true` and its step finished; the new attempt gets a new step and part. The
UI message stream cannot delete a part, so a client hides parts marked superseded (the Sluice web page does);
the runner numbers the attempts of a step consecutively, which is what lets the end of attempt N-1 be named
without remembering anything.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import msgspec

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
)
from stream_edge.streaming import encodings, frames

__all__ = ["DONE", "ENCODING", "HEADERS", "Chunk", "chunks", "encode_event", "parsed_json", "text_part_id"]

log = logging.getLogger(__name__)

Chunk = dict[str, Any]
HEADERS = (("x-vercel-ai-ui-message-stream", "v1"),)
DONE = b"[DONE]"  # the stream's last frame, right after the terminal event's chunks


def text_part_id(task_id: str, step: int, attempt: int) -> str:
    return f"{task_id}-s{step}-a{attempt}"


def parsed_json(text: str | None) -> Any:
    """A tool's arguments or result as JSON when they are JSON, else the text itself (the log keeps what was said)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _stage(data: AgentStarted | AgentCompleted, state: str) -> Chunk:
    d = data.data
    return {
        "type": "data-stage",
        "id": f"stage-{d.stage}",
        "data": {"agent": d.agent, "stage": d.stage, "stages": d.stages, "state": state},
    }


def _input_request(event: TaskInputRequired | TaskResumed) -> Chunk:
    task = event.task_id
    data: dict[str, Any] = {"taskId": task, "answer": f"/v1/tasks/{task}/input"}
    if isinstance(event, TaskInputRequired):
        ask = event.data
        data |= {"state": "waiting", "kind": ask.kind, "prompt": ask.prompt}
        if ask.kind == "approval":
            data |= {"toolCallId": ask.call_id, "toolName": ask.name}
    else:
        data |= {"state": "answered", "input": event.data.input}
        if event.data.approved is not None:
            data["approved"] = event.data.approved
    return {"type": "data-input-request", "id": "input-request", "data": data}


def chunks(event: Event) -> list[Chunk]:
    """The UI message chunks of one event, in order (possibly none)."""
    task = event.task_id
    if isinstance(event, TaskSubmitted):
        ids = {"taskId": task, "contextId": event.data.context_id or task}
        return [{"type": "start", "messageId": task, "messageMetadata": ids}]
    if isinstance(event, LlmStarted):
        started = event.data
        out: list[Chunk] = []
        if started.attempt > 1:
            superseded = {"sluice": {"superseded": True, "step": started.step, "attempt": started.attempt - 1}}
            out += [
                {
                    "type": "text-end",
                    "id": text_part_id(task, started.step, started.attempt - 1),
                    "providerMetadata": superseded,
                },
                {"type": "finish-step"},
            ]
        return [
            *out,
            {"type": "start-step"},
            {"type": "text-start", "id": text_part_id(task, started.step, started.attempt)},
        ]
    if isinstance(event, LlmDelta):
        delta = event.data
        return [{"type": "text-delta", "id": text_part_id(task, delta.step, delta.attempt), "delta": delta.text}]
    if isinstance(event, LlmCompleted):
        done = event.data
        calls = [
            {
                "type": "tool-input-available",
                "toolCallId": c.call_id,
                "toolName": c.name,
                "input": parsed_json(c.arguments),
            }
            for c in done.tool_calls
        ]
        return [
            {"type": "text-end", "id": text_part_id(task, done.step, done.attempt)},
            *calls,
            {"type": "finish-step"},
        ]
    if isinstance(event, ToolCompleted):
        tool = event.data
        if tool.ok:
            return [{"type": "tool-output-available", "toolCallId": tool.call_id, "output": parsed_json(tool.result)}]
        return [{"type": "tool-output-error", "toolCallId": tool.call_id, "errorText": tool.error or "the tool failed"}]
    if isinstance(event, AgentStarted):
        return [_stage(event, "working")]
    if isinstance(event, AgentCompleted):
        return [_stage(event, "completed")]
    if isinstance(event, BudgetWarning | BudgetExceeded):
        level = "warning" if isinstance(event, BudgetWarning) else "exceeded"
        spent = event.data
        budget = {"level": level, "kind": spent.kind, "used": spent.used, "limit": spent.limit}
        return [{"type": "data-budget", "id": f"budget-{spent.kind}", "data": budget}]
    if isinstance(event, TaskInputRequired):
        ask = _input_request(event)
        if event.data.kind == "approval" and event.data.call_id:
            approval = {
                "type": "tool-approval-request",
                "approvalId": event.data.call_id,
                "toolCallId": event.data.call_id,
            }
            return [approval, ask]
        return [ask]
    if isinstance(event, TaskResumed):
        return [_input_request(event)]
    if isinstance(event, TaskCompleted):
        usage = {"inputTokens": event.data.usage.input_tokens, "outputTokens": event.data.usage.output_tokens}
        metadata: dict[str, Any] = {"taskId": task, "usage": usage, "costUsd": event.data.usage.cost_usd}
        return [{"type": "finish", "finishReason": "stop", "messageMetadata": metadata}]
    if isinstance(event, TaskFailed):
        error = event.data.error
        return [
            {"type": "error", "errorText": f"{error.code}: {error.message}"},
            {"type": "finish", "finishReason": "error"},
        ]
    if isinstance(event, TaskCanceled):
        return [{"type": "abort", "reason": event.data.reason}]
    return []


def encode_event(seq: int, event: Event) -> bytes:
    """The SSE bytes of one Sluice event: its chunks as `data:` frames, the last with `id: <seq>`."""
    return frames.sse_data(seq, [msgspec.json.encode(chunk) for chunk in chunks(event)])


def _event(seq: int, event_type: bytes, payload: bytes) -> bytes:
    try:
        event = decode_event(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        log.warning("leaving out an event the AI SDK stream cannot read: %s", exc, extra={"seq": seq})
        return b""
    return encode_event(seq, event)


def _frame(id: str | None, event_type: str, body: bytes) -> bytes:
    """A stream-only event (`stream.gap`, `task.snapshot`) as a transient data part: said, never kept in the message."""
    name = "data-" + event_type.replace(".", "-")
    chunk = b'{"type":"' + name.encode() + b'","transient":true,"data":' + body + b"}"
    return frames.sse_data(None, [chunk])


ENCODING = encodings.register(
    encodings.Encoding(
        name="ai-sdk",
        media_type=frames.SSE_CONTENT_TYPE,
        event=_event,
        frame=_frame,
        heartbeat=lambda ts: frames.SSE_KEEPALIVE,
        preamble=frames.sse_retry,
        trailer=frames.sse_data(None, [DONE]),
        headers=HEADERS,
    )
)
