"""Configuration of the demo model server: one typed object, read from the environment once.

This is the only module of ``demo_llm`` that reads the environment (through :class:`sluice.config.EnvReader`).

| variable | meaning | default |
| --- | --- | --- |
| ``SLUICE_DEMO_LLM_HOST`` | address to bind | ``127.0.0.1`` |
| ``SLUICE_DEMO_LLM_PORT`` | port to bind (``0`` picks a free one) | ``8081`` |
| ``SLUICE_DEMO_LLM_TOKENS_PER_S`` | streaming rate in chunks per second; ``0`` streams without delay | ``0`` |
| ``SLUICE_LOG_LEVEL``, ``SLUICE_LOG_FORMAT`` | shared by every service | ``INFO``, ``json`` |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sluice.config import EnvReader
from sluice.errors import InvalidInput

__all__ = ["DEFAULT_MODEL", "DemoLLMSettings"]

DEFAULT_MODEL = "sluice-demo"


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoLLMSettings:
    """Everything the demo model server can be told; immutable once built."""

    host: str = "127.0.0.1"
    port: int = 8081
    tokens_per_s: float = 0.0
    model_name: str = DEFAULT_MODEL
    request_log_size: int = 1000
    retry_after_s: int = 1
    log_level: str = "INFO"
    log_format: str = "json"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InvalidInput("invalid_config", f"SLUICE_DEMO_LLM_PORT must be 0-65535, got {self.port}")
        if self.tokens_per_s < 0:
            raise InvalidInput("invalid_config", f"SLUICE_DEMO_LLM_TOKENS_PER_S must be >= 0, got {self.tokens_per_s}")
        if self.request_log_size < 1 or self.retry_after_s < 0:
            raise InvalidInput("invalid_config", "request_log_size must be >= 1 and retry_after_s >= 0")

    @property
    def chunk_delay_s(self) -> float:
        """Pause between streamed chunks implied by ``tokens_per_s`` (0 means none)."""
        return 0.0 if self.tokens_per_s == 0 else 1.0 / self.tokens_per_s

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DemoLLMSettings:
        """Settings from ``env`` (default: the process environment); raises ``InvalidInput`` naming the variable."""
        r = EnvReader(env)
        return cls(
            host=r.text("SLUICE_DEMO_LLM_HOST", "127.0.0.1"),
            port=r.integer("SLUICE_DEMO_LLM_PORT", 8081),
            tokens_per_s=r.number("SLUICE_DEMO_LLM_TOKENS_PER_S", 0.0),
            log_level=r.text("SLUICE_LOG_LEVEL", "INFO").upper(),
            log_format=r.text("SLUICE_LOG_FORMAT", "json"),
        )
