"""The edge has its own main (uvicorn, not `run_service`): its spans must still be flushed on SIGTERM, and
without OTEL_* variables it must not set up any export at all."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from sluice.ids import new_task_id
from support.edge import edge_process
from support.nats_server import NatsServer
from support.otlp_receiver import http_receiver

pytestmark = pytest.mark.slow


def test_sigterm_flushes_the_edges_queued_spans(nats_server: NatsServer, tmp_path: Path) -> None:
    with http_receiver() as spans:
        # A schedule delay far beyond the test: only the flush at shutdown can deliver the span.
        edge, url = edge_process(
            tmp_path,
            nats_server.url,
            SLUICE_SHUTDOWN_GRACE_S="0.5",
            OTEL_EXPORTER_OTLP_ENDPOINT=spans.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="600000",
        )
        try:
            # A read of an unknown task: traced, and it leaves nothing behind in the shared NATS server.
            assert httpx.get(f"{url}/v1/tasks/{new_task_id()}", timeout=10).status_code == 404
            assert spans.spans(name="GET /v1/tasks/{task_id}") == []
            assert edge.terminate() == 0
        finally:
            edge.kill()
        (span,) = spans.wait_for(lambda s: s.spans(name="GET /v1/tasks/{task_id}"), timeout_s=5)
        status = span.attributes.get("http.response.status_code", span.attributes.get("http.status_code"))
        assert span.service == "sluice-stream-edge" and status == 404
        assert '"exporting spans"' in edge.log_text()


def test_without_otel_variables_the_edge_sets_up_no_export(nats_server: NatsServer, tmp_path: Path) -> None:
    edge, url = edge_process(tmp_path, nats_server.url, SLUICE_SHUTDOWN_GRACE_S="0.5")  # and no OTEL_* at all
    try:
        assert httpx.get(f"{url}/v1/tasks/{new_task_id()}", timeout=10).status_code == 404
        assert edge.terminate() == 0
    finally:
        edge.kill()
    log = edge.log_text()
    assert '"msg":"ready"' in log and "exporting spans" not in log
    assert "Failed to export" not in log and "4318" not in log
