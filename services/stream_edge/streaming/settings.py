"""The stream hub's settings: one frozen object, filled from the environment by the edge's `settings.py`."""

from __future__ import annotations

from dataclasses import dataclass

from sluice.errors import InvalidInput

__all__ = ["StreamSettings"]


@dataclass(frozen=True)
class StreamSettings:
    heartbeat_s: float = 15.0  # SLUICE_HEARTBEAT_S: idle keep-alive interval (CONTRACT §5: at least every 15 s)
    retry_ms: int = 2000  # the SSE `retry:` a client waits before reconnecting
    client_buffer_bytes: int = 1_048_576  # how far a client may fall behind its task's feed before it is cut off
    max_streams: int = 10_000  # open streams per process; beyond it `open` raises Unavailable
    shutdown_grace_s: float = 5.0  # `stop()` ends streams within this time, then cuts what is left

    def __post_init__(self) -> None:
        if self.heartbeat_s <= 0:
            raise InvalidInput("invalid_config", "heartbeat_s must be positive")
        if self.retry_ms < 0:
            raise InvalidInput("invalid_config", "retry_ms must not be negative")
        if self.client_buffer_bytes < 1024:
            raise InvalidInput("invalid_config", "client_buffer_bytes must be at least 1024")
        if self.max_streams < 1:
            raise InvalidInput("invalid_config", "max_streams must be at least 1")
        if self.shutdown_grace_s < 0:
            raise InvalidInput("invalid_config", "shutdown_grace_s must not be negative")
