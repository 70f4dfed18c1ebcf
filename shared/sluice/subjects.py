"""Subject, stream, consumer and bucket names: built here and only here (CONTRACT §2).

Fixed words come first; every id is validated by `parse_task_id`, and event types and tool names by their own
patterns, so no caller can turn input into a wildcard.
"""

from __future__ import annotations

import re

from sluice.errors import InvalidInput
from sluice.ids import parse_task_id, parse_tenant

__all__ = [
    "CATALOG_BUCKET",
    "CONTEXTS_BUCKET",
    "CONTROL_PREFIX",
    "EVENTS_STREAM",
    "HANDBACKS_BUCKET",
    "LEASES_BUCKET",
    "LIMITS_BUCKET",
    "TASKS_BUCKET",
    "TOOLS_STREAM",
    "TOOL_CONSUMER",
    "WORK_CONSUMER",
    "WORK_STREAM",
    "active_tasks_key",
    "active_tasks_keys",
    "catalog_known_key",
    "catalog_known_keys",
    "catalog_runner_key",
    "catalog_runner_keys",
    "control",
    "control_all",
    "creations_key",
    "event",
    "event_type_of",
    "events_all",
    "events_of_task",
    "events_of_type",
    "idempotency_key",
    "lifecycle_of_task",
    "open_streams_key",
    "open_streams_keys",
    "task_id_of",
    "tenant_index_key",
    "tenant_index_keys",
    "tool_call",
    "tool_calls_all",
    "tool_stream_subjects",
    "work",
    "work_all",
    "work_stream_subjects",
]

EVENTS_STREAM = "SLUICE_EVENTS"
WORK_STREAM = "SLUICE_WORK"
TOOLS_STREAM = "SLUICE_TOOLS"
TASKS_BUCKET = "sluice-tasks"
CONTEXTS_BUCKET = "sluice-contexts"  # one key per conversation: its tasks, oldest first
LEASES_BUCKET = "sluice-leases"  # leases of singleton jobs (the reconciler), expiring unless renewed
HANDBACKS_BUCKET = "sluice-handbacks"  # clean hand-backs per work/tool-call message (sluice.handbacks)
CATALOG_BUCKET = "sluice-catalog"
LIMITS_BUCKET = "sluice-limits"  # the per-tenant abuse limits' counts, shared by every edge replica (sluice.limits)
WORK_CONSUMER = "agent-runners"
TOOL_CONSUMER = "tool-runners"

EVENT_PREFIX = "sluice.evt"
WORK_PREFIX = "sluice.run"
TOOL_PREFIX = "sluice.tool"
CONTROL_PREFIX = "sluice.ctl"
# Keys of the task bucket besides the task ids themselves.
IDEMPOTENCY_PREFIX = "idem"
TENANT_INDEX_PREFIX = "tn"
_DIGEST_RE = re.compile(r"^[0-9a-f]{16,64}$")

# Dotted lowercase words: `task.completed`, `llm.delta`. Never a wildcard, never empty tokens.
_EVENT_TYPE_RE = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$")
_TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A runner id or an agent name inside a catalog key: one KV token, never a wildcard or a dot.
_CATALOG_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_RUNNER_KINDS = ("agent-runner", "tool-runner")


def _event_type(value: str) -> str:
    if not _EVENT_TYPE_RE.fullmatch(value):
        raise InvalidInput("invalid_event_type", f"event type {value!r} is not dotted lowercase words")
    return value


def tool_name(value: str) -> str:
    if not _TOOL_NAME_RE.fullmatch(value):
        raise InvalidInput("invalid_tool_name", f"tool name {value!r} must match ^[A-Za-z0-9_-]{{1,64}}$")
    return value


def event(task_id: str, event_type: str) -> str:
    return f"{EVENT_PREFIX}.{parse_task_id(task_id)}.{_event_type(event_type)}"


def events_of_task(task_id: str) -> str:
    return f"{EVENT_PREFIX}.{parse_task_id(task_id)}.>"


def lifecycle_of_task(task_id: str) -> str:
    """The task's `task.*` events only (submitted, started, input_required, resumed and the terminal ones)."""
    return f"{EVENT_PREFIX}.{parse_task_id(task_id)}.task.>"


def events_of_type(event_type: str) -> str:
    """Every task's events of one type, e.g. all `task.completed`."""
    return f"{EVENT_PREFIX}.*.{_event_type(event_type)}"


def events_all() -> str:
    return f"{EVENT_PREFIX}.>"


def work(task_id: str) -> str:
    return f"{WORK_PREFIX}.{parse_task_id(task_id)}"


