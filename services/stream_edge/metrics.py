"""Prometheus metrics of stream-edge, in a registry per app (tests build as many apps as they like).

    sluice_edge_http_requests_total{method, route, status}   every HTTP response; `route` is the route's template
                                                              (`/v1/tasks/{task_id}`), `unrouted` when none matched
    sluice_edge_active_streams, sluice_edge_active_feeds      open client streams; live task feeds behind them
    sluice_edge_events_delivered_total                        events written to clients
    sluice_edge_catchup_replays_total                         streams that replayed history before going live
    sluice_edge_slow_clients_cut_total                        clients cut off for falling too far behind
    sluice_edge_gaps_served_total                             streams that began with a stream.gap
    sluice_edge_streams_opened_total, sluice_edge_feeds_created_total
    sluice_edge_stream_<name>                                 any other figure the hub reports
    sluice_edge_nats_connected, sluice_edge_nats_reconnects_total

The stream figures are read from `hub.stats` at scrape time by a custom collector: the hub keeps plain counters
and pays nothing per event for metrics.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from stream_edge.runtime import EdgeRuntime

__all__ = ["CONTENT_TYPE_LATEST", "EdgeMetrics", "HttpMetricsMiddleware"]

# hub.stats key → (metric name, help, is a counter)
_KNOWN_STATS: dict[str, tuple[str, str, bool]] = {
    "active_streams": ("sluice_edge_active_streams", "Client event streams open now", False),
    "active_feeds": ("sluice_edge_active_feeds", "Live task feeds shared by the open streams", False),
    "events_delivered": ("sluice_edge_events_delivered", "Events written to clients", True),
    "catchup_replays": ("sluice_edge_catchup_replays", "Streams that replayed history from JetStream", True),
    "slow_clients_cut": ("sluice_edge_slow_clients_cut", "Clients cut off for falling too far behind", True),
    "gaps_served": ("sluice_edge_gaps_served", "Streams that started with a stream.gap event", True),
    "streams_opened": ("sluice_edge_streams_opened", "Client event streams opened", True),
    "feeds_created": ("sluice_edge_feeds_created", "Live task feeds created", True),
}
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_NAME_RE = re.compile(r"[^a-zA-Z0-9_]")


class _RuntimeCollector(Collector):
    """Reads the hub's counters and the NATS connection state when Prometheus scrapes."""

    def __init__(self) -> None:
        self.runtime: EdgeRuntime | None = None

    def collect(self) -> Iterator[Metric]:
        runtime = self.runtime
        if runtime is None:
            return
        for key, value in sorted(runtime.hub.stats.items()):
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            name, help_text, counter = _KNOWN_STATS.get(
                key, (f"sluice_edge_stream_{_NAME_RE.sub('_', key)}", f"Stream hub figure {key}", False)
            )
            family = CounterMetricFamily if counter else GaugeMetricFamily
            yield family(name, help_text, value=float(value))
        state = runtime.bus.state
        yield GaugeMetricFamily("sluice_edge_nats_connected", "1 while connected to NATS", value=float(state.connected))
        yield CounterMetricFamily("sluice_edge_nats_reconnects", "NATS reconnections", value=float(state.reconnects))


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sluice_edge_http_requests", "HTTP responses by method, route template and status",
            ["method", "route", "status"], registry=self.registry,
        )  # fmt: skip
        self._runtime_collector = _RuntimeCollector()
        self.registry.register(self._runtime_collector)

    def bind(self, runtime: EdgeRuntime | None) -> None:
        self._runtime_collector.runtime = runtime

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HttpMetricsMiddleware:
    """Counts responses by route template (never by raw path: ids must not mint label values)."""

    def __init__(self, app: ASGIApp, metrics: EdgeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counted = False

        def count(status: int) -> None:
            nonlocal counted
            if not counted:
                counted = True
                route = getattr(scope.get("route"), "path", None) or "unrouted"
                method = scope["method"] if scope["method"] in _METHODS else "other"
                self.metrics.requests.labels(method, route, str(status)).inc()

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                count(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        except Exception:
            count(500)
            raise
