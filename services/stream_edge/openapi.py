"""The generated /openapi.json, completed with the schemas of the msgspec wire types the routes return.

Request bodies are pydantic models (FastAPI documents them itself); responses are msgspec Structs encoded once, so
their schemas come from msgspec — the same definition that encodes them — under `#/components/schemas/<Name>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
import msgspec
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

from sluice.events import TaskRecord
from stream_edge.api_models import ErrorBody
from stream_edge.contexts import ContextView
from stream_edge.negotiation import NDJSON, SSE

__all__ = ["DOCS_ASSETS", "error_responses", "install_docs", "install_openapi", "record_response", "stream_response"]

# Swagger UI's own files, shipped in the `fastapi-offline` package, served by the edge itself: `/docs` works
# offline and behind a firewall, and loads nothing from a CDN.
DOCS_ASSETS = "/docs/assets"
_SWAGGER_UI = Path(fastapi_offline.__file__).parent / "static"

_WIRE_TYPES: tuple[type[msgspec.Struct], ...] = (TaskRecord, ContextView)
_REF = "#/components/schemas/{name}"

_ERROR_TEXT = {
    400: "Invalid path, query or header value, or a body that is not JSON",
    401: "No credentials, or bad ones (`WWW-Authenticate: Bearer`)",
    403: "A Host or Origin this edge does not serve",
    404: "Unknown task (also: another tenant's task)",
    406: "The Accept header names no format this route serves",
    409: "The task's state forbids this",
    413: "The body is larger than SLUICE_MAX_BODY_BYTES",
    415: "The body is not application/json",
    422: "The body is JSON but not a valid request",
    429: "A per-tenant limit is reached; see Retry-After",
    503: "NATS is unavailable or the edge is at capacity / shutting down; see Retry-After",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": _ERROR_TEXT[status]} for status in statuses}


def record_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(name="TaskRecord")}}},
    }


def stream_response(description: str) -> dict[str, Any]:
    text = {"schema": {"type": "string"}}
    return {"description": description, "content": {SSE: text, NDJSON: text}}


def install_openapi(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            _, components = msgspec.json.schema_components(_WIRE_TYPES, ref_template=_REF)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_docs(app: FastAPI) -> None:
    """`GET /docs`: Swagger UI over `/openapi.json`, its script and style from `DOCS_ASSETS`."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=_SWAGGER_UI), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )
