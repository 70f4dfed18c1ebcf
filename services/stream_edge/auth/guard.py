"""The edge's front door, two ASGI middlewares (see `stream_edge.app` for where they sit).

`AccessTokenFromQuery` (outermost, before tracing and metrics see the request): moves `?access_token=` out of
the query string into the scope, so the token never reaches a span attribute, a log line or a route's query
validation.

`EdgeGuard` (inside CORS, so refusals carry CORS headers and preflights are CORS's), for every HTTP request:

1. `Host` must be an allowed name — on a loopback bind with `SLUICE_AUTH=none` the loopback names and
   `SLUICE_ALLOWED_HOSTS` (no DNS rebinding against a local edge); otherwise `SLUICE_ALLOWED_HOSTS`, when set.
   Else 403.
2. With `none`, a state-changing request from a browser page of another origin (its `Origin` neither this edge
   nor in `SLUICE_CORS_ORIGINS`, or `Sec-Fetch-Site: cross-site`) is 403: no CSRF through curl's form bodies.
3. Credentials (`Authenticator`): the caller goes into `scope["state"]`, where `stream_edge.auth.deps` finds it.
   Public paths (health, metrics, the web page's files, the API documents, the agent card) need none;
   `access_token` is accepted only on an event stream route and for that route's task; anything else is 401.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from sluice.errors import Forbidden, SluiceError, Unauthenticated
from stream_edge.auth.authenticator import Authenticator
from stream_edge.auth.caller import CALLER_STATE_KEY, Caller
from stream_edge.auth.settings import LOOPBACK_NAMES, is_loopback
from stream_edge.errors import sluice_error_response

__all__ = ["ACCESS_TOKEN_STATE_KEY", "AccessTokenFromQuery", "EdgeGuard", "is_public"]

ACCESS_TOKEN_STATE_KEY = "sluice_access_token"
_PUBLIC = frozenset(
    {"/", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/asyncapi.json", "/.well-known/agent-card.json"}
)
_PUBLIC_PREFIXES = ("/web/", "/docs/")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The routes a browser's EventSource opens: where a stream token may stand in for credentials.
_STREAM_ROUTES = (
    re.compile(r"^/v1/tasks/(?P<task>[^/]+)/events$"),
    # A2A's subscribe, also under an A2A 1.0 tenant path segment (held against the token's tenant by the route).
    re.compile(r"^/a2a/rest/(?:[^/]+/)?tasks/(?P<task>[^/:]+):subscribe$"),
)


def is_public(method: str, path: str) -> bool:
    return method == "OPTIONS" or path in _PUBLIC or path.startswith(_PUBLIC_PREFIXES)


def _stream_task(method: str, path: str) -> str | None:
    if method not in ("GET", "HEAD"):
        return None
    for route in _STREAM_ROUTES:
        if match := route.fullmatch(path):
            return match.group("task")
    return None


class AccessTokenFromQuery:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and b"access_token" in scope.get("query_string", b""):
            pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            tokens = [value for key, value in pairs if key == "access_token"]
            rest = [(key, value) for key, value in pairs if key != "access_token"]
            scope = {**scope, "query_string": urlencode(rest).encode("latin-1")}
            # More than one is nobody's real request: keep them all, so the guard refuses the lot.
            scope.setdefault("state", {})
            scope["state"] = {**scope["state"], ACCESS_TOKEN_STATE_KEY: tokens}
        await self.app(scope, receive, send)


class EdgeGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: Authenticator,
        cors_origins: tuple[str, ...],
        allowed_hosts: tuple[str, ...],
        bind_host: str,
    ) -> None:
        self.app = app
        self.auth = auth
        self.local = not auth.required
        # A local edge answers only to loopback names (no DNS rebinding); an open edge on a public address, which
        # an operator asked for, answers to whatever name reaches it unless SLUICE_ALLOWED_HOSTS says otherwise.
        loopback = frozenset(LOOPBACK_NAMES) if self.local and is_loopback(bind_host) else frozenset()
        self.allowed_hosts = frozenset(allowed_hosts) | loopback
        self.cors_origins = frozenset(o.rstrip("/") for o in cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            caller = await self._admit(scope)
        except SluiceError as exc:
            await sluice_error_response(exc)(scope, receive, send)
            return
        if caller is not None:
            scope.setdefault("state", {})
            scope["state"] = {**scope["state"], CALLER_STATE_KEY: caller}
        await self.app(scope, receive, send)

    async def _admit(self, scope: Scope) -> Caller | None:
        headers = Headers(scope=scope)
        method, path = scope["method"], scope["path"]
        host = _hostname(headers.get("host", ""))
        if self.allowed_hosts and host not in self.allowed_hosts:
            raise Forbidden("host_not_allowed", "this edge does not answer to that Host name (SLUICE_ALLOWED_HOSTS)")
        if self.local and method not in _SAFE_METHODS:
            self._check_origin(headers)
        tokens: list[str] = scope.get("state", {}).get(ACCESS_TOKEN_STATE_KEY, [])
        if tokens and self.auth.required:
            task_id = _stream_task(method, path)
            if task_id is None:
                raise Unauthenticated("invalid_token", "an access_token is accepted only on a task's event stream")
            if len(tokens) != 1:
                raise Unauthenticated("invalid_token", "give one access_token")
            return self.auth.stream(tokens[0], task_id)
        if is_public(method, path):
            return None
        return await self.auth.bearer(headers.get("authorization"))

    def _check_origin(self, headers: Headers) -> None:
        origin = headers.get("origin")
        if origin is None:
            if headers.get("sec-fetch-site") == "cross-site":
                raise Forbidden("origin_not_allowed", "cross-site requests may not change anything here")
            return
        origin = origin.rstrip("/")
        if origin in self.cors_origins or "*" in self.cors_origins:
            return
        own = urlsplit(origin)
        if own.scheme in ("http", "https") and own.netloc and own.netloc.lower() == headers.get("host", "").lower():
            return  # the edge's own page
        raise Forbidden(
            "origin_not_allowed", "requests from that origin may not change anything here (SLUICE_CORS_ORIGINS)"
        )


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
