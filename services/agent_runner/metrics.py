"""Prometheus metrics of an agent-runner, served on SLUICE_RUNNER_METRICS_PORT.

Names follow the OpenTelemetry GenAI client conventions where they exist (`gen_ai_client_token_usage`,
`gen_ai_client_operation_duration_seconds`); the rest are `sluice_runner_*`. Defined once per process.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

__all__ = [
    "ATTEMPTS",
    "MODEL_DURATION",
    "MODEL_RETRIES",
    "TASKS_CANCELED",
    "TASKS_COMPLETED",
    "TASKS_FAILED",
    "TASKS_IN_FLIGHT",
    "TOKEN_USAGE",
    "TOOL_CALLS",
    "serve_metrics",
]

log = logging.getLogger(__name__)

TASKS_IN_FLIGHT = Gauge("sluice_runner_tasks_in_flight", "Tasks this runner holds right now")
TASKS_COMPLETED = Counter("sluice_runner_tasks_completed_total", "Tasks this runner completed")
TASKS_FAILED = Counter("sluice_runner_tasks_failed_total", "Tasks this runner failed, by error code", ["code"])
TASKS_CANCELED = Counter("sluice_runner_tasks_canceled_total", "Tasks this runner ended as canceled")
ATTEMPTS = Counter(
    "sluice_runner_task_attempts_total",
    "Deliveries of work this runner ran, by how they ended",
    ["outcome"],  # completed, failed, canceled, paused, handed_back
)
TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "Tokens used per model call",
    ["gen_ai_operation_name", "gen_ai_request_model", "gen_ai_token_type"],
    buckets=(1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144),
)
MODEL_DURATION = Histogram(
    "gen_ai_client_operation_duration_seconds",
    "Duration of model calls",
    ["gen_ai_operation_name", "gen_ai_request_model", "error_type"],
    buckets=(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92),
)
MODEL_RETRIES = Counter("sluice_runner_model_retries_total", "Model calls retried, by reason", ["reason"])
TOOL_CALLS = Counter("sluice_runner_tool_calls_total", "Tool calls completed, by tool and result", ["tool", "ok"])


def serve_metrics(port: int, host: str = "0.0.0.0") -> bool:
    """Starts the /metrics endpoint (a daemon thread); False if the port is taken, which is logged."""
    if port == 0:
        return False
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.error("metrics port %d unavailable: %s; running without /metrics", port, exc)
        return False
    log.info("metrics on :%d/metrics", port)
    return True
