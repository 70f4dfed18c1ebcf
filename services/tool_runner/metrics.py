"""Prometheus metrics of the tool-runner, in a registry of their own (so tests can build as many as they like).

    sluice_tool_calls_total{tool, outcome}     every tool message settled: an execution `Outcome`, or why none
                                               ran (`task_terminal`, `task_missing`, `duplicate`, `retry`,
                                               `undecodable`)
    sluice_tool_call_duration_seconds{tool}    time inside the tool, for calls that ran
    sluice_tool_calls_in_flight                calls being handled right now
    sluice_tool_nats_connected, sluice_tool_nats_reconnects_total   the NATS connection (`watch_connection`)

`tool` is the tool's name if it is registered, else `unknown`: names come from a model and must not mint
label values.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from sluice.bus import ConnectionState
from sluice.telemetry import NatsConnectionCollector

from .tools import REGISTRY

__all__ = ["ToolMetrics", "tool_label"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def tool_label(name: str) -> str:
    return name if name in REGISTRY else "unknown"


class ToolMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.calls = Counter(
            "sluice_tool_calls", "Tool messages settled, by tool and outcome", ["tool", "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.duration = Histogram(
            "sluice_tool_call_duration_seconds", "Time spent running a tool", ["tool"],
            buckets=_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.in_flight = Gauge("sluice_tool_calls_in_flight", "Tool calls being handled", registry=self.registry)

    def watch_connection(self, state: ConnectionState) -> None:
        """Reports the process's NATS connection, read at scrape time."""
        self.registry.register(NatsConnectionCollector(state, prefix="sluice_tool"))

    def settled(self, name: str, outcome: str) -> None:
        self.calls.labels(tool_label(name), outcome).inc()

    def ran(self, name: str, seconds: float) -> None:
        self.duration.labels(tool_label(name)).observe(seconds)

    def count(self, name: str, outcome: str) -> float:
        """The current value of one counter: what tests wait on."""
        labels = {"tool": tool_label(name), "outcome": outcome}
        return self.registry.get_sample_value("sluice_tool_calls_total", labels) or 0.0

    def serve(self, host: str, port: int) -> Callable[[], None]:
        """Serves `/metrics` on a daemon thread; returns the function that stops it."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

        return stop
