"""Configuration of the demo model server: one typed object, read from the environment once.

This is the only module of ``demo_llm`` that reads the environment.

| variable | meaning | default |
| --- | --- | --- |
| ``SLUICE_DEMO_LLM_HOST`` | address to bind | ``127.0.0.1`` |
| ``SLUICE_DEMO_LLM_PORT`` | port to bind (``0`` picks a free one) | ``8081`` |
| ``SLUICE_DEMO_LLM_TOKENS_PER_S`` | streaming rate; ``0`` streams without delay | ``0`` |
| ``SLUICE_DEMO_LLM_LOG_LEVEL`` | stdlib logging level name | ``info`` |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["DEFAULT_MODEL", "DemoLLMSettings", "SettingsError"]

DEFAULT_MODEL = "sluice-demo"

_PREFIX = "SLUICE_DEMO_LLM_"
_Num = TypeVar("_Num", int, float)
_LOG_LEVELS = frozenset({"critical", "error", "warning", "info", "debug"})


class SettingsError(ValueError):
    """An environment variable has a value the demo model cannot use."""


@dataclass(frozen=True, slots=True)
class DemoLLMSettings:
    """Everything the demo model server can be told; immutable once built."""

    host: str = "127.0.0.1"
    port: int = 8081
    tokens_per_s: float = 0.0
    log_level: str = "info"
    model_name: str = DEFAULT_MODEL
    request_log_size: int = 1000
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"{_PREFIX}PORT must be between 0 and 65535, got {self.port}")
        if self.tokens_per_s < 0:
            raise SettingsError(f"{_PREFIX}TOKENS_PER_S must be >= 0, got {self.tokens_per_s}")
        if self.log_level not in _LOG_LEVELS:
            raise SettingsError(f"{_PREFIX}LOG_LEVEL must be one of {sorted(_LOG_LEVELS)}, got {self.log_level!r}")
        if self.request_log_size < 1:
            raise SettingsError(f"request_log_size must be >= 1, got {self.request_log_size}")

    @property
    def chunk_delay_s(self) -> float:
        """Pause between streamed chunks implied by ``tokens_per_s`` (0 means none)."""
        return 0.0 if self.tokens_per_s == 0 else 1.0 / self.tokens_per_s

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DemoLLMSettings:
        """Build settings from ``environ`` (default: the process environment); unset keys keep defaults."""
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            host=env.get(f"{_PREFIX}HOST", defaults.host).strip() or defaults.host,
            port=_parse(env, "PORT", int, defaults.port),
            tokens_per_s=_parse(env, "TOKENS_PER_S", float, defaults.tokens_per_s),
            log_level=env.get(f"{_PREFIX}LOG_LEVEL", defaults.log_level).strip().lower(),
        )


def _parse(env: Mapping[str, str], name: str, kind: type[_Num], default: _Num) -> _Num:
    raw = env.get(f"{_PREFIX}{name}", "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{_PREFIX}{name} must be {kind.__name__}, got {raw!r}") from None
