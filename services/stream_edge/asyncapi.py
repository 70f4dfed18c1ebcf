"""The AsyncAPI 3.0 document of Sluice's NATS interface, served at `GET /asyncapi.json`.

It describes what a service inside the cluster may publish or subscribe to (CONTRACT §2): the per-task event log
`sluice.evt.{task_id}.{type}`, work `sluice.run.{task_id}`, tool calls `sluice.tool.{name}.{task_id}`, cancel
notices `sluice.ctl.{task_id}`, and the task records in KV `sluice-tasks`. Payload schemas come from the same
msgspec Structs that encode and decode the messages (`sluice.events`, `sluice.messages`), so the document cannot
drift from the wire. Subject shapes are written with the builders of `sluice.subjects`.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from fastapi import APIRouter
from starlette.responses import Response

from sluice import events as ev
from sluice import subjects
from sluice.events import LOG_EVENT_CLASSES, event_type
from sluice.ids import TASK_ID_PATTERN
from sluice.messages import ControlMessage, ToolCallMessage, WorkMessage
from stream_edge.asyncapi_tools import ADVERT_TYPES, tool_channels, tool_messages, tool_operations

__all__ = ["ASYNCAPI_VERSION", "build_document", "router"]

ASYNCAPI_VERSION = "3.0.0"
_SCHEMAS = "#/components/schemas/{name}"

router = APIRouter()


@router.get("/asyncapi.json", include_in_schema=False)
async def asyncapi_json() -> Response:
    """Sluice's NATS subjects and payloads as an AsyncAPI 3.0 document."""
    return Response(_document_bytes(), media_type="application/json")


@functools.cache
def _document_bytes() -> bytes:
    return msgspec.json.encode(build_document())


def build_document(version: str = "0.1.0") -> dict[str, Any]:
    types: tuple[type[msgspec.Struct], ...] = (
        *LOG_EVENT_CLASSES,
        WorkMessage,
        ToolCallMessage,
        ControlMessage,
        ev.TaskRecord,
        *ADVERT_TYPES,
    )
    _, schemas = msgspec.json.schema_components(types, ref_template=_SCHEMAS)
    schemas["NatsHeaders"] = _HEADERS
    messages = {cls.__name__: _event_message(cls) for cls in LOG_EVENT_CLASSES}
    messages["WorkMessage"] = _message(
        "work", "Run or continue a task", "WorkMessage", "Nats-Msg-Id `{task}:run:submitted`, `{task}:run:r{seq}`…"
    )
    messages["ToolCallMessage"] = _message(
        "tool_call", "Run one tool call", "ToolCallMessage", "Nats-Msg-Id `{task}:call:{call_id}`."
    )
    messages["ControlMessage"] = _message(
        "control", "Cancel notice", "ControlMessage", "Core NATS, not stored: a prompt notice; the record is the truth."
    )
    messages["TaskRecord"] = _message(
        "task_record", "A task's record", "TaskRecord", "The KV value; changed by compare-and-set only."
    )
    messages.update(tool_messages())
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Sluice over NATS JetStream",
            "version": version,
            "description": (
                "The subjects Sluice services publish and consume. Every JetStream publish carries a deterministic "
                "`Nats-Msg-Id` (retries are dropped as duplicates) and W3C `traceparent`. An event's id is its "
                f"sequence in the `{subjects.EVENTS_STREAM}` stream; payloads are stored without `id`."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "Any node of the cluster; services read the URLs from SLUICE_NATS_URL.",
            }
        },
        "channels": {**_channels(messages), **tool_channels()},
        "operations": {**_operations(), **tool_operations()},
        "components": {"schemas": schemas, "messages": messages, "parameters": _PARAMETERS},
    }


