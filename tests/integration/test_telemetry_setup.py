"""`setup_telemetry`: configured only by the standard OTEL_* variables; OTLP over HTTP and gRPC reach a collector;
nothing is exported (or even attempted) unless configured; spans are flushed on shutdown, SIGTERM included."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sluice.bus import ConnectionState
from sluice.telemetry import NatsConnectionCollector, setup_telemetry
from support.nats_server import NatsServer
from support.otlp_receiver import SpanStore, grpc_receiver, http_receiver
from support.procs import base_env
from support.waiting import wait_until


@pytest.fixture
def http_store() -> Iterator[SpanStore]:
    with http_receiver() as store:
        yield store


@pytest.fixture
def grpc_store() -> Iterator[SpanStore]:
    with grpc_receiver() as store:
        yield store


def _processors(provider: TracerProvider) -> tuple[Any, ...]:
    return tuple(provider._active_span_processor._span_processors)


def _emit_one_span(provider: TracerProvider, name: str) -> str:
    with provider.get_tracer("test").start_as_current_span(name, attributes={"k": "v"}) as span:
        return format(span.get_span_context().trace_id, "032x")


def test_spans_reach_an_otlp_http_collector_with_the_service_resource(http_store: SpanStore) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": http_store.endpoint,
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test,team=sluice%20core",
    }
    telemetry = setup_telemetry("edge", env, set_global=False)
    assert telemetry.exporting and telemetry.exporters == [f"otlp/http {http_store.endpoint}/v1/traces"]
    trace_id = _emit_one_span(telemetry.provider, "over-http")
    telemetry.shutdown()  # flushes the batch
    (span,) = http_store.wait_for(lambda s: s.spans(name="over-http"))
    assert span.trace_id == trace_id and span.attributes == {"k": "v"}
    assert span.service == "sluice-edge"
    assert span.resource["service.namespace"] == "sluice"
    assert span.resource["deployment.environment.name"] == "test"
    assert span.resource["team"] == "sluice core"
    assert span.resource["service.instance.id"]


def test_spans_reach_an_otlp_grpc_collector(grpc_store: SpanStore) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": grpc_store.endpoint,
        "OTEL_SERVICE_NAME": "runner-under-test",
    }
    telemetry = setup_telemetry("agent-runner", env, set_global=False)
    assert telemetry.exporters == [f"otlp/grpc {grpc_store.endpoint}"]
    trace_id = _emit_one_span(telemetry.provider, "over-grpc")
    telemetry.shutdown()
    (span,) = grpc_store.wait_for(lambda s: s.spans(name="over-grpc"))
    assert span.trace_id == trace_id and span.service == "runner-under-test"


def test_a_signal_specific_traces_endpoint_is_used_as_given(http_store: SpanStore) -> None:
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": http_store.endpoint + "/v1/traces"}
    telemetry = setup_telemetry("tool-runner", env, set_global=False)
    _emit_one_span(telemetry.provider, "signal-endpoint")
    telemetry.shutdown()
    http_store.wait_for(lambda s: s.spans(name="signal-endpoint", service="sluice-tool-runner"))


def test_without_otel_variables_no_exporter_exists_and_no_connection_is_attempted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts: list[object] = []
    real_connect = socket.socket.connect

    def recording_connect(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    telemetry = setup_telemetry("edge", {}, set_global=False)
    assert not telemetry.exporting
    assert _processors(telemetry.provider) == ()
    # Trace ids still exist (events and messages carry them) although nothing leaves the process.
    assert int(_emit_one_span(telemetry.provider, "local-only"), 16) != 0
    telemetry.shutdown()
    assert attempts == []


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SERVICE_NAME": "x"},  # a protocol alone exports nothing
    ],
    ids=["exporter-none", "sdk-disabled", "protocol-without-endpoint"],
)
def test_export_stays_off_when_the_variables_say_so(env: dict[str, str]) -> None:
    telemetry = setup_telemetry("edge", env, set_global=False)
    assert not telemetry.exporting and _processors(telemetry.provider) == ()
    telemetry.shutdown()


def test_the_sampler_variables_are_honoured(http_store: SpanStore) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": http_store.endpoint, "OTEL_TRACES_SAMPLER": "always_off"}
    telemetry = setup_telemetry("edge", env, set_global=False)
    with telemetry.provider.get_tracer("t").start_as_current_span("sampled-out") as span:
        ctx = span.get_span_context()
    assert ctx.is_valid and not ctx.trace_flags.sampled  # still a trace id to stamp on events
    telemetry.shutdown()
    assert http_store.spans(name="sampled-out") == []

    env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
    env["OTEL_TRACES_SAMPLER_ARG"] = "1.0"
    telemetry = setup_telemetry("edge", env, set_global=False)
    _emit_one_span(telemetry.provider, "sampled-in")
    telemetry.shutdown()
    http_store.wait_for(lambda s: s.spans(name="sampled-in"))


def test_message_content_capture_is_off_unless_enabled() -> None:
    assert not setup_telemetry("agent-runner", {}, set_global=False).capture_content
    env = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}
    assert setup_telemetry("agent-runner", env, set_global=False).capture_content


_SERVICE = textwrap.dedent(
    """
    import asyncio, logging
    from opentelemetry import trace
    from sluice.config import CommonConfig
    from sluice.service import run_service

    async def main(bus, stopping):
        with trace.get_tracer("t").start_as_current_span("before-sigterm"):
            logging.getLogger("t").info("ready")
        await stopping.wait()

    run_service("flush-test", CommonConfig.from_env(), main)
    """
)


@pytest.mark.slow  # a service process
def test_sigterm_flushes_queued_spans(nats_server: NatsServer, http_store: SpanStore, tmp_path: Path) -> None:
    env = base_env(
        SLUICE_NATS_URL=nats_server.url,
        OTEL_EXPORTER_OTLP_ENDPOINT=http_store.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="600000",  # only the shutdown flush can deliver the span in time
    )
    log_path = tmp_path / "service.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", _SERVICE], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: '"msg":"ready"' in log_path.read_text(), timeout_s=20, what="the service's ready line")
        assert http_store.spans(name="before-sigterm") == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    (span,) = http_store.wait_for(lambda s: s.spans(name="before-sigterm"), timeout_s=5)
    assert span.service == "sluice-flush-test"


def test_the_nats_connection_collector_reports_reconnects_at_scrape_time() -> None:
    state = ConnectionState(connected=True)
    registry = CollectorRegistry()
    registry.register(NatsConnectionCollector(state, prefix="sluice_runner"))
    state.reconnects = 2
    samples = {
        s.name: s.value for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples
    }
    assert samples == {"sluice_runner_nats_connected": 1.0, "sluice_runner_nats_reconnects_total": 2.0}
