"""A local edge without authentication (`SLUICE_AUTH=none`, loopback): only loopback `Host` names (no DNS
rebinding), no state change from another origin's page (no CSRF, also not through curl's form bodies), and its
API documentation works offline (Swagger UI from the edge's own files)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sluice import subjects
from sluice.bus import Bus
from sluice.config import CommonConfig
from support.edge import EdgeUnderTest, running_edge

pytestmark = pytest.mark.timeout(60)

APP = "http://app.example.test"


@pytest.fixture(scope="module")
async def local(common_config: CommonConfig, bus: Bus) -> AsyncIterator[EdgeUnderTest]:
    async with running_edge(common_config, bus, cors_origins=(APP,)) as edge:
        yield edge


async def submissions(bus: Bus) -> int:
    info = await bus.js.stream_info(subjects.EVENTS_STREAM, subjects_filter=subjects.events_of_type("task.submitted"))
    return sum((info.state.subjects or {}).values())


async def test_only_loopback_host_names_are_answered(local: EdgeUnderTest) -> None:
    for host in ("evil.example", "evil.example:80", "192.168.1.20:8080", "localhost.evil.example"):
        response = await local.client.get("/healthz", headers={"Host": host})
        assert response.status_code == 403, host
        assert response.json()["error"]["code"] == "host_not_allowed"
    port = local.settings.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
        assert (await local.client.get("/healthz", headers={"Host": host})).status_code == 200, host


async def test_a_foreign_page_cannot_change_anything(local: EdgeUnderTest, bus: Bus) -> None:
    before = await submissions(bus)
    foreign = [
        {"Origin": "http://evil.example", "Content-Type": "application/json"},
        {"Origin": "null", "Content-Type": "application/json"},  # a sandboxed frame
        {"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"},  # no Origin, but the browser says so
        {"Origin": f"http://evil.example:{local.settings.port}", "Content-Type": "application/json"},
    ]
    for headers in foreign:
        response = await local.client.post("/v1/tasks", content=b'{"input": "hi"}', headers=headers)
        assert response.status_code == 403, headers
        assert response.json()["error"]["code"] == "origin_not_allowed"
    # The classic CSRF: a hidden HTML form posting a form-typed body that curl's compatibility reads as JSON.
    form = await local.client.post(
        "/v1/tasks",
        content=b'{"input": "hi", "x": "="}',
        headers={"Origin": "http://evil.example", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 403
    cancel = await local.client.post(
        "/v1/tasks/01JD3S5Q8V0C7W6X9Y2Z3A4B5C/cancel", json={}, headers={"Origin": "http://evil.example"}
    )
    assert cancel.status_code == 403
    assert await submissions(bus) == before


async def test_its_own_page_an_allowed_origin_and_curl_still_work(local: EdgeUnderTest) -> None:
    own = f"http://127.0.0.1:{local.settings.port}"
    for headers in ({"Origin": own}, {"Origin": APP}, {}):
        response = await local.client.post("/v1/tasks", json={"input": "hi"}, headers=headers)
        assert response.status_code == 201, (headers, response.text)
    allowed = await local.client.post("/v1/tasks", json={"input": "hi"}, headers={"Origin": APP})
    assert allowed.headers["access-control-allow-origin"] == APP
    curl = await local.client.post(
        "/v1/tasks", content=b'{"input": "hi"}', headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert curl.status_code == 201  # curl -d: no Origin, no Sec-Fetch-Site


async def test_docs_are_served_from_the_edge_itself(local: EdgeUnderTest) -> None:
    page = await local.client.get("/docs")
    assert page.status_code == 200
    assert "/docs/assets/swagger-ui-bundle.js" in page.text and "/docs/assets/swagger-ui.css" in page.text
    assert "cdn." not in page.text and "https://" not in page.text.split("<body>")[0]
    script = await local.client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.text
    assert (await local.client.get("/docs/assets/swagger-ui.css")).status_code == 200
