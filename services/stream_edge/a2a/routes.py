"""The A2A routes of the edge: the agent card, the JSON-RPC binding (`POST /a2a`) and the HTTP+JSON binding
(under `/a2a/rest`), 1.0 with the SDK's 0.3 compatibility on the same URLs.

The SDK's dispatchers do the wire work — parsing, `A2A-Version` checks, JSON-RPC envelopes, error codes, SSE.
Two small subclasses add what Sluice adds: every SSE event gets an `id:` line with the Sluice event id it came
from (read from the event's metadata, where `mapping` put it), which makes a standard `Last-Event-ID` reconnect
exact. The edge runtime reaches the handler through the call context (`EDGE_STATE_KEY`). The 1.0 HTTP+JSON
routes are also served as `/a2a/rest/{tenant}/...`, the tenant held against the caller's (`tenancy`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.jsonrpc_models import InternalError as JSONRPCInternalError
from a2a.server.jsonrpc_models import JSONRPCError
from a2a.server.request_handlers.response_helpers import build_error_response
from a2a.server.routes.common import DefaultServerCallContextBuilder, create_event_source_response
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.server.routes.rest_dispatcher import RestDispatcher
from a2a.server.routes.rest_routes import create_rest_routes
from a2a.utils import json_utils
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, VERSION_HEADER
from a2a.utils.error_handlers import build_rest_error_payload
from a2a.utils.errors import A2AError, InvalidRequestError
from fastapi import APIRouter
from sse_starlette.event import ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from stream_edge.a2a.card import JSONRPC_PATH, REST_PREFIX, card_document
from stream_edge.a2a.handler import EDGE_STATE_KEY, SluiceRequestHandler
from stream_edge.a2a.mapping import event_id_of
from stream_edge.a2a.tenancy import TENANT_PATH_SEGMENT, tenant_checked
from stream_edge.auth.caller import CALLER_STATE_KEY
from stream_edge.deps import runtime
from stream_edge.settings import EdgeSettings

__all__ = ["a2a_routes", "router"]

log = logging.getLogger(__name__)
_LEGACY_VERSIONS = frozenset({"0.3", "0.3.0"})
_LEGACY_REST_PREFIX = REST_PREFIX + "/v1/"

_STREAM_KINDS = ("task", "statusUpdate", "artifactUpdate", "message")
# Streams end promptly on shutdown: the hub's grace covers the native streams, this the A2A ones.
_SHUTDOWN_GRACE_S = 2.0


def _event_id(response: dict[str, Any] | None) -> str | None:
    """The Sluice event id of a serialized StreamResponse (`{"statusUpdate": {..., "metadata": ...}}`)."""
    if not response:
        return None
    for kind in _STREAM_KINDS:
        body = response.get(kind)
        if isinstance(body, dict):
            return event_id_of(body.get("metadata"))
    return None


class _ContextBuilder(DefaultServerCallContextBuilder):
    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state[EDGE_STATE_KEY] = getattr(request.app.state, "edge", None)
        context.state[CALLER_STATE_KEY] = request.scope.get("state", {}).get(CALLER_STATE_KEY)
        # A browser's EventSource cannot send headers: it may name the version in the query instead.
        headers = context.state.get("headers")
        version = request.query_params.get(VERSION_HEADER)
        if isinstance(headers, dict) and version and VERSION_HEADER.lower() not in headers:
            headers[VERSION_HEADER.lower()] = version
        return context


class _JsonRpc(JsonRpcDispatcher):
    """The SDK's JSON-RPC dispatcher, with an `id:` line on each SSE event."""

    def _create_response(
        self, context: ServerCallContext, handler_result: AsyncGenerator[dict[str, Any]] | dict[str, Any]
    ) -> Response:
        if not isinstance(handler_result, AsyncGenerator):
            return super()._create_response(context, handler_result)
        request_id = context.state.get("request_id")

        async def frames(stream: AsyncGenerator[dict[str, Any]]) -> AsyncIterator[ServerSentEvent]:
            try:
                async for item in stream:
                    if "error" in item:
                        yield ServerSentEvent(data=json_utils.dumps(item), event="error")
                    else:
                        yield ServerSentEvent(data=json_utils.dumps(item), id=_event_id(item.get("result")))
            except Exception as exc:  # an error mid-stream becomes the stream's last event, as in the SDK
                log.exception("error during an A2A JSON-RPC stream")
                error: A2AError | JSONRPCError = (
                    exc if isinstance(exc, A2AError | JSONRPCError) else JSONRPCInternalError(message=str(exc))
                )
                yield ServerSentEvent(data=json_utils.dumps(build_error_response(request_id, error)), event="error")

        return create_event_source_response(frames(handler_result), shutdown_grace_period=_SHUTDOWN_GRACE_S)


