"""FastAPI dependencies shared by the routes: the runtime, JSON-only bodies, no unknown query parameters."""

from __future__ import annotations

import email.message
from collections.abc import Awaitable, Callable, Iterable

from fastapi import Request

from sluice.errors import InvalidInput, Unavailable
from sluice.ids import parse_task_id
from stream_edge.errors import UnsupportedMediaType
from stream_edge.runtime import EdgeRuntime

__all__ = ["edge_of", "is_json_media_type", "json_body", "only_query", "runtime", "task_id_param"]


def runtime(request: Request) -> EdgeRuntime:
    edge: EdgeRuntime | None = getattr(request.app.state, "edge", None)
    if edge is None:
        raise Unavailable("starting", "the edge is starting or stopping")
    return edge


async def edge_of(request: Request) -> EdgeRuntime:
    """`runtime` as a route dependency. FastAPI runs a plain `def` dependency in its thread pool — two thread
    hand-offs per dependency per request, most of a small request's latency on a busy machine — so every
    dependency of the edge is `async def`."""
    return runtime(request)


def is_json_media_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


async def json_body(request: Request) -> None:
    """A request body, when there is one, must be JSON (415 otherwise). Runs before the body is validated."""
    body = await request.body()
    if body and not is_json_media_type(request.headers.get("content-type")):
        raise UnsupportedMediaType(
            "unsupported_media_type",
            f"the body must be application/json, not {request.headers.get('content-type') or 'untyped'}",
        )


def only_query(*allowed: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency that rejects query parameters the route does not take, and repeated ones (400)."""
    allowed_set = frozenset(allowed)

    async def check(request: Request) -> None:
        keys = [k for k, _ in request.query_params.multi_items()]
        unknown = sorted({k for k in keys if k not in allowed_set})
        if unknown:
            accepted = ", ".join(sorted(allowed_set)) or "none"
            raise InvalidInput(
                "unknown_query_parameter",
                f"unknown query parameter(s): {_names(unknown)}; this route takes: {accepted}",
            )
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise InvalidInput(
                "repeated_query_parameter", f"query parameter(s) given more than once: {_names(repeated)}"
            )

    return check


def _names(names: Iterable[str], limit: int = 5) -> str:
    shown = [repr(n[:40]) for n in list(names)[:limit]]
    return ", ".join(shown)


def task_id_param(task_id: str) -> str:
    """The `{task_id}` path segment, validated before it goes anywhere near a subject (400 otherwise)."""
    return parse_task_id(task_id)
