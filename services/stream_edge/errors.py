"""Every error the HTTP API answers, from one table: exception class → status and code.

    SluiceError (sluice.errors)         status from ERROR_STATUS, by the class's MRO
    ├── InvalidInput → 400              ├── InvalidBody → 422 (a body that is JSON but not a valid request)
    │                                   │   └── UnknownAgent → 422 (an agent not in the catalog)
    │                                   └── NotAcceptable → 406 (an Accept header we cannot serve)
    ├── BodyTooLarge → 413              ├── UnsupportedMediaType → 415
    ├── Unauthenticated → 401 + WWW-Authenticate: Bearer, Forbidden → 403, RateLimited → 429 + Retry-After
    ├── NotFound → 404, Conflict → 409, Unavailable → 503 + Retry-After, ProvisioningError → 503
    RequestValidationError (FastAPI)    body → 422 `invalid_body`, malformed JSON → 400 `invalid_json`,
                                        path / query / header → 400 `invalid_request`
    HTTPException (Starlette)           its status (unknown route 404, wrong method 405, ...)
    nats.errors.Error, TimeoutError     503 (the bus translates most NATS errors; this is the backstop)
    anything else                       500 `internal`, logged with its traceback — a bug, never an input

Every response body is `{"error": {"code": ..., "message": ...}}`.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import nats.errors
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from sluice.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    ModelError,
    NotFound,
    ProvisioningError,
    RateLimited,
    SluiceError,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "ERROR_STATUS",
    "BodyTooLarge",
    "InvalidBody",
    "NotAcceptable",
    "UnknownAgent",
    "UnsupportedMediaType",
    "error_response",
    "install_error_handlers",
    "status_of",
]

log = logging.getLogger(__name__)


class InvalidBody(InvalidInput):
    code = "invalid_body"


class UnknownAgent(InvalidBody):
    """An agent no runner ever advertised, or one an operator withdrew (CONTRACT §9)."""

    code = "unknown_agent"


class NotAcceptable(InvalidInput):
    code = "not_acceptable"


class BodyTooLarge(SluiceError):
    code = "body_too_large"


class UnsupportedMediaType(SluiceError):
    code = "unsupported_media_type"


# The one table. Lookup walks the exception's MRO, so the most specific class listed wins.
ERROR_STATUS: dict[type[SluiceError], int] = {
    InvalidBody: 422,
    NotAcceptable: 406,
    InvalidInput: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    BodyTooLarge: 413,
    UnsupportedMediaType: 415,
    RateLimited: 429,
    Unavailable: 503,
    ProvisioningError: 503,
    ModelError: 502,
    SluiceError: 500,
}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    503: "unavailable",
}
_encoder = msgspec.json.Encoder()
_MAX_VALIDATION_ERRORS = 5


def status_of(exc: SluiceError) -> int:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = _encoder.encode({"error": {"code": code, "message": message}})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def sluice_error_response(exc: SluiceError) -> Response:
    status = status_of(exc)
    headers = None
    if status in (429, 503):
        retry_after = exc.retry_after_s if isinstance(exc, Unavailable | RateLimited) else 2
        headers = {"Retry-After": str(max(1, int(retry_after)))}
    elif status == 401:
        # RFC 6750 §3: no error attribute when the request carried no credentials at all.
        challenge = (
            'Bearer realm="sluice"' if exc.code == "unauthenticated" else 'Bearer realm="sluice", error="invalid_token"'
        )
        headers = {"WWW-Authenticate": challenge}
    return error_response(status, exc.code, exc.message, headers)


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def from_validation_error(exc: RequestValidationError) -> SluiceError:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {}).get("error", "")
        return InvalidInput("invalid_json", f"the body is not valid JSON: {detail}".rstrip(": "))
    described = "; ".join(
        f"{_where(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in errors[:_MAX_VALIDATION_ERRORS]
    )
    if len(errors) > _MAX_VALIDATION_ERRORS:
        described += f"; and {len(errors) - _MAX_VALIDATION_ERRORS} more"
    in_body = any(tuple(e.get("loc", ()))[:1] == ("body",) for e in errors)
    if in_body:
        return InvalidBody("invalid_body", described)
    return InvalidInput("invalid_request", described)


async def _on_sluice_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SluiceError)
    if isinstance(exc, Unavailable | ProvisioningError):
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    return sluice_error_response(exc)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return sluice_error_response(from_validation_error(exc))


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    if exc.status_code == 404:
        message = f"no such resource: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 503:
        headers.setdefault("Retry-After", "2")
    return error_response(exc.status_code, code, message, headers or None)


async def _on_nats_error(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: NATS error %s", request.method, request.url.path, type(exc).__name__)
    return sluice_error_response(Unavailable("nats_unavailable", f"NATS is unavailable ({type(exc).__name__})"))


async def _on_timeout(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: timed out", request.method, request.url.path)
    return sluice_error_response(Unavailable("timeout", "a dependency did not answer in time; retry"))


async def _on_bug(request: Request, exc: Exception) -> Response:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal error; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SluiceError, _on_sluice_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(nats.errors.Error, _on_nats_error)
    app.add_exception_handler(TimeoutError, _on_timeout)
    app.add_exception_handler(Exception, _on_bug)
