"""Errors the demo model answers with, and the one table that gives each status its OpenAI type and code.

Every error leaves the server as ``{"error": {"message", "type", "param", "code"}}`` with its HTTP status,
whether it is a malformed request (400), an unknown route (404) or an injected fault (429, 500, ...).
Sluice's own errors (:mod:`sluice.errors`) are translated by :func:`api_error_for`, here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from sluice.errors import Conflict, InvalidInput, NotFound, SluiceError, Unavailable

__all__ = ["ApiError", "api_error_for", "error_kind"]

# status -> (error.type, error.code), as OpenAI reports them.
_KINDS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    408: ("timeout_error", "request_timeout"),
    409: ("conflict_error", "conflict"),
    422: ("invalid_request_error", "unprocessable_entity"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", "internal_error"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "gateway_timeout"),
}


def error_kind(status: int) -> tuple[str, str]:
    """``(type, code)`` for an HTTP error status."""
    if status in _KINDS:
        return _KINDS[status]
    return ("server_error" if status >= 500 else "invalid_request_error", f"http_{status}")


class _Detail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str


class _Body(msgspec.Struct):
    error: _Detail


_encoder = msgspec.json.Encoder()


class ApiError(Exception):
    """An error response: status, OpenAI-style body, extra headers (e.g. ``Retry-After``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.param = param
        self.code = code

    def body(self) -> bytes:
        kind, code = error_kind(self.status)
        detail = _Detail(message=self.message, type=kind, param=self.param, code=self.code or code)
        return _encoder.encode(_Body(detail))


def api_error_for(exc: SluiceError) -> ApiError:
    """The HTTP error that reports a Sluice error; its ``code`` is kept as the OpenAI ``error.code``."""
    if isinstance(exc, InvalidInput):
        return ApiError(400, exc.message, code=exc.code)
    if isinstance(exc, NotFound):
        return ApiError(404, exc.message, code=exc.code)
    if isinstance(exc, Conflict):
        return ApiError(409, exc.message, code=exc.code)
    if isinstance(exc, Unavailable):
        return ApiError(503, exc.message, code=exc.code, headers={"Retry-After": str(exc.retry_after_s)})
    return ApiError(500, exc.message, code=exc.code)
