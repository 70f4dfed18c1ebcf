"""The tenant check, one dependency for every route that touches a task (native, A2A, contexts, chat, AG-UI).

    caller: Caller = Depends(caller_of)                   who is asking (401 if the guard admitted nobody)
    record = await owned_task(edge, caller, task_id)      the task, if it is this caller's; else 404

Another tenant's task is `404 task_not_found`, word for word what a task that does not exist answers, so a
caller learns nothing about other tenants' ids. A stream token's caller owns only its one task's stream.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from sluice.errors import NotFound, Unauthenticated
from sluice.events import TaskRecord
from stream_edge.auth.caller import CALLER_STATE_KEY, Caller
from stream_edge.runtime import EdgeRuntime

__all__ = ["CallerDep", "caller_of", "caller_of_connection", "not_found", "owned_task", "owns"]


def caller_of_connection(connection: HTTPConnection) -> Caller:
    caller = connection.scope.get("state", {}).get(CALLER_STATE_KEY)
    if not isinstance(caller, Caller):
        raise Unauthenticated("unauthenticated", "this route needs credentials")
    return caller


async def caller_of(request: Request) -> Caller:
    return caller_of_connection(request)  # async: a plain `def` dependency would run in FastAPI's thread pool


CallerDep = Annotated[Caller, Depends(caller_of)]


def not_found(task_id: str) -> NotFound:
    return NotFound("task_not_found", f"no task {task_id}")


def owns(caller: Caller, record: TaskRecord) -> bool:
    return record.tenant == caller.tenant and caller.may_touch(record.id)


async def owned_task(edge: EdgeRuntime, caller: Caller, task_id: str) -> TaskRecord:
    """The record of `task_id` if it belongs to the caller's tenant (404 otherwise, as for no task at all)."""
    record = await edge.tasks.find(task_id, tenant=caller.tenant)
    if record is None or not caller.may_touch(record.id):
        raise not_found(task_id)
    return record
