"""Liveness, readiness, metrics, the generated API docs and CORS of stream-edge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.responses import Response

from sluice.admin import provision_as_admin
from sluice.bus import Bus
from sluice.config import CommonConfig
from stream_edge.settings import EdgeSettings
from support.catalog import advertise_shipped_agents
from support.edge import EdgeUnderTest, running_edge
from support.nats_server import running_server
from support.waiting import eventually

ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
async def edge(common_config: CommonConfig, bus: Bus) -> AsyncIterator[EdgeUnderTest]:
    async with running_edge(common_config, bus, cors_origins=(ORIGIN,)) as running:
        yield running


async def test_healthz_and_readyz_answer_ok(edge: EdgeUnderTest) -> None:
    assert (await edge.client.get("/healthz")).json() == {"status": "ok"}
    ready = await edge.client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ok"}


async def test_probes_and_scrapes_ignore_query_parameters_they_add(edge: EdgeUnderTest) -> None:
    for path in ("/healthz?nocache=1", "/readyz?x=1&x=2", "/metrics?name[]=sluice_streams_active"):
        assert (await edge.client.get(path)).status_code == 200, path


async def test_readyz_is_503_while_nats_is_down_and_recovers(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        config = CommonConfig(nats_urls=(server.url,), ack_wait_s=3.0)
        await provision_as_admin(config)  # the edge only checks; provisioning is `sluice provision`'s
        async with running_edge(config) as edge:
            await advertise_shipped_agents(edge.app.state.edge.bus)
            assert (await edge.client.get("/readyz")).status_code == 200
            server.stop()
            not_ready = await eventually(
                lambda: _status_is(edge, "/readyz", 503), timeout_s=15, what="readyz to turn 503"
            )
            assert not_ready.headers["retry-after"]
            assert not_ready.json()["error"]["code"] == "not_ready"
            assert (await edge.client.get("/healthz")).status_code == 200, "liveness does not depend on NATS"
            submit = await edge.client.post("/v1/tasks", json={"input": "x"})
            assert submit.status_code == 503 and submit.headers["retry-after"]
            server.start()
            await eventually(lambda: _status_is(edge, "/readyz", 200), timeout_s=20, what="readyz to recover")
            assert (await edge.client.post("/v1/tasks", json={"input": "x"})).status_code == 201


async def _status_is(edge: EdgeUnderTest, path: str, status: int) -> httpx.Response | None:
    response = await edge.client.get(path)
    return response if response.status_code == status else None


async def test_metrics_count_requests_by_route_template_and_expose_stream_figures(edge: EdgeUnderTest) -> None:
    task_id = (await edge.client.post("/v1/tasks", json={"input": "metered"})).json()["id"]
    await edge.client.get(f"/v1/tasks/{task_id}")
    await edge.client.get("/v1/tasks/not-a-valid-id!")
    response = await edge.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'sluice_edge_http_requests_total{method="POST",route="/v1/tasks",status="201"}' in text
    assert 'sluice_edge_http_requests_total{method="GET",route="/v1/tasks/{task_id}",status="200"}' in text
    assert 'route="/v1/tasks/{task_id}",status="400"' in text
    assert task_id not in text, "ids never become label values"
    for name in ("sluice_edge_active_streams", "sluice_edge_nats_connected 1.0", "sluice_edge_nats_reconnects_total"):
        assert name in text


async def test_openapi_documents_every_route_and_the_docs_page_serves(edge: EdgeUnderTest) -> None:
    spec = (await edge.client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert {"/v1/tasks", "/v1/tasks/{task_id}", "/v1/tasks/{task_id}/events", "/v1/tasks/{task_id}/cancel"} <= set(
        paths
    )
    assert "/v1/tasks/{task_id}/input" in paths and "/healthz" in paths and "/readyz" in paths
    assert "TaskRecord" in spec["components"]["schemas"]
    create = paths["/v1/tasks"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("TaskCreateBody")
    assert {"201", "400", "413", "415", "422", "503"} <= set(create["responses"])
    events = paths["/v1/tasks/{task_id}/events"]["get"]
    assert {p["name"] for p in events["parameters"]} >= {"format", "after", "follow", "snapshot", "Last-Event-ID"}
    docs = await edge.client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_cors_allows_the_configured_origin_and_exposes_location(edge: EdgeUnderTest) -> None:
    preflight = await edge.client.options(
        "/v1/tasks",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, idempotency-key, last-event-id",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "idempotency-key" in allowed and "last-event-id" in allowed

    response = await edge.client.post("/v1/tasks", json={"input": "x"}, headers={"Origin": ORIGIN})
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "location" in response.headers["access-control-expose-headers"].lower()

    stranger = await edge.client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in stranger.headers


class BrokenHub:
    """A hub with a bug: what a genuine 500 looks like (the only kind there may be)."""

    def __init__(self, bus: Bus, settings: EdgeSettings) -> None:
        self.stats: dict[str, int] = {"active_streams": 0}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def open(self, task_id: str, **kwargs: object) -> Response:
        raise RuntimeError("a bug in the hub")


async def test_a_bug_is_a_logged_json_500_and_the_edge_keeps_serving(
    common_config: CommonConfig, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_edge(common_config, bus, hub_factory=BrokenHub) as edge:
        task_id = (await edge.client.post("/v1/tasks", json={"input": "x"})).json()["id"]
        response = await edge.client.get(f"/v1/tasks/{task_id}/events")
        assert response.status_code == 500
        assert response.json() == {"error": {"code": "internal", "message": "internal error; it has been logged"}}
        assert "a bug in the hub" not in response.text
        assert any("unhandled error" in r.getMessage() and r.exc_info for r in caplog.records)
        assert (await edge.client.get(f"/v1/tasks/{task_id}")).status_code == 200


async def test_at_stream_capacity_streams_are_503_and_create_and_stream_falls_back_to_the_record(
    common_config: CommonConfig, bus: Bus
) -> None:
    async with running_edge(common_config, bus, max_streams=1) as edge:
        task_id = (await edge.client.post("/v1/tasks", json={"input": "x"})).json()["id"]
        async with edge.client.stream("GET", f"/v1/tasks/{task_id}/events") as first:
            assert first.status_code == 200
            second = await edge.client.get(f"/v1/tasks/{task_id}/events")
            assert second.status_code == 503
            assert second.json()["error"]["code"] == "too_many_streams" and second.headers["retry-after"]
            created = await edge.client.post("/v1/tasks", json={"input": "y"}, headers={"Accept": "text/event-stream"})
            assert created.status_code == 201
            assert created.headers["content-type"] == "application/json"
            assert created.headers["location"] == f"/v1/tasks/{created.json()['id']}"
