"""The A2A request handler: every A2A method as a call on `TaskService` and a read of the task's event log.

The SDK's default handler keeps tasks in its own store and queues; Sluice's truth is the KV record and the event
log, shared by every edge replica, so this handler implements `RequestHandler` directly and lets the SDK do only
what it is good at: parsing, validation, the JSON-RPC / HTTP+JSON wire formats and their error codes.

Streams (SendStreamingMessage, SubscribeToTask) are built the same way everywhere: fold the stored events up to a
start position into a `TaskProjection`, send the Task snapshot (unless resuming), then follow the log from that
position and send what each event becomes, until a terminal or interrupted state. Because every position is an
event id, a stream started on any replica, at any time, and a stream resumed with `Last-Event-ID`, are exact.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator

import msgspec
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.request_handler import RequestHandler, validate_request_params
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
    TaskStatus,
)
from a2a.utils.errors import (
    ExtendedAgentCardNotConfiguredError,
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    UnsupportedOperationError,
)
from a2a.utils.task import apply_history_length, validate_history_length, validate_page_size
from google.protobuf.json_format import MessageToDict

from sluice.bus import Bus
from sluice.errors import Conflict, InvalidInput, Unauthenticated, Unavailable
from sluice.eventlog import LogEntry, follow_log, read_log
from sluice.events import TaskRecord
from sluice.ids import parse_event_id
from stream_edge import logview
from stream_edge.a2a.errors import translated, translated_stream
from stream_edge.a2a.intake import accept, find_record, state_name, task_id_param
from stream_edge.a2a.listing import context_of, page_of
from stream_edge.a2a.mapping import A2A_STATE, REPLAY_EXTENSION, StreamEvent, TaskProjection
from stream_edge.auth.caller import CALLER_STATE_KEY, Caller
from stream_edge.runtime import EdgeRuntime

__all__ = ["EDGE_STATE_KEY", "SluiceRequestHandler"]

log = logging.getLogger(__name__)

# Where the route's context builder puts the edge runtime in `ServerCallContext.state`.
EDGE_STATE_KEY = "sluice.edge"


def _apply(projection: TaskProjection, entry: LogEntry) -> StreamEvent | None:
    try:
        event = entry.decode()
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        log.warning("skipping an event A2A cannot read (%s): %s", entry.type, exc, extra={"seq": entry.seq})
        projection.seq = entry.seq
        return None
    return projection.apply(entry.seq, event)


class SluiceRequestHandler(RequestHandler):
    """Serves A2A over Sluice tasks. Stateless: any replica serves any task."""

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _edge(context: ServerCallContext) -> EdgeRuntime:
        edge = context.state.get(EDGE_STATE_KEY)
        if not isinstance(edge, EdgeRuntime):
            raise Unavailable("starting", "the edge is starting or stopping")
        return edge

    @staticmethod
    def _tenant(context: ServerCallContext) -> str:
        """The caller's tenant (from its credentials). A request that names another tenant (the A2A 1.0 `tenant`
        field) is refused: the tenant is who the caller is, not something it may choose."""
        caller = context.state.get(CALLER_STATE_KEY)
        if not isinstance(caller, Caller):
            raise Unauthenticated("unauthenticated", "this endpoint needs credentials")
        if context.tenant and context.tenant != caller.tenant:
            raise InvalidParamsError(
                message="the request names a tenant other than the caller's", data={"field": "tenant"}
            )
        return caller.tenant

    @staticmethod
    async def _fold(bus: Bus, projection: TaskProjection, *, upto: int | None = None) -> None:
        """Folds the stored events (those with id <= `upto`, or all) into the projection."""
        async for entry in read_log(bus, projection.task_id):
            if upto is not None and entry.seq > upto:
                break
            _apply(projection, entry)
        if upto is not None:
            projection.seq = max(projection.seq, upto)

    async def _task(self, edge: EdgeRuntime, record: TaskRecord) -> Task:
        projection = TaskProjection(task_id=record.id, context_id=record.context_id)
        await self._fold(edge.bus, projection)
        return projection.snapshot(state=record.state)

    async def _stream(
        self, edge: EdgeRuntime, record: TaskRecord, *, start: int | None, snapshot: bool
    ) -> AsyncGenerator[StreamEvent, None]:
        """The A2A stream of a task from `start` (None: from what exists now), ending at a final state."""
        projection = TaskProjection(task_id=record.id, context_id=record.context_id)
        await self._fold(edge.bus, projection, upto=start)
        position = projection.seq
        if snapshot:
            yield projection.snapshot()
        if projection.final and await self._nothing_after(edge.bus, record.id, position):
            return
        async for entry in follow_log(edge.bus, record.id, after=position):
            event = _apply(projection, entry)
            if event is not None:
                yield event
            if projection.final:
                return

    @staticmethod
    async def _nothing_after(bus: Bus, task_id: str, position: int) -> bool:
        async for _ in read_log(bus, task_id, after=position, batch=1):
            return False
        return True

    # ------------------------------------------------------------------ messages

    @validate_request_params
    @translated
    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Task | Message:
        edge = self._edge(context)
        record, start = await accept(edge, params, self._tenant(context))
        if params.configuration.return_immediately:
            task = await self._task(edge, record)
        else:
            projection = TaskProjection(task_id=record.id, context_id=record.context_id)
            async for entry in follow_log(edge.bus, record.id):
                _apply(projection, entry)
                if entry.seq >= start and projection.final:
                    break
            task = projection.snapshot()
        return apply_history_length(task, params.configuration)

    @validate_request_params
    @translated_stream
    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[StreamEvent, None]:
        edge = self._edge(context)
        tenant = self._tenant(context)
        hold = edge.hold_stream(tenant)  # a tenant at its limit of open streams creates no task
        try:
            record, start = await accept(edge, params, tenant)
            first = True
            async for event in self._stream(edge, record, start=start, snapshot=True):
                if first and isinstance(event, Task):
                    event = apply_history_length(event, params.configuration)
                first = False
                yield event
        finally:
            hold.release()

    # ------------------------------------------------------------------ tasks

    @validate_request_params
    @translated
    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        validate_history_length(params)
        edge = self._edge(context)
        record = await find_record(edge, task_id_param(params.id), self._tenant(context))
        return apply_history_length(await self._task(edge, record), params)

    @validate_request_params
    @translated
    async def on_list_tasks(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        validate_history_length(params)
        if params.HasField("page_size"):
            validate_page_size(params.page_size)
        edge = self._edge(context)
        page = page_of(await edge.store.tenant_records(self._tenant(context)), params)
        wants_log = params.include_artifacts or (params.HasField("history_length") and params.history_length > 0)
        tasks = []
        for record in page.records:
            if wants_log:
                task = apply_history_length(await self._task(edge, record), params)
                if not params.include_artifacts:
                    task.ClearField("artifacts")
            else:
                task = _record_task(record)
            tasks.append(task)
        return ListTasksResponse(
            tasks=tasks, next_page_token=page.next_page_token, page_size=page.page_size, total_size=page.total_size
        )

    @validate_request_params
    @translated
    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        edge = self._edge(context)
        tenant = self._tenant(context)
        task_id = task_id_param(params.id)
        record = await find_record(edge, task_id, tenant)
        reason = MessageToDict(params.metadata).get("reason") if params.HasField("metadata") else None
        if not record.terminal:
            try:
                record = await edge.tasks.cancel(
                    task_id, reason if isinstance(reason, str) else "canceled by A2A client", tenant=tenant
                )
                return await self._task(edge, record)
            except Conflict:
                record = await find_record(edge, task_id, tenant)
                if record.state == "canceled":  # another client's cancel won the race: the outcome asked for
                    return await self._task(edge, record)
        raise TaskNotCancelableError(
            message=f"Task {task_id} is in terminal state: {state_name(record.state)}",
            data={"taskId": task_id, "state": state_name(record.state)},
        )

    @validate_request_params
    @translated_stream
    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[StreamEvent, None]:
        edge = self._edge(context)
        task_id = task_id_param(params.id)
        record = await find_record(edge, task_id, self._tenant(context))
        resume = _last_event_id(context)
        if resume is None:
            if record.terminal:
                raise UnsupportedOperationError(
                    message=f"Task {task_id} is in terminal state: {state_name(record.state)}",
                    data={"taskId": task_id, "state": state_name(record.state)},
                )
            stream = self._stream(edge, record, start=None, snapshot=True)
        else:
            await _check_not_future(edge, record, resume)
            if record.terminal and await self._nothing_after(edge.bus, task_id, resume):
                raise UnsupportedOperationError(
                    message=f"Task {task_id} is in terminal state: {state_name(record.state)}, and its stream has "
                    f"nothing after event {resume}",
                    data={"taskId": task_id, "state": state_name(record.state), "lastEventId": str(resume)},
                )
            stream = self._stream(edge, record, start=resume, snapshot=False)
        hold = edge.hold_stream(record.tenant)  # counted among the tenant's open streams while it lasts
        try:
            async for event in stream:
                yield event
        finally:
            hold.release()

    # ------------------------------------------------------------------ not offered

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        raise PushNotificationNotSupportedError

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        raise PushNotificationNotSupportedError

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        raise ExtendedAgentCardNotConfiguredError


def _record_task(record: TaskRecord) -> Task:
    """A task as its record alone tells it (ListTasks without history or artifacts: no log read)."""
    status = TaskStatus(state=A2A_STATE[record.state])
    status.timestamp.FromJsonString(record.updated_at)
    task = Task(id=record.id, context_id=context_of(record), status=status)
    task.metadata.update({"agent": record.agent, REPLAY_EXTENSION: {"eventId": record.last_event_id or "0"}})
    return task


def _last_event_id(context: ServerCallContext) -> int | None:
    headers = context.state.get("headers") or {}
    raw = headers.get("last-event-id") or headers.get("Last-Event-ID")
    if raw is None or not str(raw).strip():
        return None
    try:
        return parse_event_id(str(raw).strip(), field="Last-Event-ID")
    except InvalidInput as exc:
        raise InvalidParamsError(message=exc.message, data={"header": "Last-Event-ID"}) from None


async def _check_not_future(edge: EdgeRuntime, record: TaskRecord, after: int) -> None:
    """Resuming after an id no event has yet would silently skip the events written in between."""
    if record.last_event_id is not None and after <= int(record.last_event_id):
        return
    end = await logview.log_end(edge.bus)
    if after > end:
        raise InvalidParamsError(
            message=f"event id {after} does not exist yet (the log ends at {end}); resume from an id you received",
            data={"header": "Last-Event-ID"},
        )