def _channels(messages: dict[str, Any]) -> dict[str, Any]:
    def refs(*names: str) -> dict[str, Any]:
        return {name: {"$ref": f"#/components/messages/{name}"} for name in names}

    def param(*names: str) -> dict[str, Any]:
        return {name: {"$ref": f"#/components/parameters/{name}"} for name in names}

    event_names = [cls.__name__ for cls in LOG_EVENT_CLASSES]
    return {
        "taskEvents": {
            "address": _address(subjects.event, "type"),
            "title": "A task's event log",
            "description": (
                f"Stream `{subjects.EVENTS_STREAM}` (limits retention, file storage, direct get). Subscribe to "
                f"`{_address(subjects.events_of_task)}` for one task, `{subjects.events_of_type('task.completed')}` "
                "for every finished task. Exactly one terminal event per task (task.completed, task.failed or "
                "task.canceled), always the last."
            ),
            "parameters": param("task_id", "type"),
            "messages": refs(*event_names),
        },
        "work": {
            "address": _address(subjects.work),
            "title": "Work for agent-runners",
            "description": (
                f"Stream `{subjects.WORK_STREAM}` (work queue), consumed through the shared durable consumer "
                f"`{subjects.WORK_CONSUMER}`."
            ),
            "parameters": param("task_id"),
            "messages": refs("WorkMessage"),
        },
        "toolCalls": {
            "address": _address(lambda task: subjects.tool_call("TOOLNAME", task)).replace("TOOLNAME", "{name}"),
            "title": "Tool calls for tool-runners",
            "description": (
                f"Stream `{subjects.TOOLS_STREAM}` (work queue), consumed through the shared durable consumer "
                f"`{subjects.TOOL_CONSUMER}`. Results come back as tool.started / tool.completed events."
            ),
            "parameters": param("name", "task_id"),
            "messages": refs("ToolCallMessage"),
        },
        "control": {
            "address": _address(subjects.control),
            "title": "Cancel notices",
            "description": "Core NATS, not stored: tells whichever runner holds the task to stop.",
            "parameters": param("task_id"),
            "messages": refs("ControlMessage"),
        },
        "taskRecords": {
            "address": f"$KV.{subjects.TASKS_BUCKET}.{{task_id}}",
            "title": "Task records",
            "description": f"KV bucket `{subjects.TASKS_BUCKET}` (key = task id); watch it for state changes.",
            "parameters": param("task_id"),
            "messages": refs("TaskRecord"),
        },
    }


def _operations() -> dict[str, Any]:
    def op(action: str, channel: str, summary: str, messages: list[str]) -> dict[str, Any]:
        return {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "messages": [{"$ref": f"#/channels/{channel}/messages/{m}"} for m in messages],
        }

    events = [cls.__name__ for cls in LOG_EVENT_CLASSES]
    return {
        "publishEvents": op("send", "taskEvents", "Edge, runners and tool-runners append to a task's log", events),
        "readEvents": op("receive", "taskEvents", "Edges and services replay and follow a task's log", events),
        "sendWork": op("send", "work", "The edge asks for a task to be run or continued", ["WorkMessage"]),
        "takeWork": op("receive", "work", "Agent-runners pull work", ["WorkMessage"]),
        "sendToolCall": op("send", "toolCalls", "An agent-runner asks for a tool call", ["ToolCallMessage"]),
        "takeToolCall": op("receive", "toolCalls", "Tool-runners pull tool calls", ["ToolCallMessage"]),
        "sendCancel": op("send", "control", "The edge tells a runner to stop a task", ["ControlMessage"]),
        "hearCancel": op("receive", "control", "The runner holding a task hears it is canceled", ["ControlMessage"]),
        "watchRecords": op("receive", "taskRecords", "Watch task records change", ["TaskRecord"]),
    }


def _address(builder: Any, *extra: str) -> str:
    """A subject shape from its builder, with `{task_id}` (and `{type}`) placeholders."""
    probe = "PLACEHOLDER"
    subject: str = builder(probe, "x.y") if extra else builder(probe)
    subject = subject.replace(probe, "{task_id}")
    return subject.replace("x.y", "{type}") if extra else subject


def _event_message(cls: type[ev.Event]) -> dict[str, Any]:
    kind = event_type(cls)
    terminal = " Terminal: always the task's last event." if kind in ev.TERMINAL_TYPES else ""
    msg_id = {"tool.started": "start", "tool.completed": "done"}.get(kind)
    by_tool_runner = f" Nats-Msg-Id `{{task_id}}:tool:{{call_id}}:{msg_id}`." if msg_id else ""
    description = f"Subject `sluice.evt.{{task_id}}.{kind}`.{terminal}{by_tool_runner}"
    return _message(kind, f"{kind} event", cls.__name__, description)


def _message(name: str, title: str, schema: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "description": description,
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/NatsHeaders"},
        "payload": {"$ref": _SCHEMAS.format(name=schema)},
    }


_HEADERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "Nats-Msg-Id": {"type": "string", "description": "Deterministic id; JetStream drops a repeated publish."},
        "traceparent": {"type": "string", "description": "W3C trace context of the task's trace."},
        "tracestate": {"type": "string"},
    },
}

_PARAMETERS: dict[str, Any] = {
    "task_id": {
        "description": f"A task id, matching {TASK_ID_PATTERN} (a ULID); never a wildcard.",
        "examples": ["01JD3S5Q5Z6M1X8F4Y7W2V9K3B"],
    },
    "type": {
        "description": "The dotted event type.",
        "enum": [event_type(cls) for cls in LOG_EVENT_CLASSES],
    },
    "name": {"description": "A tool name, matching ^[A-Za-z0-9_-]{1,64}$.", "examples": ["calculator"]},
}
