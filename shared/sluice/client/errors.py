"""HTTP answers and transport failures of the edge, translated into `sluice.errors` — here and nowhere else.

    httpx.ConnectError / ConnectTimeout     → Unavailable("edge_unreachable")   (never reached the edge)
    httpx.TransportError (read, protocol)   → Unavailable("edge_connection")    (reached it, then lost it)
    400, 413, 415, 422                      → InvalidInput
    404                                     → NotFound
    409                                     → Conflict
    429, 502, 503, 504                      → Unavailable (retry_after_s from `Retry-After`)
    anything else ≥ 400                     → SluiceError

The code and message come from the edge's JSON error body `{"error": {"code", "message"}}` when it has one.
"""

from __future__ import annotations

import json

import httpx

from sluice.errors import Conflict, Forbidden, InvalidInput, NotFound, SluiceError, Unauthenticated, Unavailable

__all__ = ["error_from_response", "error_from_transport", "is_transient"]

_BY_STATUS: dict[int, type[SluiceError]] = {
    400: InvalidInput,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,
    415: InvalidInput,
    422: InvalidInput,
    429: Unavailable,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def error_from_response(status: int, body: bytes, headers: httpx.Headers | None = None) -> SluiceError:
    """The error an edge answer with `status` ≥ 400 stands for."""
    code, message = _error_body(body)
    cls = _BY_STATUS.get(status, SluiceError)
    message = message or f"the edge answered HTTP {status}"
    if cls is Unavailable:
        return Unavailable(code, message, retry_after_s=_retry_after(headers))
    if cls is SluiceError:
        return SluiceError(code or f"http_{status}", message)
    return cls(code, message)


def error_from_transport(exc: httpx.TransportError, base_url: str) -> Unavailable:
    """One clear sentence for a transport failure, e.g. "cannot reach the Sluice edge at http://…: connection
    refused"."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return Unavailable("edge_unreachable", f"cannot reach the Sluice edge at {base_url}: {_reason(exc)}")
    return Unavailable("edge_connection", f"lost the connection to the Sluice edge at {base_url}: {_reason(exc)}")


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the edge was unreachable, the connection broke, or it asked us to come back later."""
    return isinstance(exc, Unavailable | httpx.TransportError)


def _error_body(body: bytes) -> tuple[str | None, str | None]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None, None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return (code if isinstance(code, str) else None), (message if isinstance(message, str) else None)
    # FastAPI's own validation errors: {"detail": [...]}
    detail = parsed.get("detail") if isinstance(parsed, dict) else None
    if isinstance(detail, str):
        return None, detail
    return None, None


def _retry_after(headers: httpx.Headers | None) -> int:
    raw = (headers or httpx.Headers()).get("retry-after", "")
    return int(raw) if raw.isdigit() else 2


def _reason(exc: httpx.TransportError) -> str:
    """The innermost cause, lowercased the way a sentence wants it: "connection refused"."""
    cause: BaseException = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        nxt = cause.__cause__ or cause.__context__
        assert nxt is not None
        cause = nxt
    if isinstance(cause, ConnectionRefusedError) or "refused" in str(cause).lower():
        return "connection refused"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    text = str(cause) or str(exc) or type(exc).__name__
    # "[Errno 111] Connection refused" → "connection refused"
    if text.startswith("[Errno"):
        text = text.split("]", 1)[-1].strip()
    return text[:1].lower() + text[1:] if text else type(exc).__name__
