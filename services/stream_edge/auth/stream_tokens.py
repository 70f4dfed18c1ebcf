"""Stream tokens (CONTRACT §8): a short-lived, signed "may read the events of task T of tenant N".

For `EventSource`, which cannot send an `Authorization` header: `?access_token=<token>` on the events route.
A token is a JWT signed with HMAC-SHA256 (PyJWT) under `SLUICE_TOKEN_SECRET`, which every replica shares, so any
replica verifies any token and nothing is stored. Its audience is fixed to `sluice-stream`, so no other kind of
token (an API key, an OIDC token) is ever mistaken for one; it names the task (`tsk`) and the tenant (`tnt`) and
expires after `SLUICE_STREAM_TOKEN_TTL_S`. Without a configured secret the process draws a random one: tokens
then hold only on the edge that made them, until it restarts.
"""

from __future__ import annotations

import secrets
import time

import jwt

from sluice.errors import InvalidInput, Unauthenticated
from sluice.ids import parse_task_id, parse_tenant
from stream_edge.auth.caller import Caller

__all__ = ["StreamTokens"]

_AUDIENCE = "sluice-stream"
_ALGORITHM = "HS256"
# Longer than any token this edge makes: anything bigger is refused before it is parsed.
MAX_TOKEN_CHARS = 1024


class StreamTokens:
    def __init__(self, secret: str | None, ttl_s: int) -> None:
        self.shared = secret is not None
        self._secret = (secret or secrets.token_urlsafe(32)).encode()
        self.ttl_s = ttl_s

    def issue(self, task_id: str, tenant: str) -> str:
        now = int(time.time())
        claims = {"aud": _AUDIENCE, "tsk": task_id, "tnt": tenant, "iat": now, "exp": now + self.ttl_s}
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def verify(self, token: str, task_id: str) -> Caller:
        """The caller a token stands for, if it is intact, unexpired and for `task_id`; else 401."""
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("invalid_token", "the access_token is not one this edge issued")
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[_ALGORITHM], audience=_AUDIENCE, options={"require": ["exp"]}
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("invalid_token", "the access_token has expired; ask for a new one") from None
        except jwt.PyJWTError:
            raise Unauthenticated("invalid_token", "the access_token is not one this edge issued") from None
        if claims.get("tsk") != task_id:
            raise Unauthenticated("invalid_token", "the access_token is for another task")
        try:
            tenant = parse_tenant(claims.get("tnt"))
            parse_task_id(task_id)
        except InvalidInput:
            raise Unauthenticated("invalid_token", "the access_token is not one this edge issued") from None
        return Caller(tenant=tenant, method="stream_token", subject=task_id, stream_task=task_id)
