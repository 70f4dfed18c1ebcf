"""Who may call the edge, as configured (CONTRACT §8); part of `EdgeSettings`, read by its `from_env`.

| variable | meaning | default |
| --- | --- | --- |
| `SLUICE_AUTH` | accepted credentials: `keys`, `jwt`, `keys,jwt`, or `none` | what is configured below, else `none` |
| `SLUICE_AUTH_ALLOW_NONE` | `1`: an edge on a non-loopback address may run unauthenticated | off (it refuses) |
| `SLUICE_API_KEYS_FILE` | the API key hashes (`sluice keys add`), re-read when it changes | none |
| `SLUICE_JWT_JWKS` | the JWT signing keys: a JWKS file, or an https URL | none |
| `SLUICE_JWT_JWKS_CA` | a CA bundle (PEM) that verifies an https JWKS server, instead of the default store | none |
| `SLUICE_JWT_ISSUER`, `SLUICE_JWT_AUDIENCE` | the `iss` and `aud` a token must carry | none (required by `jwt`) |
| `SLUICE_JWT_TENANT_CLAIM` | the claim that names the caller's tenant | `tenant` |
| `SLUICE_JWT_ALGORITHMS` | accepted signature algorithms (asymmetric only) | `RS256,ES256,EdDSA,PS256` |
| `SLUICE_TOKEN_SECRET` | the secret the replicas share to sign stream tokens (≥ 32 characters) | random per process |
| `SLUICE_TOKEN_SECRET_FILE` | a file holding that secret (for container secrets) | none |
| `SLUICE_STREAM_TOKEN_TTL_S` | how long a stream token lives | `3600` |
| `SLUICE_ALLOWED_HOSTS` | `Host` names the edge answers (comma-separated) besides the loopback names | none |
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sluice.config import EnvReader
from sluice.errors import InvalidInput

__all__ = ["ASYMMETRIC_ALGORITHMS", "LOOPBACK_NAMES", "AuthSettings", "is_loopback"]

# Never `none` and never HMAC: a JWT verified with a shared secret could be minted by anyone who verifies.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
_METHODS = frozenset({"keys", "jwt"})
_DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA", "PS256")
_MIN_SECRET = 32


def is_loopback(host: str) -> bool:
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _secret_file(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text().strip() or None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            "invalid_config", f"SLUICE_TOKEN_SECRET_FILE: cannot read {path} ({type(exc).__name__})"
        ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSettings:
    methods: frozenset[str] = frozenset()  # empty: `none`
    allow_none: bool = False
    keys_file: Path | None = None
    keys_recheck_s: float = 1.0
    jwt_jwks: str | None = None
    jwt_jwks_ca: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_tenant_claim: str = "tenant"
    jwt_algorithms: tuple[str, ...] = _DEFAULT_ALGORITHMS
    token_secret: str | None = None
    stream_token_ttl_s: int = 3600
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if unknown := self.methods - _METHODS:
            raise InvalidInput("invalid_config", f"SLUICE_AUTH: unknown method(s) {sorted(unknown)}; use keys, jwt")
        if "keys" in self.methods and self.keys_file is None:
            raise InvalidInput("invalid_config", "SLUICE_AUTH=keys needs SLUICE_API_KEYS_FILE")
        if "jwt" in self.methods and not (self.jwt_jwks and self.jwt_issuer and self.jwt_audience):
            raise InvalidInput(
                "invalid_config", "SLUICE_AUTH=jwt needs SLUICE_JWT_JWKS, SLUICE_JWT_ISSUER and SLUICE_JWT_AUDIENCE"
            )
        self._check_jwks_source()
        if bad := set(self.jwt_algorithms) - ASYMMETRIC_ALGORITHMS:
            raise InvalidInput("invalid_config", f"SLUICE_JWT_ALGORITHMS: {sorted(bad)} are not asymmetric algorithms")
        if self.token_secret is not None and len(self.token_secret) < _MIN_SECRET:
            raise InvalidInput("invalid_config", f"SLUICE_TOKEN_SECRET must be at least {_MIN_SECRET} characters")
        if self.stream_token_ttl_s < 1:
            raise InvalidInput("invalid_config", "SLUICE_STREAM_TOKEN_TTL_S must be at least 1")

    def _check_jwks_source(self) -> None:
        """The signing keys decide who anyone is: they come from a file or over https. Plain http only to a loopback
        address (a provider or sidecar on the same host), where nobody on the network can swap the keys."""
        url = urlsplit(self.jwt_jwks or "")
        if url.scheme == "http" and not is_loopback(url.hostname or ""):
            raise InvalidInput(
                "invalid_config",
                "SLUICE_JWT_JWKS must be a file or an https URL (plain http only to a loopback address)",
            )
        if self.jwt_jwks_ca is not None and url.scheme != "https":
            raise InvalidInput("invalid_config", "SLUICE_JWT_JWKS_CA is for an https SLUICE_JWT_JWKS")

    @property
    def required(self) -> bool:
        return bool(self.methods)

    def check_bind(self, host: str) -> None:
        """An edge anyone can reach does not run unauthenticated by accident."""
        if not self.required and not is_loopback(host) and not self.allow_none:
            raise InvalidInput(
                "unauthenticated_bind",
                f"refusing to serve {host} without authentication: set SLUICE_AUTH=keys (SLUICE_API_KEYS_FILE) or "
                "jwt (SLUICE_JWT_*), or SLUICE_AUTH_ALLOW_NONE=1 if an open edge is really intended",
            )

    def describe(self) -> dict[str, object]:
        """For the start-up log line: which methods and where from, never a secret."""
        return {
            "methods": sorted(self.methods) or ["none"],
            "keys_file": str(self.keys_file) if self.keys_file else None,
            "jwt_jwks": self.jwt_jwks,
            "jwt_jwks_ca": str(self.jwt_jwks_ca) if self.jwt_jwks_ca else None,
            "jwt_issuer": self.jwt_issuer,
            "jwt_audience": self.jwt_audience,
            "token_secret": "(set)" if self.token_secret else "(random per process)",
            "stream_token_ttl_s": self.stream_token_ttl_s,
            "allowed_hosts": list(self.allowed_hosts),
        }

    @classmethod
    def from_reader(cls, r: EnvReader) -> AuthSettings:
        keys_file = r.optional("SLUICE_API_KEYS_FILE")
        jwks = r.optional("SLUICE_JWT_JWKS")
        raw = r.optional("SLUICE_AUTH")
        if raw is None:  # what is configured; nothing configured is `none`
            methods = frozenset(m for m, given in (("keys", keys_file), ("jwt", jwks)) if given)
        else:
            named = frozenset(p.strip().lower() for p in raw.split(",") if p.strip())
            methods = frozenset() if named == {"none"} else named
        algorithms = r.csv("SLUICE_JWT_ALGORITHMS")
        return cls(
            methods=methods,
            allow_none=r.flag("SLUICE_AUTH_ALLOW_NONE", False),
            keys_file=Path(keys_file) if keys_file else None,
            jwt_jwks=jwks,
            jwt_jwks_ca=Path(ca) if (ca := r.optional("SLUICE_JWT_JWKS_CA")) else None,
            jwt_issuer=r.optional("SLUICE_JWT_ISSUER"),
            jwt_audience=r.optional("SLUICE_JWT_AUDIENCE"),
            jwt_tenant_claim=r.text("SLUICE_JWT_TENANT_CLAIM", "tenant"),
            jwt_algorithms=algorithms or _DEFAULT_ALGORITHMS,
            token_secret=r.optional("SLUICE_TOKEN_SECRET") or _secret_file(r.optional("SLUICE_TOKEN_SECRET_FILE")),
            stream_token_ttl_s=r.integer("SLUICE_STREAM_TOKEN_TTL_S", 3600, minimum=1),
            allowed_hosts=tuple(h.lower() for h in r.csv("SLUICE_ALLOWED_HOSTS")),
        )
