"""OpenTelemetry for every Sluice service: one setup call, configured only by the standard `OTEL_*` variables.

A tracer provider is always installed, so trace ids exist and travel with every message and event; spans are
*exported* only when `OTEL_TRACES_EXPORTER` names an exporter or `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set. With neither, no span processor and no exporter exist, so nothing
is queued and no connection is ever attempted.

Read here (from the mapping given, `os.environ` by default):

| variable | effect |
| --- | --- |
| `OTEL_SDK_DISABLED=true` | export nothing (trace ids are still minted and propagated) |
| `OTEL_SERVICE_NAME` | `service.name` (default `sluice-<service>`) |
| `OTEL_RESOURCE_ATTRIBUTES` | extra resource attributes, `k=v,k2=v2` |
| `OTEL_TRACES_EXPORTER` | `otlp` (default when an endpoint is set), `console`, `none`; comma-separated |
| `OTEL_EXPORTER_OTLP_PROTOCOL` / `_TRACES_PROTOCOL` | `http/protobuf` (default) or `grpc` |
| `OTEL_EXPORTER_OTLP_ENDPOINT` / `_TRACES_ENDPOINT` | collector address; for HTTP the base gets `/v1/traces` |
| `OTEL_EXPORTER_OTLP_INSECURE` | gRPC without TLS when the endpoint has no scheme |
| `OTEL_TRACES_SAMPLER`, `_ARG` | `parentbased_always_on` (default), `always_on`, `always_off`, `traceidratio`, … |
| `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` | `true` puts prompts and completions on `chat` spans |

The SDK itself reads the rest from the process environment: `OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`,
`_COMPRESSION`, certificates, and the batch processor's `OTEL_BSP_*`. `Telemetry.shutdown()` flushes what is
queued; `run_service` calls it after SIGTERM/SIGINT, and so must any service with its own main.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["NatsConnectionCollector", "Telemetry", "capture_message_content", "exporting", "setup_telemetry"]

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_capture_content = False
_exporting = False


class _ConnectionState(Protocol):
    """What the collector reads of `sluice.bus.ConnectionState`."""

    connected: bool
    reconnects: int


def capture_message_content() -> bool:
    """Whether GenAI spans may carry prompts and completions (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT)."""
    return _capture_content


def exporting() -> bool:
    """Whether this process exports spans: work done only for the trace (an extra read for a link) can be skipped."""
    return _exporting


@dataclass
class Telemetry:
    provider: TracerProvider
    exporters: list[str] = field(default_factory=list)
    capture_content: bool = False
    _closed: bool = False

    @property
    def exporting(self) -> bool:
        return bool(self.exporters)

    def flush(self, timeout_ms: int = 5000) -> bool:
        return bool(self.provider.force_flush(timeout_ms))

    def shutdown(self) -> None:
        """Flushes queued spans to the exporters and stops them; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.provider.shutdown()


class NatsConnectionCollector(Collector):
    """Prometheus figures of a process's NATS connection, read from `Bus.state` at scrape time.

    `<prefix>_nats_connected` (1 while connected) and `<prefix>_nats_reconnects_total`. Register it in the
    service's registry: `registry.register(NatsConnectionCollector(bus.state))`.
    """

    def __init__(self, state: _ConnectionState, prefix: str = "sluice") -> None:
        self.state = state
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            f"{self.prefix}_nats_connected", "1 while connected to NATS", value=float(self.state.connected)
        )
        yield CounterMetricFamily(
            f"{self.prefix}_nats_reconnects", "NATS reconnections", value=float(self.state.reconnects)
        )


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in _TRUE


def _sampler(env: Mapping[str, str]) -> Sampler:
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    raw_arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    try:
        ratio = min(max(float(raw_arg), 0.0), 1.0) if raw_arg else 1.0
    except ValueError:
        log.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a number; using 1.0", raw_arg)
        ratio = 1.0
    roots: dict[str, Sampler] = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(ratio),
    }
    if name in roots:
        return roots[name]
    if name.startswith("parentbased_") and name.removeprefix("parentbased_") in roots:
        return ParentBased(roots[name.removeprefix("parentbased_")])
    log.warning("OTEL_TRACES_SAMPLER=%r is not supported; using parentbased_always_on", name)
    return ParentBased(ALWAYS_ON)


def _resource(service: str, env: Mapping[str, str]) -> Resource:
    attrs: dict[str, str] = {}
    for pair in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            attrs[key.strip()] = unquote(value.strip())
    attrs[SERVICE_NAME] = env.get("OTEL_SERVICE_NAME", "").strip() or attrs.get(SERVICE_NAME) or f"sluice-{service}"
    attrs.setdefault("service.namespace", "sluice")
    # Replicas share a service name; the instance id tells their spans apart.
    attrs.setdefault("service.instance.id", f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    return Resource.create(attrs)


def _signal(env: Mapping[str, str], name: str, default: str = "") -> str:
    """`OTEL_EXPORTER_OTLP_TRACES_<name>`, else `OTEL_EXPORTER_OTLP_<name>`."""
    return (
        env.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}", "").strip()
        or env.get(f"OTEL_EXPORTER_OTLP_{name}", "").strip()
        or default
    )


def _otlp_exporter(env: Mapping[str, str]) -> tuple[str, SpanExporter]:
    protocol = _signal(env, "PROTOCOL", "http/protobuf")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        endpoint = _signal(env, "ENDPOINT", "http://localhost:4317")
        if endpoint.startswith("http://"):
            insecure = True
        elif endpoint.startswith("https://"):
            insecure = False
        else:
            insecure = _flag(env, "OTEL_EXPORTER_OTLP_TRACES_INSECURE") or _flag(env, "OTEL_EXPORTER_OTLP_INSECURE")
        return f"otlp/grpc {endpoint}", GrpcExporter(endpoint=endpoint, insecure=insecure)
    if protocol != "http/protobuf":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%r is not supported; using http/protobuf", protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if not endpoint:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or "http://localhost:4318"
        endpoint = base.rstrip("/") + "/v1/traces"
    return f"otlp/http {endpoint}", HttpExporter(endpoint=endpoint)


def _exporters(env: Mapping[str, str]) -> list[tuple[str, SpanExporter]]:
    if _flag(env, "OTEL_SDK_DISABLED"):
        return []
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names and (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        names = ["otlp"]
    if "none" in names:
        return []
    exporters: list[tuple[str, SpanExporter]] = []
    for name in dict.fromkeys(names):
        if name == "console":
            exporters.append(("console", ConsoleSpanExporter()))
        elif name == "otlp":
            exporters.append(_otlp_exporter(env))
        else:
            log.warning("unknown OTEL_TRACES_EXPORTER %r ignored", name)
    return exporters


def setup_telemetry(service: str, env: Mapping[str, str] | None = None, *, set_global: bool = True) -> Telemetry:
    """Builds the tracer provider for `service` from the `OTEL_*` variables and (by default) installs it globally.

    The global provider can be set once per process; `set_global=False` returns one without installing it (tests).
    """
    global _capture_content, _exporting
    env = os.environ if env is None else env
    provider = TracerProvider(resource=_resource(service, env), sampler=_sampler(env))
    exporters = _exporters(env)
    for _, exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    capture = _flag(env, "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
    if set_global:
        trace.set_tracer_provider(provider)
        _capture_content = capture
        _exporting = bool(exporters)
    names = [name for name, _ in exporters]
    if names:
        log.info("exporting spans", extra={"exporters": names})
    return Telemetry(provider=provider, exporters=names, capture_content=capture)
