"""Operations: liveness, readiness, Prometheus metrics.

Unlike the `/v1` routes, these ignore query parameters: probes and scrapers add their own (cache busters,
`?name[]=` filters), and a probe that gets 400 takes a healthy edge out of service.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from sluice.errors import Unavailable
from stream_edge.errors import error_response
from stream_edge.metrics import CONTENT_TYPE_LATEST, EdgeMetrics
from stream_edge.openapi import error_responses
from stream_edge.runtime import EdgeRuntime

__all__ = ["router"]

router = APIRouter(tags=["operations"])

_OK = b'{"status":"ok"}'


@router.get("/healthz", summary="Liveness", response_class=Response, responses={200: {"description": "Alive"}})
async def healthz() -> Response:
    return Response(_OK, media_type="application/json")


@router.get(
    "/readyz",
    summary="Readiness: connected to NATS and the streams exist",
    response_class=Response,
    responses={200: {"description": "Ready"}, **error_responses(503)},
)
async def readyz(request: Request) -> Response:
    edge: EdgeRuntime | None = getattr(request.app.state, "edge", None)
    reason = "starting" if edge is None else await edge.readiness()
    if reason is not None:
        exc = Unavailable("not_ready", reason)
        return error_response(503, exc.code, exc.message, {"Retry-After": str(exc.retry_after_s)})
    return Response(_OK, media_type="application/json")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
)
async def metrics(request: Request) -> Response:
    edge_metrics: EdgeMetrics = request.app.state.metrics
    return Response(edge_metrics.render(), media_type=CONTENT_TYPE_LATEST)
