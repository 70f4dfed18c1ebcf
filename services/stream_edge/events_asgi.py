"""`GET /v1/tasks/{id}/events` served as plain ASGI, and its long body outside the middleware: an idle stream's memory.

An event stream lives for minutes or hours, and every frame between the server and the response stays alive with
it: FastAPI's request handler, dependency solving and exit stacks, and each middleware's frame and `send` wrapper
(tracing, metrics, CORS, error handling, body limit...) — about 14 KB per open stream, several times the engine's
own cost. Two pieces take them out of the stream's life without taking anything out of its opening:

    EventsRoute       innermost middleware, ahead of FastAPI's routing: answers this route through the same
                      `routes_events.events_response` the FastAPI route uses, with the same errors; everything
                      else goes on to FastAPI
    DetachedStreams   outermost, around the whole app: when EventsRoute has opened a stream, the response head has
                      gone out through every middleware (CORS headers, the metrics count, the server span), and the
                      middleware stack has returned; the body then runs here, on the server's own send/receive

So every check on the request (any caller check included) runs before a stream opens, exactly as for any route;
only the long body skips the middleware. The FastAPI route stays: it is what the OpenAPI document describes, and
what answers if these are not installed.
"""

from __future__ import annotations

import logging
import re

import nats.errors
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from sluice.errors import InvalidInput, ProvisioningError, SluiceError, Unavailable
from stream_edge.deps import only_query, runtime
from stream_edge.errors import sluice_error_response
from stream_edge.routes_events import QUERY, EventsQuery, events_response, router
from stream_edge.streaming.response import EventStreamResponse

__all__ = ["DetachedStreams", "EventsRoute", "query_of"]

log = logging.getLogger(__name__)

_PATH = re.compile(r"/v1/tasks/([^/]+)/events")
ROUTE_PATH = "/v1/tasks/{task_id}/events"
_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})  # what FastAPI (pydantic) reads as a bool
_FALSE = frozenset({"false", "0", "no", "off", "f", "n"})
_FORMATS = ("sse", "ndjson")
_check_query = only_query(*QUERY)
_ROUTE: BaseRoute | None = next((r for r in router.routes if getattr(r, "path", None) == ROUTE_PATH), None)
_SLOT = "sluice.detached_stream"


def _events_task(scope: Scope) -> str | None:
    if scope["type"] != "http" or scope["method"] != "GET":
        return None
    match = _PATH.fullmatch(scope["path"])
    return match.group(1) if match else None


class _Slot:
    """Where EventsRoute leaves an opened stream for DetachedStreams."""

    __slots__ = ("response",)

    def __init__(self) -> None:
        self.response: EventStreamResponse | None = None


class DetachedStreams:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _events_task(scope) is None:
            await self.app(scope, receive, send)
            return
        slot = scope[_SLOT] = _Slot()
        try:
            await self.app(scope, receive, send)
        except BaseException:
            if slot.response is not None:
                slot.response.abandon()
            raise
        response, slot.response = slot.response, None
        if response is not None:
            _forget_request(scope)
            await response.run_body(receive, send)


_KEPT = frozenset({"type", "asgi", "http_version", "method", "scheme", "path", "root_path"})


def _forget_request(scope: Scope) -> None:
    """The head has gone out and every check has run: what the request brought (its headers, the caller and the
    rest of `state`, the route, the app) is no longer needed, but the server keeps the scope for as long as the
    stream lasts. Dropping it saves about a kilobyte per idle stream."""
    for key in [k for k in scope if k not in _KEPT]:
        del scope[key]


def _flag(request: Request, name: str, default: bool) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise InvalidInput("invalid_request", f"query.{name}: Input should be a valid boolean")


def query_of(request: Request) -> EventsQuery:
    """The route's parameters from the raw request, validated as FastAPI validates them."""
    fmt = request.query_params.get("format")
    if fmt is not None and fmt not in _FORMATS:
        raise InvalidInput("invalid_request", "query.format: Input should be 'sse' or 'ndjson'")
    return EventsQuery(
        fmt="sse" if fmt == "sse" else "ndjson" if fmt == "ndjson" else None,
        after=request.query_params.get("after"),
        follow=_flag(request, "follow", True),
        snapshot=_flag(request, "snapshot", False),
        last_event_id=request.headers.get("last-event-id"),
    )


class EventsRoute:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task_id = _events_task(scope)
        if task_id is None:
            await self.app(scope, receive, send)
            return
        scope["path_params"] = {"task_id": task_id}
        if _ROUTE is not None:
            scope["route"] = _ROUTE  # the metrics label, as FastAPI's routing sets it
        response = await self._open(scope, task_id)
        slot = scope.get(_SLOT)
        if isinstance(response, EventStreamResponse) and isinstance(slot, _Slot):
            await response.start(send)  # the head through every middleware; the body runs in DetachedStreams
            slot.response = response
            return
        await response(scope, receive, send)

    async def _open(self, scope: Scope, task_id: str) -> Response:
        """The stream's response, or the error response FastAPI's handlers would give (errors.py)."""
        request = Request(scope)
        try:
            await _check_query(request)
            return await events_response(runtime(request), request, task_id, query_of(request))
        except SluiceError as exc:
            if isinstance(exc, Unavailable | ProvisioningError):
                log.warning("GET %s: %s", scope["path"], exc)
            return sluice_error_response(exc)
        except nats.errors.Error as exc:
            log.warning("GET %s: NATS error %s", scope["path"], type(exc).__name__)
            return sluice_error_response(Unavailable("nats_unavailable", f"NATS is unavailable ({type(exc).__name__})"))
        except TimeoutError:
            log.warning("GET %s: timed out", scope["path"])
            return sluice_error_response(Unavailable("timeout", "a dependency did not answer in time; retry"))
