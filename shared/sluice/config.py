"""Configuration read from the environment (CONTRACT §7): the settings every service shares.

This module and the `settings.py` of each service are the only places that read `os.environ`; they read it once
at start and pass a frozen object down. Secrets print masked. The standard `OTEL_*` variables are left to the
OpenTelemetry SDK, which honours them as they are.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

from sluice.errors import InvalidInput

__all__ = ["CommonConfig", "EnvReader", "parse_duration", "parse_size"]

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
# 1 KiB = 1024 bytes; `K`, `KB` and `KiB` all mean it, as in nats-server's own configuration.
_UNIT_BYTES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "b": 1}
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def parse_duration(text: str) -> float:
    """`7d`, `24h`, `30m`, `90s`, `250ms` or plain seconds → seconds."""
    match = _DURATION_RE.fullmatch(text)
    if not match:
        raise InvalidInput("invalid_duration", f"{text!r} is not a duration like 7d, 24h, 30m, 90s")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def parse_size(text: str) -> int:
    """`4GiB`, `256MB`, `64k` or plain bytes → bytes (binary units)."""
    match = _SIZE_RE.fullmatch(text)
    if not match:
        raise InvalidInput("invalid_size", f"{text!r} is not a size like 4GiB, 256MiB, 64KiB")
    unit = (match.group(2) or "b")[0].lower()
    return int(float(match.group(1)) * _UNIT_BYTES[unit])


class EnvReader:
    """Typed reads of one environment mapping, with errors that name the variable."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env

    def text(self, name: str, default: str) -> str:
        value = self.env.get(name, "").strip()
        return value or default

    def optional(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise InvalidInput("invalid_config", f"{name}={raw!r} is not an integer") from None
        if value < minimum:
            raise InvalidInput("invalid_config", f"{name}={raw!r} must be at least {minimum}")
        return value

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise InvalidInput("invalid_config", f"{name}={raw!r} is not a number") from None
        if value < minimum:
            raise InvalidInput("invalid_config", f"{name}={raw!r} must be at least {minimum}")
        return value

    def duration(self, name: str, default: str) -> float:
        raw = self.text(name, default)
        try:
            return parse_duration(raw)
        except InvalidInput:
            raise InvalidInput("invalid_config", f"{name}={raw!r} is not a duration like 7d, 24h, 90s") from None

    def size(self, name: str, default: int, *, minimum: int = 1) -> int:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = parse_size(raw)
        except InvalidInput:
            raise InvalidInput("invalid_config", f"{name}={raw!r} is not a size like 4GiB, 256MiB, 64KiB") from None
        if value < minimum:
            raise InvalidInput("invalid_config", f"{name}={raw!r} must be at least {minimum} bytes")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in {"1", "true", "yes", "on"}:
            return True
        if raw in {"0", "false", "no", "off"}:
            return False
        raise InvalidInput("invalid_config", f"{name}={raw!r} is not a boolean")

    def csv(self, name: str) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.env.get(name, "").split(",") if p.strip())


