"""OIDC / JWT bearer tokens, verified by PyJWT against a JWKS (a file, or an https URL), cached.

An https JWKS is fetched with httpx, its server verified against `SLUICE_JWT_JWKS_CA` when that is set (a private
CA of the identity provider), else against httpx's default store (certifi, or `SSL_CERT_FILE` / `SSL_CERT_DIR`).

A token is taken apart only by PyJWT: its header names the algorithm (one of `SLUICE_JWT_ALGORITHMS` — never
`none`, never HMAC) and the key id; the signature, `exp`, `nbf`, `iss` and `aud` are checked by `jwt.decode`.
A `kid` the cached key set does not hold makes the verifier read the JWKS again (an identity provider rotating its
keys), at most once per `min_refresh_s` however many such tokens arrive, so a flood of made-up key ids cannot
hammer the provider. The tenant is the claim `SLUICE_JWT_TENANT_CLAIM`, and must be a valid tenant name.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from sluice.errors import InvalidInput, Unauthenticated
from sluice.ids import parse_tenant
from stream_edge.auth.caller import Caller
from stream_edge.auth.settings import AuthSettings

__all__ = ["JwtVerifier"]

log = logging.getLogger(__name__)

_FETCH_TIMEOUT_S = 5.0
_LEEWAY_S = 30


def _bad(message: str) -> Unauthenticated:
    return Unauthenticated("invalid_token", message)


def _trusting(ca_file: Path) -> ssl.SSLContext:
    """A TLS context that trusts exactly the CAs of `ca_file`; read at start, so a bad file stops the edge."""
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        message = f"SLUICE_JWT_JWKS_CA: cannot use {ca_file} ({type(exc).__name__})"
        raise InvalidInput("invalid_config", message) from None


class JwtVerifier:
    def __init__(self, settings: AuthSettings, *, min_refresh_s: float = 30.0) -> None:
        assert settings.jwt_jwks and settings.jwt_issuer and settings.jwt_audience
        self.source = settings.jwt_jwks
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.tenant_claim = settings.jwt_tenant_claim
        self.algorithms = list(settings.jwt_algorithms)
        self.min_refresh_s = min_refresh_s
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        # Plain http is refused by `AuthSettings` unless it goes to a loopback address.
        self._is_url = urlsplit(self.source).scheme in ("https", "http")
        self._verify: ssl.SSLContext | bool = _trusting(settings.jwt_jwks_ca) if settings.jwt_jwks_ca else True

    async def verify(self, token: str) -> Caller:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _bad("the bearer token is neither an API key nor a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise _bad(f"JWT algorithm {str(algorithm)[:16]!r} is not accepted")
        kid = header.get("kid")
        key = await self._key(kid if isinstance(kid, str) else None)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=_LEEWAY_S,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise _bad("the JWT has expired") from None
        except jwt.ImmatureSignatureError:
            raise _bad("the JWT is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise _bad("the JWT is for another audience") from None
        except jwt.InvalidIssuerError:
            raise _bad("the JWT is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise _bad("the JWT signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise _bad(f"the JWT is not valid ({type(exc).__name__})") from None
        try:
            tenant = parse_tenant(claims.get(self.tenant_claim))
        except InvalidInput:
            raise _bad(f"the JWT has no valid {self.tenant_claim!r} claim") from None
        subject = claims.get("sub")
        return Caller(tenant=tenant, method="jwt", subject=subject[:128] if isinstance(subject, str) else "")

    async def _key(self, kid: str | None) -> jwt.PyJWK:
        key = self._pick(kid)
        if key is not None:
            return key
        async with self._lock:  # one refresh for everyone waiting on the same unknown kid
            key = self._pick(kid)
            if key is None and time.monotonic() - self._fetched_at >= self.min_refresh_s:
                await self.refresh()
                key = self._pick(kid)
        if key is None:
            raise _bad("the JWT is signed by a key this edge does not know")
        return key

    def _pick(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def refresh(self) -> None:
        """Reads the JWKS again; on failure keeps the keys it had (logged), so an outage of the provider does not
        lock out tokens signed by keys already known."""
        self._fetched_at = time.monotonic()
        try:
            document = await self._fetch()
            keys = jwt.PyJWKSet.from_dict(document).keys
        except (OSError, httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.error("could not read the JWKS %s: %s", self.source, type(exc).__name__)
            return
        self._keys = {key.key_id: key for key in keys}
        log.info("JWKS read", extra={"keys": len(self._keys)})

    async def _fetch(self) -> dict[str, Any]:
        if not self._is_url:
            loaded: dict[str, Any] = json.loads(await asyncio.to_thread(Path(self.source).read_text))
            return loaded
        async with httpx.AsyncClient(timeout=_FETCH_TIMEOUT_S, follow_redirects=False, verify=self._verify) as client:
            response = await client.get(self.source, headers={"Accept": "application/json"})
            response.raise_for_status()
            fetched: dict[str, Any] = response.json()
            return fetched
