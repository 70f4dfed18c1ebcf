"""Sluice errors as A2A errors: the one table, applied at the handler's boundary.

    sluice.errors                   a2a.utils.errors (JSON-RPC code / HTTP+JSON status)
    ├── InvalidInput                InvalidParamsError        -32602 / 400
    ├── NotFound                    TaskNotFoundError         -32001 / 404
    ├── Conflict                    UnsupportedOperationError -32004 / 400 (callers map the cases they know better,
    │                                                                     e.g. cancel → TaskNotCancelableError)
    ├── RateLimited                 TenantLimitError          -32603 / 429, `data.retryAfterSeconds`
    └── Unavailable, anything else  InternalError             -32603 / 500, `data.retryAfterSeconds` when known

A2A has no error for "retry later". A tenant at its limit (CONTRACT §8) is `TenantLimitError`, registered in the
SDK's public error tables below: the JSON-RPC binding answers it with the SDK's code for unknown errors (-32603),
the HTTP+JSON binding with 429 and the reason `TENANT_LIMIT`.

The Sluice error code travels in the error's `data` (`google.rpc.ErrorInfo` metadata in the SDK's typed details),
so a client can tell `task_terminal` from `task_not_waiting`.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from a2a.utils.errors import (
    A2A_ERROR_MAPPING,
    A2A_ERROR_REASONS,
    A2A_REASON_TO_ERROR,
    A2AError,
    ErrorMapping,
    InternalError,
    InvalidParamsError,
    TaskNotFoundError,
    UnsupportedOperationError,
)

from sluice.errors import Conflict, InvalidInput, NotFound, RateLimited, SluiceError, Unavailable

__all__ = ["TenantLimitError", "a2a_error", "translated", "translated_stream"]


class TenantLimitError(A2AError):
    message = "A per-tenant limit is reached; retry later"


_TENANT_LIMIT = ErrorMapping(429, "RESOURCE_EXHAUSTED", "TENANT_LIMIT")
A2A_ERROR_MAPPING[TenantLimitError] = _TENANT_LIMIT
A2A_ERROR_REASONS[TenantLimitError] = _TENANT_LIMIT.reason
A2A_REASON_TO_ERROR[_TENANT_LIMIT.reason] = TenantLimitError

P = ParamSpec("P")
T = TypeVar("T")

_TABLE: tuple[tuple[type[SluiceError], type[A2AError]], ...] = (
    (InvalidInput, InvalidParamsError),
    (NotFound, TaskNotFoundError),
    (Conflict, UnsupportedOperationError),
    (RateLimited, TenantLimitError),
)


def a2a_error(exc: SluiceError) -> A2AError:
    data: dict[str, Any] = {"code": exc.code}
    if isinstance(exc, Unavailable | RateLimited):
        data["retryAfterSeconds"] = exc.retry_after_s
    for sluice_cls, a2a_cls in _TABLE:
        if isinstance(exc, sluice_cls):
            return a2a_cls(message=exc.message, data=data)
    return InternalError(message=exc.message, data=data)


def translated(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """A coroutine method whose Sluice errors leave it as A2A errors."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except SluiceError as exc:
            raise a2a_error(exc) from exc

    return wrapper


def translated_stream(method: Callable[P, AsyncIterator[T]]) -> Callable[P, AsyncIterator[T]]:
    """An async-generator method whose Sluice errors leave it as A2A errors."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        stream = method(*args, **kwargs)
        try:
            async for item in stream:
                yield item
        except SluiceError as exc:
            raise a2a_error(exc) from exc
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    return wrapper
