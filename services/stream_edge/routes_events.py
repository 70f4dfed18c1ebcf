"""`GET /v1/tasks/{id}/events` (CONTRACT §5): parse the request into one `StreamRequest`, check it, open it.

Every check happens before the first byte, so a bad request is a real HTTP error, never a broken stream:
bad id / cursor / parameter → 400, unknown task → 404, no acceptable format → 406, at capacity or shutting
down → 503; no credentials → 401 (a stream token in `?access_token=` counts, for its own task only), another
tenant's task → 404. A cursor past the end of the event log (an id no event has yet) is a 400: following from
there would silently skip the events written in between.

    parse      `parse_stream_request`: id, format (`encodings.choose`, the one place a format is decided), cursor
    find       the task's record, if it is the caller's tenant's (`owned_task`: 404 otherwise)
    admit      `admit_stream`: may this caller read this task's stream, now? — the place where checks on the
               caller (credentials, tenant, per-tenant stream limits) run, before anything is streamed
    open       `open_stream`: the cursor checks that need the record, then the hub

In the edge this route is answered by `events_asgi.EventsRoute` (plain ASGI, inside every middleware, ahead of
FastAPI's routing) through `events_response`; the FastAPI route below describes it in the OpenAPI document and
calls the same function. So FastAPI dependencies added to the route below do not run in the edge: a check on the
caller belongs in `admit_stream` (it gets the Starlette request, scope and state included) or in a middleware.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from opentelemetry import trace
from starlette.responses import Response

from sluice.errors import InvalidInput, Unavailable
from sluice.events import TaskRecord
from sluice.ids import parse_event_id, parse_task_id
from sluice.telemetry import exporting
from sluice.tracing import link_current_span
from stream_edge import logview
from stream_edge.auth.deps import caller_of_connection, not_found, owned_task, owns
from stream_edge.deps import edge_of, only_query
from stream_edge.errors import NotAcceptable
from stream_edge.limits import StreamHold
from stream_edge.openapi import error_responses, stream_response
from stream_edge.routes_tasks import TaskIdPath
from stream_edge.runtime import EdgeRuntime, StreamFormat
from stream_edge.streaming import StreamRequest, encodings

__all__ = [
    "QUERY",
    "EventsQuery",
    "admit_stream",
    "events_response",
    "open_stream",
    "parse_stream_request",
    "past_the_end",
    "router",
    "start_position",
]

router = APIRouter(prefix="/v1/tasks", tags=["events"])

QUERY = ("format", "after", "follow", "snapshot")


def parse_stream_request(
    task_id: str,
    *,
    accept: str | None,
    fmt: StreamFormat | None,
    last_event_id: str | None,
    after: str | None,
    follow: bool,
) -> StreamRequest:
    """Everything the client asked for, validated, in one value (the snapshot is added once the record is read)."""
    encoding = encodings.choose(accept, override=fmt)
    if not isinstance(encoding, encodings.Encoding):
        raise NotAcceptable("not_acceptable", "event streams are text/event-stream or application/x-ndjson")
    return StreamRequest(parse_task_id(task_id), encoding, start_position(last_event_id, after), follow)


def start_position(last_event_id: str | None, after: str | None) -> int:
    """`Last-Event-ID` wins over `?after=`; neither means from the first event (0). An empty header is absent."""
    if last_event_id is not None and last_event_id.strip():
        return parse_event_id(last_event_id.strip(), field="Last-Event-ID")
    if after is not None:
        return parse_event_id(after, field="after")
    return 0


async def check_not_future(edge: EdgeRuntime, record: TaskRecord, after: int) -> None:
    if after == 0 or (record.last_event_id is not None and after <= int(record.last_event_id)):
        return
    end = await logview.log_end(edge.bus)
    if after > end:
        raise InvalidInput(
            "event_id_from_future",
            f"event id {after} does not exist yet (the event log ends at {end}); resume from an id you received",
        )


async def _link_to_task_trace(edge: EdgeRuntime, task_id: str) -> None:
    """The connection's span (its own trace) links to the task's trace, found in the task.submitted headers.

    Only when spans are exported (one direct get per connection), and never at the cost of the stream.
    """
    trace.get_current_span().set_attribute("sluice.task_id", task_id)
    if not exporting():
        return
    try:
        submitted = await logview.last_of_type(edge.bus, task_id, "task.submitted")
    except Unavailable:
        return
    link_current_span(submitted.headers if submitted else None)


@router.get(
    "/{task_id}/events",
    summary="Stream a task's events (SSE or NDJSON)",
    response_class=Response,
    dependencies=[Depends(only_query(*QUERY))],
    responses={
        200: stream_response("The task's events, replayed from the start position, then live"),
        **error_responses(400, 401, 404, 406, 429, 503),
    },
)
async def task_events(
    task_id: TaskIdPath,
    request: Request,
    edge: Annotated[EdgeRuntime, Depends(edge_of)],
    fmt: Annotated[
        Literal["sse", "ndjson"] | None,
        Query(alias="format", description="Overrides `Accept`: `sse` or `ndjson`."),
    ] = None,
    after: Annotated[
        str | None, Query(description="Start after this event id (ignored when `Last-Event-ID` is sent).")
    ] = None,
    follow: Annotated[bool, Query(description="`false`: send what exists now, then end.")] = True,
    snapshot: Annotated[
        bool, Query(description="Start with a `task.snapshot` of the record, then live events only.")
    ] = False,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="Resume after the last event id you received.")
    ] = None,
) -> Response:
    return await events_response(edge, request, task_id, EventsQuery(fmt, after, follow, snapshot, last_event_id))


@dataclass(frozen=True, slots=True)
class EventsQuery:
    """The route's parameters, typed (by FastAPI, or by `query_of` on the raw path)."""

    fmt: StreamFormat | None = None
    after: str | None = None
    follow: bool = True
    snapshot: bool = False
    last_event_id: str | None = None


