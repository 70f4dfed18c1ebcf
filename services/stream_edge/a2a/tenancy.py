"""The tenant an A2A request may name, held against the caller's credentials (CONTRACT §8).

A2A 1.0 lets every request carry a `tenant`: a field of the JSON-RPC params and of HTTP+JSON bodies, and a path
segment in the HTTP+JSON binding (`/a2a/rest/{tenant}/message:send`, `/a2a/rest/{tenant}/tasks/{id}`, ...). In
Sluice the tenant is who the caller is — its API key or token says so — never something a request chooses:

    names no tenant, or the caller's own     served as usual (`/a2a/rest/{tenant}/...` is an alias of the route)
    names another tenant, HTTP+JSON          403 PERMISSION_DENIED here, before the SDK's dispatcher runs
    names another tenant, JSON-RPC           -32602 from the handler (`SluiceRequestHandler._tenant`)

Either way the request is refused before it can read or publish anything.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from stream_edge.auth.caller import CALLER_STATE_KEY, Caller

__all__ = ["TENANT_PATH_SEGMENT", "tenant_checked"]

# Where the HTTP+JSON binding puts the tenant: right after the binding's prefix.
TENANT_PATH_SEGMENT = "/{tenant}"
# The A2A REST error body (a `google.rpc.Status`), with Sluice's error code in the ErrorInfo as everywhere else.
_REFUSAL = {
    "error": {
        "code": 403,
        "status": "PERMISSION_DENIED",
        "message": "the request names a tenant other than the caller's (the tenant comes from the credentials)",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "TENANT_MISMATCH",
                "domain": "a2a-protocol.org",
                "metadata": {"code": "tenant_mismatch"},
            }
        ],
    }
}

Endpoint = Callable[[Request], Awaitable[Response]]


async def _body_tenant(request: Request) -> str | None:
    """The `tenant` field of a JSON body, if there is one (Starlette keeps the body for the dispatcher)."""
    if request.method != "POST":
        return None
    body = await request.body()
    if b'"tenant"' not in body:  # most bodies: no parse
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None  # the dispatcher answers a body that is not JSON
    named = document.get("tenant") if isinstance(document, dict) else None
    return named if isinstance(named, str) and named else None


def tenant_checked(endpoint: Endpoint) -> Endpoint:
    """`endpoint`, refusing (403) a request whose path or body names a tenant other than the caller's."""

    async def checked(request: Request) -> Response:
        caller = request.scope.get("state", {}).get(CALLER_STATE_KEY)
        if isinstance(caller, Caller):  # no caller: the handler answers 401
            for named in (request.path_params.get("tenant"), await _body_tenant(request)):
                if named and named != caller.tenant:
                    return JSONResponse(_REFUSAL, status_code=403)
        return await endpoint(request)

    return checked
