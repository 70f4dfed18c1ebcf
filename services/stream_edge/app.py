"""The stream-edge ASGI app: `create_app(settings)` wires routers, middleware, errors and the lifespan.

Importing this module connects to nothing. The lifespan connects to NATS as the `edge` identity (unless a bus is
given), waits until what it needs is provisioned, builds the task store, the task service and the stream hub, and
runs the reconciler (one edge at a time sweeps, see `reconciler.py`); on shutdown it stops the reconciler, drains
the hub (within the grace period) and closes the bus it opened.

Middleware, outermost first: `?access_token=` moved out of the query (auth/guard.py) → an opened event stream's
body (events_asgi.py) → OpenTelemetry server span → HTTP metrics → CORS (when origins are configured) → curl's
form-typed bodies read as JSON → body limit → the guard (Host, Origin, credentials: auth/guard.py) → `GET
/v1/tasks/{id}/events` answered as plain ASGI (events_asgi.py) → FastAPI's exception handlers → routes.

Adding routes: `edge_routers()` lists every router the edge serves. The web client (`GET /`) and the A2A
endpoint (`/.well-known/agent-card.json`, `POST /a2a`) add their routers there; a route reaches the task service
and the hub through `Depends(stream_edge.deps.runtime)` (`.tasks`, `.hub`, `.settings.base_url`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.trace import TracerProvider
from starlette.middleware.cors import CORSMiddleware

from sluice import subjects
from sluice.active_tasks import ActiveTasks
from sluice.bus import Bus, connect
from sluice.catalog import CatalogView
from sluice.errors import SluiceError
from sluice.permissions import needs_of
from sluice.provisioned import wait_provisioned
from sluice.records import TaskStore, open_bucket
from sluice.service import unless_stopped
from stream_edge.auth import Authenticator
from stream_edge.auth.guard import AccessTokenFromQuery, EdgeGuard
from stream_edge.body_limit import BodyLimitMiddleware
from stream_edge.commands import TaskService
from stream_edge.contexts import ContextIndex, Conversations
from stream_edge.curl_compat import FormBodyAsJsonMiddleware
from stream_edge.errors import install_error_handlers
from stream_edge.events_asgi import DetachedStreams, EventsRoute
from stream_edge.limits import CreationLimits, CreationRate, OpenStreams
from stream_edge.metrics import EdgeMetrics, HttpMetricsMiddleware
from stream_edge.openapi import install_docs, install_openapi
from stream_edge.reconciler import LEASE_KEY, Lease, Reconciler
from stream_edge.runtime import EdgeRuntime, StreamHubLike
from stream_edge.settings import EdgeSettings

__all__ = ["HubFactory", "create_app", "default_hub", "edge_routers"]

# How long a request waits for the task bucket: long enough to ride out a leader election, short enough that a
# person (or a load balancer) gets a 503 with Retry-After while NATS is down, not a hung request. Runners, which
# answer no one, wait longer.
RECORD_DEADLINE_S = 3.0

log = logging.getLogger(__name__)

HubFactory = Callable[[Bus, EdgeSettings], StreamHubLike]
_NOT_TRACED = "healthz,readyz,metrics"


def edge_routers() -> list[APIRouter]:
    """Every router the edge serves, in order. Other features append theirs here."""
    from stream_edge import a2a, asyncapi, routes_catalog, routes_contexts, routes_events, routes_ops, routes_tasks
    from stream_edge.protocols import routes_ag_ui, routes_chat
    from stream_edge.web import router as web

    return [
        *(routes_tasks.router, routes_events.router, routes_contexts.router, routes_catalog.router, routes_ops.router),
        *(a2a.router(), routes_chat.router, routes_ag_ui.router, web.router, asyncapi.router),
    ]


def default_hub(bus: Bus, settings: EdgeSettings) -> StreamHubLike:
    from stream_edge.streaming import StreamHub, StreamSettings

    stream_settings = StreamSettings(
        heartbeat_s=settings.heartbeat_s,
        client_buffer_bytes=settings.client_buffer_bytes,
        max_streams=settings.max_streams,
        shutdown_grace_s=settings.shutdown_grace_s,
    )
    hub: StreamHubLike = StreamHub(bus, stream_settings)
    return hub


def create_app(
    settings: EdgeSettings,
    bus: Bus | None = None,
    *,
    hub_factory: HubFactory | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The edge app. `bus`: an already connected and provisioned bus to use (and not close); by default the
    lifespan connects its own. `hub_factory` replaces the stream hub (tests); `tracer_provider` the global one."""
    make_hub = hub_factory or default_hub
    auth = Authenticator(settings.auth)  # reads the keys file now: a bad one stops the edge before it serves

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_bus = bus is None
        try:
            active = bus if bus is not None else await connect(settings.common, name="sluice-edge", identity="edge")
        except SluiceError as exc:  # NATS unreachable, a seed it refuses, a bad seed file: one line, exit 1
            log.error("stream-edge stopped: %s", exc.message, extra={"code": exc.code})
            app.state.startup_error = exc
            yield
            return
        edge: EdgeRuntime | None = None
        stop_reconciling = asyncio.Event()
        reconciling: asyncio.Task[None] | None = None
        catalog = CatalogView(active)
        try:
            if own_bus:
                # The edge never provisions (that is `sluice provision`): it waits, not ready, until it may start.
                waiting = wait_provisioned(active.js, settings.common, needs_of("edge"), service="stream-edge")
                provisioned, _ = await unless_stopped(waiting, app.state.stopping)
                if not provisioned:
                    yield  # stopped while waiting: nothing to serve, nothing to drain
                    return
            store = TaskStore(
                await open_bucket(active.js, subjects.TASKS_BUCKET), deadline_s=RECORD_DEADLINE_S, js=active.js
            )
            contexts_kv = await open_bucket(active.js, subjects.CONTEXTS_BUCKET)
            contexts = ContextIndex(contexts_kv, deadline_s=RECORD_DEADLINE_S)
            conversations = Conversations(active, store, contexts)
            await catalog.start()
            hub = make_hub(active, settings)
            active_tasks = ActiveTasks(
                await open_bucket(active.js, subjects.LIMITS_BUCKET), deadline_s=RECORD_DEADLINE_S
            )
            rate = CreationRate(active.js, settings.tenant_rate, deadline_s=RECORD_DEADLINE_S)
            limits = CreationLimits(active_tasks, settings.tenant_max_active, rate if settings.tenant_rate else None)
            tasks = TaskService(active, store, catalog.confirm_known, conversations, limits)
            edge_id = f"edge-{uuid.uuid4().hex}"
            streams = OpenStreams(active, settings.tenant_max_streams, edge_id)
            edge = EdgeRuntime(
                settings=settings, bus=active, store=store, tasks=tasks, hub=hub, catalog=catalog, tokens=auth.tokens,
                streams=streams,
            )  # fmt: skip
            await auth.start()
            await hub.start()
            await streams.start()
            if settings.reconcile_interval_s > 0:
                reconciler = Reconciler(
                    tasks,
                    Lease(await open_bucket(active.js, subjects.LEASES_BUCKET), LEASE_KEY, holder=edge_id),
                    interval_s=settings.reconcile_interval_s,
                    grace_s=settings.reconcile_grace_s,
                    active=active_tasks,
                )
                reconciling = asyncio.create_task(reconciler.run(stop_reconciling), name="reconciler")
            app.state.edge = edge
            metrics.bind(edge)
            log.info("stream-edge started", extra={"config": settings.describe()})
            yield
        finally:
            stop_reconciling.set()
            if reconciling is not None:
                await reconciling
            app.state.edge = None
            metrics.bind(None)
            if edge is not None:
                await edge.drain()
                if edge.streams is not None:
                    await edge.streams.stop()
            await catalog.stop()
            if own_bus:
                await active.close()
            log.info("stream-edge stopped")

    app = FastAPI(
        title="Sluice stream-edge",
        version="0.1.0",
        summary="Submit AI agent tasks and stream their events (SSE / NDJSON) with durable replay.",
        lifespan=lifespan,
        redoc_url=None,
        docs_url=None,  # install_docs: Swagger UI from the edge's own files
    )
    metrics = EdgeMetrics()
    app.state.metrics = metrics
    app.state.edge = None
    app.state.startup_error = None  # a SluiceError that ended the start-up (the server then exits 1)
    app.state.stopping = asyncio.Event()  # set by the server on SIGTERM/SIGINT: ends a wait at start-up
    app.state.settings = settings
    app.state.auth = auth
    for router in edge_routers():
        app.include_router(router)
    install_error_handlers(app)
    install_openapi(app)
    install_docs(app)

    # Innermost (added first): the events route as plain ASGI, inside every middleware below, ahead of routing.
    app.add_middleware(EventsRoute)
    # Around it, so every request — the plain-ASGI events route too — is admitted (or refused) first.
    app.add_middleware(
        EdgeGuard,
        auth=auth,
        cors_origins=settings.cors_origins,
        allowed_hosts=settings.auth.allowed_hosts,
        bind_host=settings.host,
    )
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(FormBodyAsJsonMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=[
                *(
                    "Accept",
                    "Authorization",
                    "Content-Type",
                    "Last-Event-ID",
                    "Idempotency-Key",
                    "traceparent",
                    "tracestate",
                ),
                *("A2A-Version", "A2A-Extensions"),  # the A2A endpoint's request headers
            ],
            expose_headers=["Location", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    FastAPIInstrumentor.instrument_app(
        app, exclude_spans=["send", "receive"], tracer_provider=tracer_provider, excluded_urls=_NOT_TRACED
    )
    # Outermost, around the stack the tracing middleware wraps when it is built: an opened event stream's body runs
    # outside every middleware (events_asgi.py), and no span, log line or metric ever sees a stream token.
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: AccessTokenFromQuery(DetachedStreams(build_stack()))  # type: ignore[method-assign]
    return app
