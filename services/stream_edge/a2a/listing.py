"""Many tasks at once: ListTasks pages, from the records of one tenant (a context's turns use its index).

The records come from `TaskStore.tenant_records` — the tenant's index keys in the task bucket, then one read per
task — so a listing costs what the caller's tenant holds, never a scan of everyone's tasks.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from a2a.types import ListTasksRequest
from a2a.utils.constants import DEFAULT_LIST_TASKS_PAGE_SIZE
from a2a.utils.errors import InvalidParamsError

from sluice.events import TaskRecord
from stream_edge.a2a.mapping import A2A_STATE

__all__ = ["Page", "context_of", "page_of"]


def context_of(record: TaskRecord) -> str:
    """A task submitted without a context (the native API) is its own context."""
    return record.context_id or record.id


def _when(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


def _token(record: TaskRecord) -> str:
    raw = json.dumps([record.updated_at, record.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor(token: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        updated_at, task_id = json.loads(raw)
        _when(updated_at)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidParamsError(
            message="pageToken is not one this server issued", data={"field": "pageToken"}
        ) from exc
    if not isinstance(updated_at, str) or not isinstance(task_id, str):
        raise InvalidParamsError(message="pageToken is not one this server issued", data={"field": "pageToken"})
    return updated_at, task_id


@dataclass(frozen=True)
class Page:
    records: list[TaskRecord]
    next_page_token: str
    page_size: int
    total_size: int


def page_of(records: Iterable[TaskRecord], params: ListTasksRequest) -> Page:
    """Filter, order (most recently updated first, then by id) and cut one page, as ListTasks specifies."""
    chosen = list(records)
    if params.context_id:
        chosen = [r for r in chosen if context_of(r) == params.context_id]
    if params.status:
        chosen = [r for r in chosen if A2A_STATE[r.state] == params.status]
    if params.HasField("status_timestamp_after"):
        after = params.status_timestamp_after.ToDatetime(tzinfo=UTC)
        chosen = [r for r in chosen if _when(r.updated_at) >= after]
    chosen.sort(key=lambda r: (_when(r.updated_at), r.id), reverse=True)
    total = len(chosen)
    if params.page_token:
        updated_at, task_id = _cursor(params.page_token)
        key = (_when(updated_at), task_id)
        chosen = [r for r in chosen if (_when(r.updated_at), r.id) < key]
    size = params.page_size if params.HasField("page_size") else DEFAULT_LIST_TASKS_PAGE_SIZE
    page = chosen[:size]
    next_token = _token(page[-1]) if len(chosen) > size else ""
    return Page(records=page, next_page_token=next_token, page_size=size, total_size=total)