class _Rest(RestDispatcher):
    """The SDK's HTTP+JSON dispatcher, with an `id:` line on each SSE event."""

    async def _handle_streaming(  # type: ignore[override]
        self, request: Request, handler_func: Callable[[ServerCallContext], AsyncIterator[Any]]
    ) -> Response:
        try:
            await request.body()  # read before the stream starts (Starlette reads a body once)
        except (ValueError, RuntimeError, OSError) as exc:
            raise InvalidRequestError(message=f"could not read the request body: {exc}") from exc
        context = self._build_call_context(request)
        stream = aiter(handler_func(context))
        try:
            first = await anext(stream)  # setup errors become real HTTP errors, not broken streams
        except StopAsyncIteration:
            return create_event_source_response(iter([]), shutdown_grace_period=_SHUTDOWN_GRACE_S)

        async def frames() -> AsyncIterator[ServerSentEvent]:
            yield ServerSentEvent(data=json_utils.dumps(first), id=_event_id(first))
            try:
                async for item in stream:
                    yield ServerSentEvent(data=json_utils.dumps(item), id=_event_id(item))
            except Exception as exc:  # an error mid-stream becomes the stream's last event, as in the SDK
                log.exception("error during an A2A HTTP+JSON stream")
                yield ServerSentEvent(data=json_utils.dumps(build_rest_error_payload(exc)), event="error")

        return create_event_source_response(frames(), shutdown_grace_period=_SHUTDOWN_GRACE_S)


async def _card(request: Request) -> Response:
    """The 1.0 card, or the 0.3 one for `A2A-Version: 0.3`; `304` when `If-None-Match` names the current ETag."""
    settings: EdgeSettings = request.app.state.settings
    edge = runtime(request)
    legacy = request.headers.get(VERSION_HEADER, "").strip() in _LEGACY_VERSIONS
    agents = tuple(dataclasses.replace(entry, runners=0) for entry in edge.catalog.agents())
    document = card_document(
        settings.base_url, agents, legacy=legacy, auth_methods=tuple(sorted(settings.auth.methods))
    )
    headers = {"Cache-Control": "public, max-age=60", "ETag": document.etag, "Vary": VERSION_HEADER}
    if _matches(request.headers.get("if-none-match"), document.etag):
        return Response(status_code=304, headers=headers)
    return Response(document.body, media_type="application/json", headers=headers)


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def _rebind(route: Route, dispatcher: RestDispatcher) -> Callable[[Request], Awaitable[Response]]:
    """The SDK's route table, served by our dispatcher: same method name, our instance."""
    endpoint = route.endpoint
    if isinstance(getattr(endpoint, "__self__", None), RestDispatcher):
        rebound: Callable[[Request], Awaitable[Response]] = getattr(dispatcher, endpoint.__name__)
        return rebound
    return endpoint


def a2a_routes(handler: SluiceRequestHandler | None = None) -> list[BaseRoute]:
    handler = handler or SluiceRequestHandler()
    builder = _ContextBuilder()
    jsonrpc = _JsonRpc(handler, context_builder=builder, enable_v0_3_compat=True)
    rest = _Rest(handler, context_builder=builder)
    routes: list[BaseRoute] = [
        Route(AGENT_CARD_WELL_KNOWN_PATH, _card, methods=["GET"], name="a2a_agent_card"),
        Route(JSONRPC_PATH, jsonrpc.handle_requests, methods=["POST"], name="a2a_jsonrpc"),
        # Some clients join the card's URL with a slash: the same endpoint.
        Route(JSONRPC_PATH + "/", jsonrpc.handle_requests, methods=["POST"], name="a2a_jsonrpc_slash"),
    ]
    aliases: list[BaseRoute] = []
    for route in create_rest_routes(handler, builder, enable_v0_3_compat=True, path_prefix=REST_PREFIX):
        # Only plain routes: the SDK also mounts a catch-all `/{tenant}/...` copy at the root, which would shadow
        # every two-segment path of the edge. The 1.0 tenant paths are served below the prefix instead.
        if not (isinstance(route, Route) and route.path.startswith(REST_PREFIX + "/")):
            continue
        endpoint, methods = tenant_checked(_rebind(route, rest)), sorted(route.methods or ())
        routes.append(Route(route.path, endpoint, methods=methods))
        if not route.path.startswith(_LEGACY_REST_PREFIX):  # 0.3 had no tenants
            tenant_path = REST_PREFIX + TENANT_PATH_SEGMENT + route.path.removeprefix(REST_PREFIX)
            aliases.append(Route(tenant_path, endpoint, methods=methods))
    # After every plain route, so that `/a2a/rest/tasks/{id}` is never read as tenant "tasks".
    return routes + aliases


def router() -> APIRouter:
    """The A2A routes as a router for `stream_edge.app.edge_routers()`."""
    api = APIRouter()
    api.routes.extend(a2a_routes())
    return api
