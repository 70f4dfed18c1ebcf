"""Configuration of the tool-runner: one typed object, read from the environment once in `main()`.

This is the only module of `tool_runner` that reads the environment (through `sluice.config.EnvReader`);
the NATS settings every service shares (`SLUICE_NATS_URL`, `SLUICE_ACK_WAIT`, `SLUICE_MAX_DELIVER`, ...)
are `sluice.config.CommonConfig`'s.

| variable | meaning | default |
| --- | --- | --- |
| `SLUICE_TOOL_CONCURRENCY` | tool calls one process runs at once (it fetches no more than it has room for) | `8` |
| `SLUICE_TOOL_METRICS_HOST` | address of the Prometheus endpoint | `127.0.0.1` |
| `SLUICE_TOOL_METRICS_PORT` | port of the Prometheus endpoint (`/metrics`); `0` turns it off | `9465` |
| `SLUICE_TOOL_MAX_OUTPUT_BYTES` | when set, replaces every tool's own output limit (UTF-8 bytes) | each tool's |
| `SLUICE_TOOL_GRACE_S` | on SIGTERM, how long running calls may finish before they are handed back | `10` |
| `SLUICE_MCP_SERVERS` | a JSON file of MCP servers (`{"mcpServers": {...}}`) whose tools it also serves | none |
| `SLUICE_TOOL_RUNNER_ID` | this process's name in the catalog (`runners.tool-runner.<id>`) | `<hostname>-<pid>` |
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sluice.catalog.adverts import runner_id_token
from sluice.config import EnvReader
from sluice.errors import InvalidInput

__all__ = ["MIN_OUTPUT_BYTES", "ToolRunnerSettings"]

# Room for the truncation marker and a little of the output: a smaller limit would show the model nothing.
MIN_OUTPUT_BYTES = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolRunnerSettings:
    concurrency: int = 8
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9465
    max_output_bytes: int | None = None
    grace_s: float = 10.0
    # How long one fetch waits for work: also how soon a stop request is noticed by an idle runner.
    fetch_timeout_s: float = 1.0
    # The delay of a `nak` after a transient failure (NATS unavailable while publishing or reading the record).
    retry_delay_s: float = 2.0
    mcp_servers_file: Path | None = None
    runner_id: str = field(default_factory=lambda: runner_id_token(f"{socket.gethostname()}-{os.getpid()}"))

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise InvalidInput("invalid_config", f"SLUICE_TOOL_CONCURRENCY must be at least 1, got {self.concurrency}")
        if not 0 <= self.metrics_port <= 65535:
            raise InvalidInput("invalid_config", f"SLUICE_TOOL_METRICS_PORT must be 0-65535, got {self.metrics_port}")
        if self.max_output_bytes is not None and self.max_output_bytes < MIN_OUTPUT_BYTES:
            raise InvalidInput("invalid_config", f"SLUICE_TOOL_MAX_OUTPUT_BYTES must be at least {MIN_OUTPUT_BYTES}")
        if self.fetch_timeout_s <= 0 or self.retry_delay_s < 0 or self.grace_s < 0:
            raise InvalidInput("invalid_config", "fetch timeout must be positive, grace and retry delay >= 0")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ToolRunnerSettings:
        """Settings from `env` (default: the process environment); raises `InvalidInput` naming the variable."""
        r = EnvReader(env)
        max_output = r.optional("SLUICE_TOOL_MAX_OUTPUT_BYTES")
        return cls(
            concurrency=r.integer("SLUICE_TOOL_CONCURRENCY", 8, minimum=1),
            metrics_host=r.text("SLUICE_TOOL_METRICS_HOST", "127.0.0.1"),
            metrics_port=r.integer("SLUICE_TOOL_METRICS_PORT", 9465),
            max_output_bytes=None if max_output is None else r.integer("SLUICE_TOOL_MAX_OUTPUT_BYTES", 0),
            grace_s=r.number("SLUICE_TOOL_GRACE_S", 10.0),
            mcp_servers_file=Path(mcp) if (mcp := r.optional("SLUICE_MCP_SERVERS")) else None,
            runner_id=runner_id_token(r.text("SLUICE_TOOL_RUNNER_ID", f"{socket.gethostname()}-{os.getpid()}")),
        )
