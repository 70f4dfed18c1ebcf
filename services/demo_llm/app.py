"""The HTTP surface of the demo model: thin FastAPI routes over :class:`demo_llm.engine.DemoModel`.

| route | what |
| --- | --- |
| ``POST /v1/chat/completions`` | OpenAI chat completions, streamed (SSE) or not |
| ``GET /v1/models`` | lists ``sluice-demo`` (any model name is accepted and echoed back) |
| ``GET /_demo/requests`` | the request log, oldest first (last 1000) |
| ``DELETE /_demo/requests`` | clears the request log |
| ``GET /healthz`` | liveness |

Every error, including unknown routes and malformed bodies, is an OpenAI-style error body
(:mod:`demo_llm.errors`).
"""

from __future__ import annotations

import logging

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from demo_llm.engine import CompletionPlan, DemoHeaders, DemoModel, Plan
from demo_llm.errors import ApiError, api_error_for
from demo_llm.faults import MAX_SLOW_MS
from demo_llm.responses import CutShortResponse, PacedEventStream
from demo_llm.settings import DemoLLMSettings
from demo_llm.wire import RequestError, decode_chat_request
from sluice.errors import SluiceError

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

_JSON = "application/json"


def create_app(settings: DemoLLMSettings | None = None) -> FastAPI:
    """A demo model server application with its own state (request log, once-faults)."""
    model = DemoModel(settings or DemoLLMSettings())
    app = FastAPI(title="Sluice demo model", docs_url=None, redoc_url=None)
    app.state.demo_model = model

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return Response(exc.body(), status_code=exc.status, headers=exc.headers, media_type=_JSON)

    @app.exception_handler(SluiceError)
    async def sluice_error(request: Request, exc: SluiceError) -> Response:
        return await api_error(request, api_error_for(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return await api_error(request, ApiError(exc.status_code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return await api_error(request, ApiError(400, f"Invalid request: {exc.errors()}"))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        # Starlette logs and re-raises after this handler; this only shapes the 500 body.
        return await api_error(request, ApiError(500, "The Sluice demo model hit an unexpected error."))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        path = request.url.path
        try:
            chat = decode_chat_request(await request.body())
            headers = _demo_headers(request)
        except RequestError as exc:
            model.record_rejected(path, exc.message)
            raise
        return await _render(model.complete(chat, headers, path=path))

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        return Response(model.list_models(request.url.path), media_type=_JSON)

    @app.get("/_demo/requests")
    async def request_log() -> Response:
        return Response(model.requests.encode(), media_type=_JSON)

    @app.delete("/_demo/requests", status_code=204)
    async def clear_request_log() -> Response:
        logger.info("cleared %d logged requests", model.requests.clear())
        return Response(status_code=204)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    return app


def _demo_headers(request: Request) -> DemoHeaders:
    raw_delay = request.headers.get("x-demo-delay-ms")
    delay_ms: float | None = None
    if raw_delay is not None:
        try:
            delay_ms = float(raw_delay)
        except ValueError:
            raise RequestError(message=f"X-Demo-Delay-Ms must be a number of milliseconds, got {raw_delay!r}") from None
        if not 0 <= delay_ms <= MAX_SLOW_MS:
            raise RequestError(message=f"X-Demo-Delay-Ms must be between 0 and {MAX_SLOW_MS:g}, got {raw_delay!r}")
    return DemoHeaders(
        fault=request.headers.get("x-demo-fault"),
        fault_key=request.headers.get("x-demo-fault-key"),
        delay_ms=delay_ms,
    )


async def _render(plan: Plan) -> Response:
    if isinstance(plan, CompletionPlan):
        if plan.delay_s > 0:
            await anyio.sleep(plan.delay_s)
        return CutShortResponse(plan.body) if plan.cut else Response(plan.body, media_type=_JSON)
    return PacedEventStream(
        plan.chunks,
        chunk_delay_s=plan.pacing.chunk_delay_s,
        stall_s=plan.pacing.stall_s,
        cut_after=plan.cut_after,
    )
