"""Conversations (CONTRACT §10): which tasks share a context, and the history a new task of that context gets.

The index is the KV bucket `sluice-contexts`: one key per context (its id), holding the context's task ids oldest
first, changed by compare-and-set. A follow-up message reads that one key — never a scan of the task bucket.

The history comes from the logs, recursively: the context's latest earlier task already carries everything before
it in its `task.submitted` history, so the new task's history is that history + its input + its answer (the
`output` of its `task.completed`). A turn that has no answer — failed, canceled, or still running — keeps its
input and says, as the assistant's turn, that its (partial) output is left out. Two direct gets per follow-up,
however long the conversation; the newest `MAX_HISTORY` messages are kept.

Tenants: a context belongs to the tenant of its first task. Context ids are global (an AG-UI `threadId` or an AI
SDK chat id is chosen by the client, and must name one conversation), so another tenant's context id is refused
as `context_not_found` — for reading it, and for adding a task to it — and nothing is written.
"""

from __future__ import annotations

import functools

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from sluice import limits, subjects
from sluice.bus import Bus
from sluice.clock import now_iso
from sluice.errors import Conflict, NotFound, Unavailable
from sluice.events import (
    ContextRecord,
    HistoryMessage,
    TaskCompleted,
    TaskRecord,
    TaskSubmitted,
    TaskSubmittedData,
    decode_event,
    encode,
)
from sluice.ids import DEFAULT_TENANT, new_task_id, parse_context_id
from sluice.records import TaskStore, patiently
from stream_edge import logview

__all__ = ["MAX_CONTEXT_TASKS", "MAX_HISTORY", "ContextIndex", "ContextView", "Conversations", "unanswered_note"]

MAX_HISTORY = 200  # messages of history a task gets (the newest); the log keeps every turn
_STORE = limits.store_named(subjects.CONTEXTS_BUCKET)
MAX_CONTEXT_TASKS = 10_000  # tasks one context may hold: a conversation, not a queue
_CAS_ATTEMPTS = 20
_context_decoder = msgspec.json.Decoder(ContextRecord)


class ContextView(msgspec.Struct, kw_only=True):
    """`GET /v1/contexts/{id}`: the conversation and its task records, oldest first."""

    id: str
    created_at: str
    updated_at: str
    tasks: list[TaskRecord]


def _foreign(context_id: str) -> NotFound:
    return NotFound("context_not_found", f"no context {context_id}")


def _owner(tenant: str | None) -> str:
    """No tenant named is the default tenant (every caller of an edge without authentication)."""
    return tenant or DEFAULT_TENANT


def unanswered_note(record: TaskRecord | None) -> str:
    """What the history says for a turn without an answer."""
    if record is None or not record.terminal:
        return "[no answer: this turn was still running when the conversation went on]"
    if record.state == "failed" and record.error is not None:
        why = f"it failed ({record.error.code}: {record.error.message})"
    else:
        why = "it was canceled" if record.state == "canceled" else f"it ended {record.state}"
    return f"[no answer: {why}; its partial output is left out]"


