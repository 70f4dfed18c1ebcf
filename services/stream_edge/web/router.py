"""The web client: `GET /` (the page) and `GET /web/{file}` (its script, style and icon), from this folder.

Nothing is loaded from anywhere but the edge, and the Content-Security-Policy says so: scripts, styles, images
and connections are same-origin only, no inline script, no framing. Files are read once, served with a strong
ETag and `Cache-Control: no-cache`, so a browser revalidates cheaply (304) and never runs a stale script.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import Response

from sluice.errors import NotFound

__all__ = ["CONTENT_SECURITY_POLICY", "router"]

_HERE = Path(__file__).parent
_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "markdown.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


@functools.cache
def _asset(name: str) -> _Asset:
    body = (_HERE / name).read_bytes()
    return _Asset(body, _TYPES[name], '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _serve(name: str, request: Request) -> Response:
    asset = _asset(name)
    headers = {**_SECURITY_HEADERS, "ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get("/")
async def index(request: Request) -> Response:
    """The page; `/?task=ID` watches a task."""
    return _serve("index.html", request)


@router.get("/web/{name}")
async def static_file(name: str, request: Request) -> Response:
    if name not in _TYPES or name == "index.html":
        raise NotFound("not_found", f"no file {name!r} here")
    return _serve(name, request)
