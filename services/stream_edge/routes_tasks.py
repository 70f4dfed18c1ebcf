"""`/v1/tasks`: submit, read, cancel, answer. Each route parses, calls `TaskService`, returns the record."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from sluice.errors import Unavailable
from sluice.events import TaskRecord, encode
from sluice.ids import TASK_ID_PATTERN, parse_task_id
from stream_edge.api_models import CancelBody, InputBody, TaskCreateBody
from stream_edge.auth.deps import CallerDep, owned_task
from stream_edge.deps import edge_of, json_body, only_query
from stream_edge.errors import NotAcceptable
from stream_edge.negotiation import JSON
from stream_edge.openapi import error_responses, record_response, stream_response
from stream_edge.runtime import EdgeRuntime
from stream_edge.streaming import Encoding, StreamRequest, encodings

__all__ = ["TaskIdPath", "router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])

TaskIdPath = Annotated[
    str,
    Path(
        description="The task id (`^[A-Za-z0-9_-]{8,64}$`); anything else is a 400.",
        json_schema_extra={"pattern": TASK_ID_PATTERN},
        examples=["01JD3S5Q8V0C7W6X9Y2Z3A4B5C"],
    ),
]
Edge = Annotated[EdgeRuntime, Depends(edge_of)]


def record_json(record: TaskRecord, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(encode(record), status_code=status, media_type=JSON, headers=headers)


def location_of(task_id: str) -> str:
    return f"/v1/tasks/{task_id}"


class CreatedStream(Response):
    """The hub's stream response, answered as `201 Created`: the request created the task it streams."""

    def __init__(self, stream: Response) -> None:
        self.stream = stream
        self.status_code = 201
        self.background = None
        self.raw_headers = stream.raw_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_created(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "status": 201}
            await send(message)

        await self.stream(scope, receive, send_created)


@router.post(
    "",
    summary="Submit a task",
    status_code=201,
    response_class=Response,
    dependencies=[Depends(only_query()), Depends(json_body)],
    responses={
        201: {
            **record_response("The task record; `Location` names the task"),
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/TaskRecord"}},
                **stream_response("")["content"],
            },
        },
        **error_responses(400, 401, 403, 406, 409, 413, 415, 422, 429, 503),
    },
)
async def submit_task(
    body: TaskCreateBody,
    request: Request,
    edge: Edge,
    caller: CallerDep,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="Repeat a submission safely: the same key returns the same task."),
    ] = None,
) -> Response:
    """Creates a task. With `Accept: text/event-stream` or `application/x-ndjson` the response is the task's event
    stream instead of its record (still 201, task id in `Location` and in the first event)."""
    chosen = encodings.choose(request.headers.get("accept"), plain=JSON)
    if chosen is None:
        raise NotAcceptable("not_acceptable", "this route answers application/json, text/event-stream or x-ndjson")
    encoding = chosen if isinstance(chosen, Encoding) else None
    if encoding is not None and edge.draining:
        raise Unavailable("shutting_down", "this edge is shutting down; retry on another", retry_after_s=1)
    # A tenant with its limit of streams open (CONTRACT §8) still creates the task: it gets the record, as at the
    # edge's own stream capacity.
    hold = edge.try_hold_stream(caller.tenant) if encoding is not None else None
    try:
        record = await edge.tasks.submit(body.to_wire(), idempotency_key=idempotency_key, tenant=caller.tenant)
    except BaseException:
        if hold is not None:
            hold.release()
        raise
    location = {"Location": location_of(record.id)}
    if encoding is None or hold is None:
        return record_json(edge.served(record), 201, location)
    try:
        # A task this request created (no Idempotency-Key: never an earlier task): its record names its first
        # event, task.submitted, so the stream follows the task live from there without reading the log first.
        created = idempotency_key is None and record.last_event_id is not None
        first_seq = int(record.last_event_id) if created and record.last_event_id else None
        response = await edge.hub.open(StreamRequest(record.id, encoding, first_seq=first_seq), on_end=hold.release)
    except Unavailable as exc:
        # The task exists: say so rather than fail the request. The client streams it later from Location.
        log.warning("task created but no stream opened: %s", exc.message, extra={"task_id": record.id})
        return record_json(edge.served(record), 201, location)
    response.headers.update(location)
    return CreatedStream(response)


@router.get(
    "/{task_id}",
    summary="Read a task's record",
    response_class=Response,
    dependencies=[Depends(only_query())],
    responses={200: record_response("The task record"), **error_responses(400, 401, 404, 503)},
)
async def get_task(task_id: TaskIdPath, edge: Edge, caller: CallerDep) -> Response:
    return record_json(edge.served(await owned_task(edge, caller, parse_task_id(task_id))))


@router.post(
    "/{task_id}/cancel",
    summary="Cancel a task",
    status_code=202,
    response_class=Response,
    dependencies=[Depends(only_query()), Depends(json_body)],
    responses={
        202: record_response("The record, now `canceled`; the task.canceled event follows in the stream"),
        **error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503),
    },
)
async def cancel_task(task_id: TaskIdPath, edge: Edge, caller: CallerDep, body: CancelBody | None = None) -> Response:
    """Stops a task that has not ended (409 if it has). Closing a stream never cancels a task; this does."""
    record = await edge.tasks.cancel(parse_task_id(task_id), body.reason if body else "", tenant=caller.tenant)
    return record_json(edge.served(record), 202)


@router.post(
    "/{task_id}/input",
    summary="Answer a task waiting for input",
    status_code=202,
    response_class=Response,
    dependencies=[Depends(only_query()), Depends(json_body)],
    responses={
        202: record_response("The record, now `working`; a runner continues the task"),
        **error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503),
    },
)
async def provide_input(task_id: TaskIdPath, body: InputBody, edge: Edge, caller: CallerDep) -> Response:
    """`{"input": "..."}` answers a question; `{"approve": true|false}` decides on a tool call. 409 unless the task
    is `input-required`."""
    record = await edge.tasks.provide_input(
        parse_task_id(task_id), text=body.input, approve=body.approve, tenant=caller.tenant
    )
    return record_json(edge.served(record), 202)


@router.post(
    "/{task_id}/stream-token",
    summary="A fresh stream token for a task's events",
    response_class=Response,
    dependencies=[Depends(only_query()), Depends(json_body)],
    responses={
        200: {"description": "`{task_id, stream_token, expires_in_s, events_url}`"},
        **error_responses(400, 401, 404, 503),
    },
)
async def new_stream_token(task_id: TaskIdPath, edge: Edge, caller: CallerDep) -> Response:
    """For `EventSource`, which cannot send headers: `GET events_url` needs nothing else while the token lives
    (`SLUICE_STREAM_TOKEN_TTL_S`). It reads that one task's events and is accepted nowhere else."""
    record = await owned_task(edge, caller, parse_task_id(task_id))
    token = edge.tokens.issue(record.id, record.tenant)
    events_url = f"{location_of(record.id)}/events?access_token={token}"
    body = {"task_id": record.id, "stream_token": token, "expires_in_s": edge.tokens.ttl_s, "events_url": events_url}
    return Response(encode(body), media_type=JSON, headers={"Cache-Control": "no-store"})
