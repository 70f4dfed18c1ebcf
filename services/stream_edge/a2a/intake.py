"""An incoming A2A message, as Sluice takes it: a new task, or the answer to the question a task asked.

- No `taskId`: a new task. Its input is the text parts (data parts as JSON); `metadata.agent` picks the agent
  (a skill id of the card), `metadata.budget` the budget; the `contextId` is the Sluice context, so a message in
  an existing context carries that context's earlier turns as history (from its index, `contexts.py`, and only
  the caller's tenant's); the `messageId` is the idempotency key (per tenant, like every idempotency key), so a
  retried message is the same task.
- A `taskId`: the task must be waiting for input. Its answer is the text, or for an approval a data part
  `{"approve": bool}` (or the text yes / no) → `TaskService.provide_input`.

An answer that overtakes the runner's `input-required` record waits for it (`stream_edge.answers`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec
from a2a.types import Message, Role, SendMessageRequest, TaskState
from a2a.utils.errors import (
    ContentTypeNotSupportedError,
    InvalidParamsError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from a2a.utils.task import validate_history_length
from google.protobuf.json_format import MessageToDict

from sluice.errors import InvalidInput
from sluice.events import Budget, TaskInputRequired, TaskRecord, TaskSubmittedData, decode_event
from sluice.ids import CONTEXT_ID_PATTERN, is_task_id, parse_task_id
from stream_edge import answers
from stream_edge.a2a.card import DEFAULT_AGENT
from stream_edge.a2a.listing import context_of
from stream_edge.a2a.mapping import A2A_STATE
from stream_edge.runtime import EdgeRuntime

__all__ = ["accept", "find_record", "state_name", "task_id_param"]

_YES = frozenset({"y", "yes", "approve", "approved", "ok", "allow", "true"})
_NO = frozenset({"n", "no", "deny", "denied", "reject", "rejected", "false"})


def state_name(state: str) -> str:
    return TaskState.Name(A2A_STATE[state])


def task_id_param(value: str, field: str = "id") -> str:
    try:
        return parse_task_id(value)
    except InvalidInput as exc:
        raise InvalidParamsError(message=exc.message, data={"field": field, "code": exc.code}) from None


async def find_record(edge: EdgeRuntime, task_id: str, tenant: str) -> TaskRecord:
    """The task, if it is the tenant's; another tenant's task is not found, exactly as no task."""
    record = await edge.tasks.find(task_id, tenant=tenant)
    if record is None:
        raise TaskNotFoundError(message=f"no task {task_id}", data={"taskId": task_id})
    return record


async def accept(edge: EdgeRuntime, params: SendMessageRequest, tenant: str) -> tuple[TaskRecord, int]:
    """Starts a task, or answers the one the message names. Returns its record and the id the task's stream
    continues after (the `task.submitted` / `task.resumed` this message caused)."""
    validate_history_length(params.configuration)
    message = params.message
    if message.role != Role.ROLE_USER:
        raise InvalidParamsError(message="message.role must be ROLE_USER", data={"field": "message.role"})
    record = await (_answer(edge, message, tenant) if message.task_id else _submit(edge, params, tenant))
    return record, int(record.last_event_id or 0)


# ---------------------------------------------------------------- a new task


async def _submit(edge: EdgeRuntime, params: SendMessageRequest, tenant: str) -> TaskRecord:
    message = params.message
    text, _ = _user_input(message)
    if not text.strip():
        raise InvalidParamsError(message="the message has no text", data={"field": "message.parts"})
    meta = _metadata(params)
    agent = meta.pop("agent", DEFAULT_AGENT)
    if not isinstance(agent, str) or not await edge.catalog.confirm_known(agent):
        known = [entry.name for entry in edge.catalog.agents()]
        raise InvalidParamsError(
            message=f"unknown agent {agent!r}: choose a skill id of the agent card",
            data={"code": "unknown_agent", "known": known},
        )
    try:
        budget = msgspec.convert(meta.pop("budget", {}), Budget)
    except msgspec.ValidationError as exc:
        raise InvalidParamsError(message=f"metadata.budget: {exc}", data={"field": "metadata.budget"}) from None
    if message.context_id and not is_task_id(message.context_id):
        raise InvalidParamsError(
            message=f"contextId must match {CONTEXT_ID_PATTERN}", data={"field": "message.contextId"}
        )
    a2a_meta: dict[str, Any] = {"messageId": message.message_id}
    if meta:
        a2a_meta["metadata"] = meta
    request = TaskSubmittedData(
        input=text,
        agent=agent,
        history=[],  # the context's earlier turns are added by the task service
        metadata={"a2a": a2a_meta},
        budget=budget,
        context_id=message.context_id or None,
    )
    # A repeated message (a client retrying after a lost response) is the same task, not a second one; a messageId
    # reused for a different message is the client's mistake, not a retry, and must not answer with the old task.
    key = "a2a-message-" + hashlib.sha256(message.message_id.encode()).hexdigest()[:48]
    record = await edge.tasks.submit(request, idempotency_key=key, tenant=tenant)
    same_context = not message.context_id or record.context_id == message.context_id
    if record.input != text or record.agent != agent or not same_context:
        raise InvalidParamsError(
            message=f"messageId {message.message_id!r} was already used for a different message; use a new messageId",
            data={"code": "message_id_reused", "field": "message.messageId"},
        )
    return record


def _metadata(params: SendMessageRequest) -> dict[str, Any]:
    merged: dict[str, Any] = MessageToDict(params.metadata) if params.HasField("metadata") else {}
    if params.message.HasField("metadata"):
        merged.update(MessageToDict(params.message.metadata))
    return merged


# ---------------------------------------------------------------- an answer


async def _answer(edge: EdgeRuntime, message: Message, tenant: str) -> TaskRecord:
    task_id = task_id_param(message.task_id, "message.taskId")
    record = await find_record(edge, task_id, tenant)
    if message.context_id and message.context_id != context_of(record):
        raise InvalidParamsError(
            message=f"context {message.context_id} is not the context of task {task_id} ({context_of(record)})",
            data={"field": "message.contextId"},
        )
    text, approve = _user_input(message)
    record, ask = await answers.settled(edge.bus, edge.store, record)
    if record.terminal:
        raise UnsupportedOperationError(
            message=f"Task {task_id} is in terminal state: {state_name(record.state)}; "
            f"continue the conversation with a new message in context {context_of(record)}",
            data={"taskId": task_id, "state": state_name(record.state)},
        )
    if record.state != "input-required":
        raise UnsupportedOperationError(
            message=f"Task {task_id} is {state_name(record.state)}: it takes a message only while it waits for "
            "input (TASK_STATE_INPUT_REQUIRED)",
            data={"taskId": task_id, "state": state_name(record.state)},
        )
    asked = decode_event(ask.payload) if ask is not None else None
    if isinstance(asked, TaskInputRequired) and asked.data.kind == "approval":
        decision = approve if approve is not None else _decision(text)
        return await edge.tasks.provide_input(task_id, approve=decision, tenant=tenant)
    if not text.strip():
        raise InvalidParamsError(message="the answer has no text", data={"field": "message.parts"})
    return await edge.tasks.provide_input(task_id, text=text, tenant=tenant)


def _user_input(message: Message) -> tuple[str, bool | None]:
    """A user message's text (its text parts, and data parts as JSON), and the approval decision it carries."""
    texts: list[str] = []
    approve: bool | None = None
    for part in message.parts:
        kind = part.WhichOneof("content")
        if kind == "text":
            texts.append(part.text)
        elif kind == "data":
            value = MessageToDict(part.data)
            if isinstance(value, dict) and isinstance(value.get("approve"), bool):
                approve = value["approve"]
            else:
                texts.append(json.dumps(value, ensure_ascii=False))
        else:
            raise ContentTypeNotSupportedError(
                message=f"{kind} parts are not supported: send text (text/plain) or data (application/json) parts",
                data={"part": kind},
            )
    return "\n".join(texts), approve


def _decision(text: str) -> bool:
    word = text.strip().lower().rstrip(".!")
    if word in _YES:
        return True
    if word in _NO:
        return False
    raise InvalidParamsError(
        message='this task waits for an approval: answer "yes" or "no", or send a data part {"approve": true|false}',
        data={"field": "message.parts"},
    )
