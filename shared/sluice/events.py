"""The wire contract (CONTRACT §3): the event envelope, every event type's `data`, the task record.

One definition serves encoding, strict decoding and JSON Schema. Tags are explicit strings (`type`), never class
names. Wire names are forever: add fields with defaults, never rename.

An event is stored in SLUICE_EVENTS without `id`; its id is the stream sequence, added when it is served.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

import msgspec
from msgspec import Struct, field

from sluice.ids import DEFAULT_TENANT

__all__ = [
    "EVENT_TYPES",
    "STREAM_ONLY_TYPES",
    "TERMINAL_TYPES",
    "AgentCompleted",
    "AgentStarted",
    "Budget",
    "BudgetExceeded",
    "BudgetWarning",
    "ContextRecord",
    "ErrorInfo",
    "Event",
    "HistoryMessage",
    "LlmCompleted",
    "LlmDelta",
    "LlmStarted",
    "StreamGap",
    "TaskCanceled",
    "TaskCompleted",
    "TaskFailed",
    "TaskInputRequired",
    "TaskRecord",
    "TaskResumed",
    "TaskSnapshot",
    "TaskStarted",
    "TaskSubmitted",
    "ToolCall",
    "ToolCompleted",
    "ToolStarted",
    "Usage",
    "decode_event",
    "encode",
    "event_type",
]

TaskState = Literal["submitted", "working", "input-required", "completed", "failed", "canceled"]
TERMINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "canceled"})
BudgetKind = Literal["tokens", "cost_usd", "steps", "time_s"]


# ---------------------------------------------------------------- pieces shared by several types


class Usage(Struct, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=round(self.cost_usd + other.cost_usd, 10),
        )


class ErrorInfo(Struct, kw_only=True):
    code: str
    message: str


class HistoryMessage(Struct, kw_only=True):
    role: Literal["user", "assistant", "system"]
    content: str


class ToolCall(Struct, kw_only=True):
    call_id: str
    name: str
    # The JSON text the model produced; it may be malformed, which the tool-runner reports as ok=false.
    arguments: str


class Budget(Struct, kw_only=True, omit_defaults=True):
    max_output_tokens: int | None = None
    max_cost_usd: float | None = None
    max_steps: int | None = None
    timeout_s: float | None = None


# ---------------------------------------------------------------- data of each event type


class TaskSubmittedData(Struct, kw_only=True):
    input: str
    agent: str
    history: list[HistoryMessage]
    metadata: dict[str, Any]
    budget: Budget = field(default_factory=Budget)
    context_id: str | None = None


class TaskStartedData(Struct, kw_only=True):
    attempt: int
    runner: str
    # The limits this attempt runs with: the task's budget where it lowers the agent's ceilings, the ceilings
    # elsewhere (a budget above a ceiling is clamped to it, not refused). Empty for an agent the runner does not know.
    budget: Budget = field(default_factory=Budget)


class AgentStartedData(Struct, kw_only=True):
    agent: str
    stage: int
    stages: int


class AgentCompletedData(Struct, kw_only=True):
    agent: str
    stage: int
    stages: int
    output: str


class LlmStartedData(Struct, kw_only=True):
    step: int
    attempt: int
    model: str
    agent: str


class LlmDeltaData(Struct, kw_only=True):
    step: int
    attempt: int
    text: str


class LlmCompletedData(Struct, kw_only=True):
    step: int
    attempt: int
    content: str
    tool_calls: list[ToolCall]
    usage: Usage
    finish_reason: str


class ToolStartedData(Struct, kw_only=True):
    call_id: str
    name: str
    arguments: str


class ToolCompletedData(Struct, kw_only=True):
    call_id: str
    name: str
    ok: bool
    result: str | None = None
    error: str | None = None
    duration_ms: float = 0.0


class BudgetData(Struct, kw_only=True):
    kind: BudgetKind
    used: float
    limit: float


class TaskInputRequiredData(Struct, kw_only=True):
    prompt: str
    kind: Literal["question", "approval"]
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None


class TaskResumedData(Struct, kw_only=True):
    input: str
    # For an approval request: the decision. None when the input answers a question.
    approved: bool | None = None


class TaskCompletedData(Struct, kw_only=True):
    output: str
    usage: Usage


class TaskFailedData(Struct, kw_only=True):
    error: ErrorInfo
    usage: Usage


class TaskCanceledData(Struct, kw_only=True):
    reason: str


class StreamGapData(Struct, kw_only=True):
    after: str
    oldest: str


# ---------------------------------------------------------------- the task record (KV `sluice-tasks`)


class TaskRecord(Struct, kw_only=True):
    id: str
    state: TaskState
    agent: str
    input: str
    created_at: str
    updated_at: str
    output: str | None = None
    error: ErrorInfo | None = None
    usage: Usage = field(default_factory=Usage)
    last_event_id: str | None = None
    # True when `output` is only the first RECORD_OUTPUT_MAX_BYTES of the answer (sluice.limits): the whole of it is
    # in the log's `task.completed`. Set by the task store, the one writer of records.
    output_truncated: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    context_id: str | None = None
    # The task's trace (W3C trace id, 32 hex): what an operator pastes into Jaeger. Every event carries it too.
    trace_id: str | None = None
    # Ownership (fencing): the attempt that holds the task and its runner, taken over by compare-and-set. A runner
    # whose attempt is no longer the record's may write nothing more (see sluice.guard and the agent-runner handler).
    attempt: int = 0
    runner: str | None = None
    work_seq: int = 0  # the stream sequence of the work message the holding attempt was given
    # Who owns the task (CONTRACT §8): every later touch is checked against it. Records older than tenants, and
    # every task of an edge without authentication, belong to the default tenant.
    tenant: str = DEFAULT_TENANT
    # A read-only token for this task's event stream (`?access_token=`). Never stored: the edge adds a fresh one
    # when it answers the record to its tenant.
    stream_token: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class ContextRecord(Struct, kw_only=True):
    """A conversation (KV `sluice-contexts`): its tasks, oldest first. The history itself is in their logs."""

    id: str
    created_at: str
    updated_at: str
    tasks: list[str] = field(default_factory=list)
    tenant: str | None = None


# ---------------------------------------------------------------- the envelope: a tagged union on `type`


class Event(Struct, kw_only=True, tag_field="type", omit_defaults=True):
    """Fields every event carries. `id` is absent in storage and present when served."""

    task_id: str
    ts: str
    source: str
    trace_id: str = ""
    id: str | None = None


class TaskSubmitted(Event, tag="task.submitted"):
    data: TaskSubmittedData


class TaskStarted(Event, tag="task.started"):
    data: TaskStartedData


class AgentStarted(Event, tag="agent.started"):
    data: AgentStartedData


class AgentCompleted(Event, tag="agent.completed"):
    data: AgentCompletedData


class LlmStarted(Event, tag="llm.started"):
    data: LlmStartedData


class LlmDelta(Event, tag="llm.delta"):
    data: LlmDeltaData


class LlmCompleted(Event, tag="llm.completed"):
    data: LlmCompletedData


class ToolStarted(Event, tag="tool.started"):
    data: ToolStartedData


class ToolCompleted(Event, tag="tool.completed"):
    data: ToolCompletedData


class BudgetWarning(Event, tag="budget.warning"):
    data: BudgetData


class BudgetExceeded(Event, tag="budget.exceeded"):
    data: BudgetData


class TaskInputRequired(Event, tag="task.input_required"):
    data: TaskInputRequiredData


class TaskResumed(Event, tag="task.resumed"):
    data: TaskResumedData


class TaskCompleted(Event, tag="task.completed"):
    data: TaskCompletedData


class TaskFailed(Event, tag="task.failed"):
    data: TaskFailedData


class TaskCanceled(Event, tag="task.canceled"):
    data: TaskCanceledData


# Served by stream-edge only, never stored in the log.
class StreamGap(Event, tag="stream.gap"):
    data: StreamGapData


class TaskSnapshot(Event, tag="task.snapshot"):
    data: TaskRecord


LogEvent = (
    TaskSubmitted
    | TaskStarted
    | AgentStarted
    | AgentCompleted
    | LlmStarted
    | LlmDelta
    | LlmCompleted
    | ToolStarted
    | ToolCompleted
    | BudgetWarning
    | BudgetExceeded
    | TaskInputRequired
    | TaskResumed
    | TaskCompleted
    | TaskFailed
    | TaskCanceled
)
AnyEvent = LogEvent | StreamGap | TaskSnapshot

LOG_EVENT_CLASSES: tuple[type[Event], ...] = typing.get_args(LogEvent)


def event_type(cls: type[Event]) -> str:
    """The wire tag of an event class, e.g. LlmDelta → "llm.delta"."""
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


_ALL_CLASSES: tuple[type[Event], ...] = (*LOG_EVENT_CLASSES, StreamGap, TaskSnapshot)
EVENT_CLASS_BY_TYPE: dict[str, type[Event]] = {event_type(c): c for c in _ALL_CLASSES}
EVENT_TYPES: tuple[str, ...] = tuple(event_type(c) for c in LOG_EVENT_CLASSES)
STREAM_ONLY_TYPES: tuple[str, ...] = ("stream.gap", "task.snapshot")
TERMINAL_TYPES: frozenset[str] = frozenset({"task.completed", "task.failed", "task.canceled"})

_encoder = msgspec.json.Encoder()
_log_decoder = msgspec.json.Decoder(LogEvent)
_any_decoder = msgspec.json.Decoder(AnyEvent)
_record_decoder = msgspec.json.Decoder(TaskRecord)


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def decode_event(payload: bytes | str, *, served: bool = False) -> Event:
    """Strictly decode one event. `served=True` also accepts the stream-only types the edge adds.

    Raises msgspec.ValidationError / DecodeError naming the offending field, e.g. "Object missing required
    field `text` - at `$.data`" or "Invalid value 'x.y' - at `$.type`".
    """
    decoded: Event = (_any_decoder if served else _log_decoder).decode(payload)
    return decoded


def decode_record(payload: bytes) -> TaskRecord:
    return _record_decoder.decode(payload)


def schemas() -> dict[str, Any]:
    """JSON Schema of every wire type: the events, the record and the NATS messages."""
    from sluice.messages import ControlMessage, ToolCallMessage, WorkMessage

    types = (
        *LOG_EVENT_CLASSES,
        StreamGap,
        TaskSnapshot,
        TaskRecord,
        WorkMessage,
        ToolCallMessage,
        ControlMessage,
    )
    (refs, components) = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Sluice wire types",
        "oneOf": refs,
        "$defs": components,
    }