class ContextIndex:
    """The context → tasks index. One per process; safe to share."""

    def __init__(self, kv: KeyValue, *, deadline_s: float = 30.0) -> None:
        self.kv = kv
        self.deadline_s = deadline_s

    async def find(self, context_id: str, tenant: str | None = None) -> ContextRecord | None:
        """The context, None if there is none; another tenant's is `NotFound`."""
        found = await self._read(parse_context_id(context_id))
        if found is None:
            return None
        if _owner(found[0].tenant) != _owner(tenant):
            raise _foreign(context_id)
        return found[0]

    async def add(self, context_id: str, task_id: str, tenant: str | None = None) -> ContextRecord:
        """Appends a task to its context (creating the context); a task already listed is not added twice."""
        key = parse_context_id(context_id)
        for _ in range(_CAS_ATTEMPTS):
            found = await self._read(key)
            now = now_iso()
            if found is None:
                record = ContextRecord(id=context_id, created_at=now, updated_at=now, tasks=[task_id], tenant=tenant)
                write = functools.partial(self.kv.create, key, encode(record))
            else:
                current, revision = found
                if _owner(current.tenant) != _owner(tenant):
                    raise _foreign(context_id)
                if task_id in current.tasks:
                    return current
                if len(current.tasks) >= MAX_CONTEXT_TASKS:
                    full = f"context {context_id} holds {MAX_CONTEXT_TASKS} tasks; start a new one"
                    raise Conflict("context_full", full)
                record = msgspec.structs.replace(current, tasks=[*current.tasks, task_id], updated_at=now)
                write = functools.partial(self.kv.update, key, encode(record), last=revision)
            try:
                await patiently(f"adding task {task_id} to context {context_id}", write, self.deadline_s, store=_STORE)
                return record
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # another task of this context got there first: read again
        raise Unavailable("context_contention", f"context {context_id} changed {_CAS_ATTEMPTS} times under us")

    async def _read(self, key: str) -> tuple[ContextRecord, int] | None:
        try:
            entry = await patiently(f"reading context {key}", lambda: self.kv.get(key), self.deadline_s)
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        return _context_decoder.decode(entry.value), entry.revision


class Conversations:
    """Contexts as the task commands use them: a submission gets its context and history, then joins it."""

    def __init__(self, bus: Bus, store: TaskStore, index: ContextIndex) -> None:
        self.bus = bus
        self.store = store
        self.index = index

    async def prepare(self, request: TaskSubmittedData, tenant: str | None = None) -> TaskSubmittedData:
        """The submission with its context id (a new context when it names none) and the context's history
        ahead of any history the caller sent."""
        if request.context_id is None:
            return msgspec.structs.replace(request, context_id=new_task_id())
        context = await self.index.find(request.context_id, tenant)
        if context is None or not context.tasks:
            return request
        earlier = await self.history_after(context.tasks[-1])
        history = [*earlier, *request.history][-MAX_HISTORY:]
        return msgspec.structs.replace(request, history=history)

    async def join(self, request: TaskSubmittedData, task_id: str, tenant: str | None = None) -> None:
        if request.context_id is not None:
            await self.index.add(request.context_id, task_id, tenant)

    async def history_after(self, task_id: str) -> list[HistoryMessage]:
        """The conversation up to and including one task: its own history, its input, and its answer."""
        submitted = await logview.last_of_type(self.bus, task_id, "task.submitted")
        if submitted is None:
            return []  # listed but never submitted (its request died): nothing was said
        first = decode_event(submitted.payload)
        assert isinstance(first, TaskSubmitted)
        turns = [*first.data.history, HistoryMessage(role="user", content=first.data.input)]
        completed = await logview.last_of_type(self.bus, task_id, "task.completed")
        if completed is not None:
            done = decode_event(completed.payload)
            assert isinstance(done, TaskCompleted)
            turns.append(HistoryMessage(role="assistant", content=done.data.output))
        else:
            turns.append(HistoryMessage(role="assistant", content=unanswered_note(await self.store.find(task_id))))
        return turns

    async def tasks(self, context_id: str, tenant: str | None = None) -> tuple[ContextRecord, list[TaskRecord]]:
        """The context and its task records, oldest first (`NotFound` for a context this tenant does not have)."""
        context = await self.index.find(context_id, tenant)
        if context is None:
            raise _foreign(context_id)
        records = [r for r in [await self.store.find(t) for t in context.tasks] if r is not None]
        return context, records

    async def latest(self, context_id: str, tenant: str | None = None) -> TaskRecord | None:
        """The context's most recent task (None for an unknown context, or one whose task is gone)."""
        context = await self.index.find(context_id, tenant)
        if context is None:
            return None
        for task_id in reversed(context.tasks):
            record = await self.store.find(task_id)
            if record is not None:
                return record
        return None