async def events_response(edge: EdgeRuntime, request: Request, task_id: str, query: EventsQuery) -> Response:
    """Parse → find → admit → open: the one path from a request to its stream, whichever way it was routed."""
    wanted = parse_stream_request(
        task_id,
        accept=request.headers.get("accept"),
        fmt=query.fmt,
        last_event_id=query.last_event_id,
        after=query.after,
        follow=query.follow,
    )
    record = await owned_task(edge, caller_of_connection(request), wanted.task_id)
    await admit_stream(edge, request, record)
    if query.snapshot:
        wanted = replace(wanted, snapshot=record)
    return await open_stream(edge, wanted, record)


async def admit_stream(edge: EdgeRuntime, request: Request, record: TaskRecord) -> None:
    """May this caller stream this task now? Raises the refusal (401/404/429) before anything is streamed.

    The record was found for the caller's tenant (`owned_task`); this says so again on the one path every stream
    takes (native, AI SDK, AG-UI), so a route that forgot to ask still cannot stream another tenant's task.
    Checks on what the caller may open right now belong here too; the tenant's count of open streams is taken in
    `open_stream`, where the stream's end can give it back."""
    if not owns(caller_of_connection(request), record):
        raise not_found(record.id)


async def open_stream(
    edge: EdgeRuntime, wanted: StreamRequest, record: TaskRecord, hold: StreamHold | None = None
) -> Response:
    """The checks that need the record, then the hub's stream (503 when it has no room or is shutting down).

    The stream counts among its tenant's open streams until it ends (429 `tenant_limit` when the tenant has its
    limit open, CONTRACT §8): `hold`, taken by a route that had to know before it created the task, or one taken
    here."""
    try:
        await check_not_future(edge, record, wanted.after)
        await _link_to_task_trace(edge, wanted.task_id)
        if edge.draining:
            raise Unavailable(
                "shutting_down", "this edge is shutting down; reconnect with Last-Event-ID", retry_after_s=1
            )
        if past_the_end(record, wanted.after):
            # Nothing of this task can come after the cursor: send what exists (nothing) and end.
            wanted = replace(wanted, follow=False)
        hold = hold or edge.hold_stream(record.tenant)
    except BaseException:
        if hold is not None:
            hold.release()
        raise
    return await edge.hub.open(wanted, on_end=hold.release)


def past_the_end(record: TaskRecord, after: int) -> bool:
    """A finished task, and a cursor beyond the last event its record names (its terminal event, once noted).

    Event ids are shared by all tasks, so such a cursor can exist (another task's event); following from it would
    keep the stream open for ever. A cursor exactly at the terminal event ends at once in the hub already."""
    return record.terminal and record.last_event_id is not None and after > int(record.last_event_id)
