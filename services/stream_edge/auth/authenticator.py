"""Credentials → a `Caller`: an API key, an OIDC/JWT bearer token, or (on event streams only) a stream token.

    Authorization: Bearer sluice_...    an API key (`keys`): its digest looked up in the key ring
    Authorization: Bearer <JWT>         an OIDC token (`jwt`): PyJWT against the JWKS
    ?access_token=<stream token>        read one task's events (GET /v1/tasks/{id}/events, A2A subscribe)

With `SLUICE_AUTH=none` nothing is examined and every caller is the default tenant.
"""

from __future__ import annotations

import logging

from sluice.apikeys import KEY_PREFIX
from sluice.errors import Unauthenticated
from sluice.ids import DEFAULT_TENANT
from stream_edge.auth.caller import Caller
from stream_edge.auth.jwt_bearer import JwtVerifier
from stream_edge.auth.keyring import KeyRing
from stream_edge.auth.settings import AuthSettings
from stream_edge.auth.stream_tokens import StreamTokens

__all__ = ["ANONYMOUS", "Authenticator"]

log = logging.getLogger(__name__)

ANONYMOUS = Caller(tenant=DEFAULT_TENANT, method="none")
# Far above any API key or OIDC token; a bigger header is refused unread.
MAX_CREDENTIAL_CHARS = 8192


class Authenticator:
    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.required = settings.required
        self.keys: KeyRing | None = None
        if "keys" in settings.methods and settings.keys_file is not None:
            self.keys = KeyRing(settings.keys_file, recheck_s=settings.keys_recheck_s)
        self.jwt = JwtVerifier(settings) if "jwt" in settings.methods else None
        self.tokens = StreamTokens(settings.token_secret, settings.stream_token_ttl_s)

    async def start(self) -> None:
        if self.jwt is not None:
            await self.jwt.refresh()
        if self.required and not self.tokens.shared:
            log.warning("SLUICE_TOKEN_SECRET is not set: stream tokens hold only on this edge, until it restarts")

    async def bearer(self, authorization: str | None) -> Caller:
        """The caller an `Authorization` header names (401 if none, or not a valid one)."""
        if not self.required:
            return ANONYMOUS
        if authorization is None or not authorization.strip():
            raise Unauthenticated("unauthenticated", "this edge needs credentials: Authorization: Bearer <key>")
        if len(authorization) > MAX_CREDENTIAL_CHARS:
            raise Unauthenticated("invalid_token", "the Authorization header is too long to be a credential")
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated("invalid_token", "use Authorization: Bearer <key or token>")
        if credential.startswith(KEY_PREFIX) and self.keys is not None:
            line = self.keys.lookup(credential)
            if line is None:
                raise Unauthenticated("invalid_token", "this API key is not (or no longer) valid")
            return Caller(tenant=line.tenant, method="key", subject=line.key_id)
        if self.jwt is not None:
            return await self.jwt.verify(credential)
        raise Unauthenticated("invalid_token", "this API key is not (or no longer) valid")

    def stream(self, token: str, task_id: str) -> Caller:
        """The caller a stream token stands for, for the stream of `task_id` (401 if it is not valid for it)."""
        if not self.required:
            return ANONYMOUS
        return self.tokens.verify(token, task_id)