@dataclass(frozen=True, kw_only=True)
class CommonConfig:
    """What every service needs to reach NATS and agree on the streams."""

    nats_urls: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    replicas: int = 1
    events_max_age_s: float = 7 * 86400.0
    # Every edge holds one consumer per active task on SLUICE_EVENTS; nats-server's own default caps a stream at
    # 1,000, which a few busy edges reach.
    events_max_consumers: int = 100_000
    duplicate_window_s: float = 120.0
    # Byte limits (sluice.limits): the event log, each work queue, the task records, the conversations. When one is
    # full, new writes are refused (503 storage_full); provisioning raises them in place, never lowers them itself.
    events_max_bytes: int = 4 * GiB
    queue_max_bytes: int = 256 * MiB
    tasks_max_bytes: int = GiB
    contexts_max_bytes: int = 256 * MiB
    # Ack wait of the work and tool consumers; runners extend it with in-progress acks while alive (a quarter of
    # it apart), so a dead runner's task or tool call is redelivered within this long: the failover time.
    ack_wait_s: float = 3.0
    max_deliver: int = 5
    log_level: str = "INFO"
    log_format: str = "json"
    # Who this process is to NATS (CONTRACT §8): an NKey seed file or a JWT creds file, and TLS. Paths, never the
    # secrets themselves, are what the config holds and logs.
    nats_nkey_file: str | None = None
    nats_creds_file: str | None = None
    nats_tls_ca: str | None = None
    nats_tls_cert: str | None = None
    nats_tls_key: str | None = None
    # A runner's catalog advertisement lives this long unless refreshed (it is refreshed every third of it), so
    # a runner that dies leaves the catalog within this time.
    catalog_ttl_s: float = 15.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CommonConfig:
        r = EnvReader(env)
        replicas = r.integer("SLUICE_REPLICAS", 1, minimum=1)
        if replicas not in (1, 3, 5):
            raise InvalidInput("invalid_config", "SLUICE_REPLICAS must be 1, 3 or 5")
        nkey_file, creds_file = r.optional("SLUICE_NATS_NKEY_FILE"), r.optional("SLUICE_NATS_CREDS")
        if nkey_file and creds_file:
            raise InvalidInput("invalid_config", "set SLUICE_NATS_NKEY_FILE or SLUICE_NATS_CREDS, not both")
        tls_cert, tls_key = r.optional("SLUICE_NATS_TLS_CERT"), r.optional("SLUICE_NATS_TLS_KEY")
        if bool(tls_cert) != bool(tls_key):
            raise InvalidInput("invalid_config", "SLUICE_NATS_TLS_CERT and SLUICE_NATS_TLS_KEY go together")
        events_max_age_s = r.duration("SLUICE_EVENTS_MAX_AGE", "7d")
        duplicate_window_s = cls.duplicate_window_s
        if events_max_age_s < duplicate_window_s:
            # JetStream refuses a duplicate window longer than the retention, and a shorter window would let a
            # retried publish through twice: say so once instead of every service failing at start.
            raise InvalidInput(
                "invalid_config",
                f"SLUICE_EVENTS_MAX_AGE={r.text('SLUICE_EVENTS_MAX_AGE', '7d')} is shorter than the "
                f"{duplicate_window_s:.0f}s duplicate window that makes retried publishes safe; keep events at "
                f"least {duplicate_window_s:.0f}s",
            )
        return cls(
            nats_urls=r.csv("SLUICE_NATS_URL") or ("nats://127.0.0.1:4222",),
            replicas=replicas,
            events_max_age_s=events_max_age_s,
            events_max_consumers=r.integer("SLUICE_EVENTS_MAX_CONSUMERS", 100_000, minimum=1),
            events_max_bytes=r.size("SLUICE_EVENTS_MAX_BYTES", cls.events_max_bytes, minimum=MiB),
            queue_max_bytes=r.size("SLUICE_QUEUE_MAX_BYTES", cls.queue_max_bytes, minimum=MiB),
            tasks_max_bytes=r.size("SLUICE_TASKS_MAX_BYTES", cls.tasks_max_bytes, minimum=MiB),
            contexts_max_bytes=r.size("SLUICE_CONTEXTS_MAX_BYTES", cls.contexts_max_bytes, minimum=MiB),
            ack_wait_s=r.duration("SLUICE_ACK_WAIT", "3s"),
            max_deliver=r.integer("SLUICE_MAX_DELIVER", 5, minimum=1),
            log_level=r.text("SLUICE_LOG_LEVEL", "INFO").upper(),
            log_format=r.text("SLUICE_LOG_FORMAT", "json"),
            nats_nkey_file=nkey_file,
            nats_creds_file=creds_file,
            nats_tls_ca=r.optional("SLUICE_NATS_TLS_CA"),
            nats_tls_cert=tls_cert,
            nats_tls_key=tls_key,
            catalog_ttl_s=r.duration("SLUICE_CATALOG_TTL", "15s"),
        )

    def describe(self) -> dict[str, object]:
        """For the start-up log line: credentials in NATS URLs are masked."""
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["nats_urls"] = [re.sub(r"//[^@/]*@", "//***@", u) for u in self.nats_urls]
        return out
