"""OpenTelemetry for every Sluice service: one setup call, configured only by the standard `OTEL_*` variables.

A tracer provider is always installed, so trace ids exist and travel with every message and event; spans are
exported only when `OTEL_TRACES_EXPORTER` names an exporter or `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set. `OTEL_EXPORTER_OTLP_PROTOCOL` picks `grpc` or `http/protobuf`
(default). Sampler, resource and batch settings are read by the SDK itself (`OTEL_TRACES_SAMPLER`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`). `shutdown()` flushes; services call it on SIGTERM too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

__all__ = ["Telemetry", "setup_telemetry"]

log = logging.getLogger(__name__)


@dataclass
class Telemetry:
    provider: TracerProvider
    exporting: bool

    def shutdown(self) -> None:
        self.provider.shutdown()


def _exporters(env: Mapping[str, str]) -> list[SpanExporter]:
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names and (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        names = ["otlp"]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "none":
            return []
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
            )
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

                exporters.append(GrpcExporter())
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

                exporters.append(HttpExporter())
        else:
            log.warning("unknown OTEL_TRACES_EXPORTER %r ignored", name)
    return exporters


def setup_telemetry(service: str, env: Mapping[str, str] | None = None) -> Telemetry:
    env = os.environ if env is None else env
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or f"sluice-{service}"})
    provider = TracerProvider(resource=resource)
    exporters = _exporters(env)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return Telemetry(provider=provider, exporting=bool(exporters))
