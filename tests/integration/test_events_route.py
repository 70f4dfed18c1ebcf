"""The events route served as plain ASGI (stream_edge/events_asgi.py): the opening goes through every middleware,
the long body does not hold them.

Observable from outside: the head carries what the middleware adds (CORS), the metrics count the route by its
template, the server span of the request has ended while the stream is still open and delivering, and the errors
are the same JSON the FastAPI route gives.
"""

from __future__ import annotations

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sluice.bus import Bus
from sluice.config import CommonConfig
from sluice.ids import new_task_id
from support.edge import FrameReader, running_edge

ORIGIN = "http://app.example"


async def test_an_open_stream_got_its_head_through_the_middleware_and_holds_none_of_it(
    common_config: CommonConfig, bus: Bus
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with running_edge(common_config, bus, cors_origins=(ORIGIN,), tracer_provider=provider) as edge:
        task_id = (await edge.client.post("/v1/tasks", json={"input": "hello"})).json()["id"]
        headers = {"Origin": ORIGIN, "Accept": "text/event-stream"}
        async with edge.client.stream("GET", f"/v1/tasks/{task_id}/events", headers=headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["access-control-allow-origin"] == ORIGIN
            assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
            reader = FrameReader(stream)
            frames = await reader.read(until=lambda fs: any(f.type == "task.submitted" for f in fs))
            assert [f.type for f in frames if f.type] == ["task.submitted"]
            # The request's server span ended when the middleware stack returned, though the stream is open.
            ended = [s for s in exporter.get_finished_spans() if (s.attributes or {}).get("sluice.task_id") == task_id]
            assert ended, "the events request's server span should have ended while its stream stays open"
            cancel = await edge.client.post(f"/v1/tasks/{task_id}/cancel", json={"reason": "done"})
            assert cancel.status_code == 202
            rest = await reader.read(timeout_s=10)
            assert [f.type for f in rest if f.type][-1] == "task.canceled"
        metrics = (await edge.client.get("/metrics")).text
        assert 'route="/v1/tasks/{task_id}/events",status="200"' in metrics


async def test_the_raw_route_answers_errors_as_the_api_does(common_config: CommonConfig, bus: Bus) -> None:
    async with running_edge(common_config, bus) as edge:
        task_id = (await edge.client.post("/v1/tasks", json={"input": "x"})).json()["id"]
        cases: list[tuple[str, dict[str, str], int, str]] = [
            (f"/v1/tasks/{new_task_id()}/events", {}, 404, "task_not_found"),
            ("/v1/tasks/bad.id.*/events", {}, 400, "invalid_task_id"),
            (f"/v1/tasks/{task_id}/events?format=xml", {}, 400, "invalid_request"),
            (f"/v1/tasks/{task_id}/events?follow=maybe", {}, 400, "invalid_request"),
            (f"/v1/tasks/{task_id}/events?colour=red", {}, 400, "unknown_query_parameter"),
            (f"/v1/tasks/{task_id}/events?after=1&after=2", {}, 400, "repeated_query_parameter"),
            (f"/v1/tasks/{task_id}/events", {"Accept": "text/html"}, 406, "not_acceptable"),
            (f"/v1/tasks/{task_id}/events", {"Last-Event-ID": "x1"}, 400, "invalid_event_id"),
        ]
        for path, headers, status, code in cases:
            response = await edge.client.get(path, headers=headers)
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), path
        posted = await edge.client.post(f"/v1/tasks/{task_id}/events")
        assert posted.status_code == 405  # only GET is the stream; anything else goes on to FastAPI
        done = await edge.client.get(f"/v1/tasks/{task_id}/events", params={"follow": "false"})
        assert done.status_code == 200 and isinstance(done, httpx.Response)
        assert "event: task.submitted" in done.text


async def _metric(edge: object, name: str) -> float:
    text = (await edge.client.get("/metrics")).text  # type: ignore[attr-defined]
    line = next(x for x in text.splitlines() if x.startswith(name + " ") or x.startswith(name + "{"))
    return float(line.rsplit(" ", 1)[1])


async def test_create_and_stream_follows_the_new_task_live_from_its_first_event_and_repeats_read_the_log(
    common_config: CommonConfig, bus: Bus
) -> None:
    sse = {"Accept": "text/event-stream"}
    async with running_edge(common_config, bus) as edge:
        replays = await _metric(edge, "sluice_edge_catchup_replays_total")
        async with edge.client.stream("POST", "/v1/tasks", json={"input": "x"}, headers=sse) as created:
            assert created.status_code == 201
            reader = FrameReader(created)
            first = await reader.read(until=lambda fs: any(f.type == "task.submitted" for f in fs))
            task_id = created.headers["location"].rsplit("/", 1)[1]
            assert (await edge.client.post(f"/v1/tasks/{task_id}/cancel", json={})).status_code == 202
            rest = await reader.read(timeout_s=10)
        live = [f.id for f in first + rest if f.type]
        # No read of the log: the stream went straight to the task's feed, from task.submitted on.
        assert await _metric(edge, "sluice_edge_catchup_replays_total") == replays
        log = await edge.client.get(f"/v1/tasks/{task_id}/events", params={"follow": "false"})
        logged = [line.split(": ", 1)[1] for line in log.text.splitlines() if line.startswith("id: ")]
        assert live == logged and len(logged) == 2
        # A repeated Idempotency-Key names a task that already ran: its stream is read from the log, whole.
        keyed = {"Idempotency-Key": "repeat-me"}
        earlier = (await edge.client.post("/v1/tasks", json={"input": "y"}, headers=keyed)).json()["id"]
        assert (await edge.client.post(f"/v1/tasks/{earlier}/cancel", json={})).status_code == 202
        log = await edge.client.get(f"/v1/tasks/{earlier}/events", params={"follow": "false"})
        logged = [line.split(": ", 1)[1] for line in log.text.splitlines() if line.startswith("id: ")]
        async with edge.client.stream("POST", "/v1/tasks", json={"input": "y"}, headers={**sse, **keyed}) as again:
            assert again.headers["location"].endswith(earlier)
            repeated = await FrameReader(again).read(timeout_s=10)
        assert [f.id for f in repeated if f.type] == logged and len(logged) == 2
