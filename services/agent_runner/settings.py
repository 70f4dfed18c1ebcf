"""The agent-runner's configuration: one frozen object, read from the environment once in `main()`.

| variable | meaning | default |
| --- | --- | --- |
| `SLUICE_RUNNER_CONCURRENCY` | tasks one runner process holds at once | `4` |
| `SLUICE_RUNNER_ID` | this runner's name in `task.started.runner` | `<hostname>-<pid>` |
| `SLUICE_MODEL` | model name sent to the model server (agents.toml may override per agent) | `sluice-demo` |
| `OPENAI_BASE_URL` | OpenAI-compatible server | the demo model when `OPENAI_API_KEY` is unset |
| `OPENAI_API_KEY` | its key (printed masked) | `sluice-demo` for the demo model |
| `SLUICE_DEMO_LLM_HOST`, `SLUICE_DEMO_LLM_PORT` | where the demo model listens | `127.0.0.1`, `8081` |
| `SLUICE_DELTA_WINDOW_MS` | `llm.delta` coalescing window; `0` publishes every chunk | `25` |
| `SLUICE_MODEL_MAX_ATTEMPTS` | model calls per step before the task fails | `4` |
| `SLUICE_MODEL_BACKOFF_S`, `SLUICE_MODEL_BACKOFF_MAX_S` | retry backoff: first wait, cap | `0.5`, `8` |
| `SLUICE_MODEL_TIMEOUT_S` | longest silence of a model stream (and connect/first byte) before a retry | `60` |
| `SLUICE_TOOL_WAIT_MARGIN_S` | extra wait beyond a tool's deadline before the runner reports it timed out | `10` |
| `SLUICE_RUNNER_GRACE_S` | on SIGTERM: how long running steps may finish before tasks are handed back | `10` |
| `SLUICE_RUNNER_METRICS_PORT` | Prometheus `/metrics` port; `0` = off | `9464` |
| `SLUICE_RUNNER_METRICS_HOST` | address the metrics endpoint binds (default: all, for scrapers) | `0.0.0.0` |
| `SLUICE_AGENTS_FILE` | agents/crews TOML replacing the shipped `agents.toml` | the shipped file |

Plus the common `SLUICE_NATS_URL`, `SLUICE_ACK_WAIT` (in-progress heartbeats run at a quarter of it),
`SLUICE_MAX_DELIVER` (deliveries before a task is failed as poison), `SLUICE_LOG_*`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from sluice.config import CommonConfig, EnvReader

__all__ = ["DEFAULT_DELTA_WINDOW_MS", "DEMO_API_KEY", "RunnerSettings"]

# Chosen from bench/runner_pipeline.py (messages per 1,000 tokens by window and chunk rate): at a chunk every 10 ms
# (a fast model) 25 ms halves the llm.delta messages (15 ms: -32 %), at a chunk every 5 ms it cuts them by 75 %;
# a burst collapses to 2-3 messages. The cost is at most 25 ms before text shows (a 40 Hz frame), never on the
# first text of a burst. 50 ms would cut more but starts to look chunky.
DEFAULT_DELTA_WINDOW_MS = 25.0
DEMO_API_KEY = "sluice-demo"


@dataclass(frozen=True, kw_only=True)
class RunnerSettings:
    common: CommonConfig
    runner_id: str
    concurrency: int = 4
    model: str = "sluice-demo"
    openai_base_url: str = "http://127.0.0.1:8081/v1"
    openai_api_key: str = DEMO_API_KEY
    delta_window_s: float = DEFAULT_DELTA_WINDOW_MS / 1000
    model_max_attempts: int = 4
    model_backoff_s: float = 0.5
    model_backoff_max_s: float = 8.0
    model_timeout_s: float = 60.0
    tool_wait_margin_s: float = 10.0
    grace_s: float = 10.0
    metrics_port: int = 9464
    metrics_host: str = "0.0.0.0"
    agents_file: Path | None = None

    @property
    def heartbeat_s(self) -> float:
        """In-progress acks every quarter of the ack wait: three may be lost (or a stall of 3/4 of the ack wait
        pass) before the task is redelivered; the record is checked every third beat."""
        return max(0.1, min(self.common.ack_wait_s / 4, 10.0))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RunnerSettings:
        r = EnvReader(env)
        common = CommonConfig.from_env(env)
        api_key = r.optional("OPENAI_API_KEY")
        base_url = r.optional("OPENAI_BASE_URL")
        if base_url is None and api_key is None:
            host = r.text("SLUICE_DEMO_LLM_HOST", "127.0.0.1")
            port = r.integer("SLUICE_DEMO_LLM_PORT", 8081, minimum=1)
            base_url = f"http://{host}:{port}/v1"
        agents_file = r.optional("SLUICE_AGENTS_FILE")
        return cls(
            common=common,
            runner_id=r.text("SLUICE_RUNNER_ID", f"{socket.gethostname()}-{os.getpid()}"),
            concurrency=r.integer("SLUICE_RUNNER_CONCURRENCY", 4, minimum=1),
            model=r.text("SLUICE_MODEL", "sluice-demo"),
            openai_base_url=base_url or "https://api.openai.com/v1",
            openai_api_key=api_key or DEMO_API_KEY,
            delta_window_s=r.number("SLUICE_DELTA_WINDOW_MS", DEFAULT_DELTA_WINDOW_MS) / 1000,
            model_max_attempts=r.integer("SLUICE_MODEL_MAX_ATTEMPTS", 4, minimum=1),
            model_backoff_s=r.number("SLUICE_MODEL_BACKOFF_S", 0.5),
            model_backoff_max_s=r.number("SLUICE_MODEL_BACKOFF_MAX_S", 8.0),
            model_timeout_s=r.number("SLUICE_MODEL_TIMEOUT_S", 60.0, minimum=0.1),
            tool_wait_margin_s=r.number("SLUICE_TOOL_WAIT_MARGIN_S", 10.0),
            grace_s=r.number("SLUICE_RUNNER_GRACE_S", 10.0),
            metrics_port=r.integer("SLUICE_RUNNER_METRICS_PORT", 9464),
            metrics_host=r.text("SLUICE_RUNNER_METRICS_HOST", "0.0.0.0"),
            agents_file=Path(agents_file) if agents_file else None,
        )

    def describe(self) -> dict[str, object]:
        """For the start-up log line: the API key masked."""
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "common"}
        out["openai_api_key"] = DEMO_API_KEY if self.openai_api_key == DEMO_API_KEY else "***"
        out["agents_file"] = str(self.agents_file) if self.agents_file else "(shipped)"
        return out
