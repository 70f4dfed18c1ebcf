"""Configuration of stream-edge: one typed object, read from the environment once in `main()`.

This is the only module of `stream_edge` that reads the environment (through `sluice.config.EnvReader`); the NATS
settings every service shares (`SLUICE_NATS_URL`, `SLUICE_REPLICAS`, ...) are `sluice.config.CommonConfig`'s.

| variable | meaning | default |
| --- | --- | --- |
| `SLUICE_HTTP_HOST`, `SLUICE_HTTP_PORT` | address to bind (`0` picks a free port) | `127.0.0.1`, `8080` |
| `SLUICE_HEARTBEAT_S` | idle heartbeat interval of event streams | `15` |
| `SLUICE_CORS_ORIGINS` | allowed browser origins, comma-separated (`*` allows any) | none |
| `SLUICE_MAX_BODY_BYTES` | largest request body accepted (larger → 413) | `262144` (256 KiB) |
| `SLUICE_MAX_STREAMS` | event streams one edge process serves at once (more → 503) | `10000` |
| `SLUICE_CLIENT_BUFFER_BYTES` | bytes buffered for one slow stream client before it is cut off | `1048576` |
| `SLUICE_SHUTDOWN_GRACE_S` | on SIGTERM, how long open streams get to end before the process exits | `5` |
| `SLUICE_PUBLIC_URL` | the edge's public base URL (for the A2A agent card) | `http://<host>:<port>` |
| `SLUICE_TENANT_MAX_ACTIVE` | a tenant's unfinished tasks at once, all replicas together (`0`: none) | `100` |
| `SLUICE_TENANT_RATE` | a tenant's task creations per minute, all replicas together (`0`: none) | `600` |
| `SLUICE_TENANT_MAX_STREAMS` | a tenant's open event streams, all replicas together (`0`: none) | `1000` |

Who may call (`SLUICE_AUTH`, keys, JWT, stream tokens, allowed hosts): `stream_edge.auth.settings.AuthSettings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sluice.active_tasks import MAX_LIMIT
from sluice.config import CommonConfig, EnvReader
from sluice.errors import InvalidInput
from stream_edge.auth.settings import AuthSettings

__all__ = ["EdgeSettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeSettings:
    """Everything stream-edge can be told; immutable once built."""

    host: str = "127.0.0.1"
    port: int = 8080
    heartbeat_s: float = 15.0
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 256 * 1024
    max_streams: int = 10_000
    client_buffer_bytes: int = 1_048_576
    shutdown_grace_s: float = 5.0
    public_url: str | None = None
    # The reconciler (stream_edge/reconciler.py): how often the lease holder sweeps (0: never), and how long a
    # record must be unchanged before it counts as stranded.
    reconcile_interval_s: float = 5.0
    reconcile_grace_s: float = 15.0
    # Per-tenant abuse limits (CONTRACT §8), counted in NATS across replicas; 0 turns one off.
    tenant_max_active: int = 100
    tenant_rate: int = 600
    tenant_max_streams: int = 1000
    auth: AuthSettings = field(default_factory=AuthSettings)
    common: CommonConfig = field(default_factory=CommonConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InvalidInput("invalid_config", f"SLUICE_HTTP_PORT must be 0-65535, got {self.port}")
        if self.heartbeat_s <= 0:
            raise InvalidInput("invalid_config", f"SLUICE_HEARTBEAT_S must be positive, got {self.heartbeat_s}")
        if self.max_body_bytes < 1024:
            raise InvalidInput(
                "invalid_config", f"SLUICE_MAX_BODY_BYTES must be at least 1024, got {self.max_body_bytes}"
            )
        if self.max_streams < 1:
            raise InvalidInput("invalid_config", f"SLUICE_MAX_STREAMS must be at least 1, got {self.max_streams}")
        if self.client_buffer_bytes < 4096:
            raise InvalidInput("invalid_config", "SLUICE_CLIENT_BUFFER_BYTES must be at least 4096")
        if self.shutdown_grace_s < 0:
            raise InvalidInput("invalid_config", "SLUICE_SHUTDOWN_GRACE_S must be >= 0")
        for name, value in (
            ("SLUICE_TENANT_MAX_ACTIVE", self.tenant_max_active),
            ("SLUICE_TENANT_RATE", self.tenant_rate),
            ("SLUICE_TENANT_MAX_STREAMS", self.tenant_max_streams),
        ):
            if value < 0:
                raise InvalidInput("invalid_config", f"{name} must be >= 0 (0: no limit), got {value}")
        if self.tenant_max_active > MAX_LIMIT:
            raise InvalidInput("invalid_config", f"SLUICE_TENANT_MAX_ACTIVE must be at most {MAX_LIMIT}")
        self.auth.check_bind(self.host)

    @property
    def base_url(self) -> str:
        """Where clients reach this edge: `SLUICE_PUBLIC_URL`, else the bound address."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def describe(self) -> dict[str, object]:
        """For the start-up log line (NATS credentials masked by CommonConfig)."""
        return {
            "host": self.host,
            "port": self.port,
            "heartbeat_s": self.heartbeat_s,
            "cors_origins": list(self.cors_origins),
            "max_body_bytes": self.max_body_bytes,
            "max_streams": self.max_streams,
            "client_buffer_bytes": self.client_buffer_bytes,
            "shutdown_grace_s": self.shutdown_grace_s,
            "public_url": self.public_url,
            "reconcile_interval_s": self.reconcile_interval_s,
            "reconcile_grace_s": self.reconcile_grace_s,
            "tenant_max_active": self.tenant_max_active,
            "tenant_rate": self.tenant_rate,
            "tenant_max_streams": self.tenant_max_streams,
            "auth": self.auth.describe(),
            "common": self.common.describe(),
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EdgeSettings:
        """Settings from `env` (default: the process environment); raises `InvalidInput` naming the variable."""
        r = EnvReader(env)
        return cls(
            host=r.text("SLUICE_HTTP_HOST", "127.0.0.1"),
            port=r.integer("SLUICE_HTTP_PORT", 8080),
            heartbeat_s=r.number("SLUICE_HEARTBEAT_S", 15.0),
            cors_origins=r.csv("SLUICE_CORS_ORIGINS"),
            max_body_bytes=r.integer("SLUICE_MAX_BODY_BYTES", 256 * 1024),
            max_streams=r.integer("SLUICE_MAX_STREAMS", 10_000),
            client_buffer_bytes=r.integer("SLUICE_CLIENT_BUFFER_BYTES", 1_048_576),
            shutdown_grace_s=r.number("SLUICE_SHUTDOWN_GRACE_S", 5.0),
            public_url=r.optional("SLUICE_PUBLIC_URL"),
            reconcile_interval_s=r.number("SLUICE_RECONCILE_INTERVAL_S", 5.0),
            reconcile_grace_s=r.number("SLUICE_RECONCILE_GRACE_S", 15.0),
            tenant_max_active=r.integer("SLUICE_TENANT_MAX_ACTIVE", 100),
            tenant_rate=r.integer("SLUICE_TENANT_RATE", 600),
            tenant_max_streams=r.integer("SLUICE_TENANT_MAX_STREAMS", 1000),
            auth=AuthSettings.from_reader(r),
            common=CommonConfig.from_env(env),
        )