def work_all() -> str:
    return f"{WORK_PREFIX}.*"


def work_stream_subjects() -> str:
    """What SLUICE_WORK captures."""
    return f"{WORK_PREFIX}.>"


def tool_stream_subjects() -> str:
    """What SLUICE_TOOLS captures."""
    return f"{TOOL_PREFIX}.>"


def tool_call(name: str, task_id: str) -> str:
    return f"{TOOL_PREFIX}.{tool_name(name)}.{parse_task_id(task_id)}"


def tool_calls_all() -> str:
    return f"{TOOL_PREFIX}.*.*"


def control(task_id: str) -> str:
    return f"{CONTROL_PREFIX}.{parse_task_id(task_id)}"


def control_all() -> str:
    return f"{CONTROL_PREFIX}.*"


def task_id_of(subject: str) -> str:
    """The task id in an event, work, tool or control subject."""
    parts = subject.split(".")
    if subject.startswith(TOOL_PREFIX + "."):
        return parse_task_id(parts[3] if len(parts) > 3 else "")
    return parse_task_id(parts[2] if len(parts) > 2 else "")


def event_type_of(subject: str) -> str:
    """`sluice.evt.<task>.tool.completed` → `tool.completed`."""
    return subject.split(".", 3)[3]


# ---------------------------------------------------------------- the catalog bucket (CONTRACT §9)
#
#   runners.<kind>.<runner_id>   a live runner's advertisement, written with a per-message TTL and refreshed
#   known.<agent>                an agent some runner once advertised (no TTL); `{"withdrawn": true}` withdraws it


def _catalog_token(value: str, what: str) -> str:
    if not _CATALOG_TOKEN_RE.fullmatch(value):
        raise InvalidInput(f"invalid_{what}", f"{what} {value!r} must match ^[A-Za-z0-9_-]{{1,128}}$")
    return value


def catalog_runner_key(kind: str, runner_id: str) -> str:
    if kind not in _RUNNER_KINDS:
        raise InvalidInput("invalid_runner_kind", f"runner kind {kind!r} is not one of {_RUNNER_KINDS}")
    return f"runners.{kind}.{_catalog_token(runner_id, 'runner_id')}"


def catalog_known_key(agent: str) -> str:
    return f"known.{_catalog_token(agent, 'agent')}"


def catalog_known_keys() -> str:
    return "known.*"


def catalog_runner_keys(kind: str) -> str:
    """Every advertisement of one kind of runner (a runner may write only its own kind's)."""
    if kind not in _RUNNER_KINDS:
        raise InvalidInput("invalid_runner_kind", f"runner kind {kind!r} is not one of {_RUNNER_KINDS}")
    return f"runners.{kind}.*"


def idempotency_key(digest: str) -> str:
    """The task-bucket key that holds which task an Idempotency-Key (hashed, with its tenant) belongs to."""
    if not _DIGEST_RE.fullmatch(digest):
        raise InvalidInput("invalid_digest", "an idempotency digest is 16-64 lowercase hex characters")
    return f"{IDEMPOTENCY_PREFIX}.{digest}"


def tenant_index_key(tenant: str, task_id: str) -> str:
    """The task-bucket key that lists `task_id` under its tenant (the per-tenant index ListTasks reads)."""
    return f"{TENANT_INDEX_PREFIX}.{parse_tenant(tenant)}.{parse_task_id(task_id)}"


def tenant_index_keys(tenant: str) -> str:
    """A KV watch filter for every index key of one tenant: listing costs what that tenant has."""
    return f"{TENANT_INDEX_PREFIX}.{parse_tenant(tenant)}.*"


# ---------------------------------------------------------------- the limits bucket (CONTRACT §8)
#
#   active.<tenant>                 the tenant's unfinished tasks (no TTL: freed when each task ends)
#   rate.<tenant>.<minute>          creations in one minute window (per-message TTL: old windows vanish)
#   streams.<tenant>.<edge_id>      one edge's open streams of the tenant (per-message TTL, refreshed while it lives)


def active_tasks_key(tenant: str) -> str:
    return f"active.{parse_tenant(tenant)}"


def active_tasks_keys() -> str:
    return "active.*"


def creations_key(tenant: str, minute: int) -> str:
    if minute < 0:
        raise InvalidInput("invalid_window", "a rate window is a non-negative minute number")
    return f"rate.{parse_tenant(tenant)}.{minute}"


def open_streams_key(tenant: str, edge_id: str) -> str:
    return f"streams.{parse_tenant(tenant)}.{_catalog_token(edge_id, 'edge_id')}"


def open_streams_keys() -> str:
    return "streams.>"
