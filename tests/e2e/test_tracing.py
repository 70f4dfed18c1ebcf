"""One task, one trace, across real processes: edge, agent-runner and tool-runner export OTLP to a receiver in
the test, and the trace has the shape docs/tracing.md promises — also after the agent-runner is killed mid-task,
and across a pause for user input. The services' /metrics parse and move as tasks run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.nats_server import free_port
from support.otlp_receiver import ReceivedSpan, SpanStore, http_receiver
from support.stack import SERVICES, Stack, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

EDGE = "sluice-stream-edge"
RUNNER = "sluice-agent-runner"
TOOLS = "sluice-tool-runner"
TERMINAL = {"task.completed", "task.failed", "task.canceled"}


@dataclass
class Traced:
    """The whole stack as processes (support.stack), exporting OTLP to a receiver in this test."""

    stack: Stack
    spans: SpanStore
    runner_metrics_url: str
    tool_metrics_url: str

    @property
    def edge_url(self) -> str:
        return self.stack.edge_url


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    # A stack of its own (not the session's): its work consumer gets this module's short ack wait, and every one of
    # its services exports to this module's receiver.
    runner_port, tool_port = free_port(), free_port()
    with http_receiver() as spans:
        env = {
            "SLUICE_ACK_WAIT": "2s",
            "SLUICE_RUNNER_GRACE_S": "1",
            "SLUICE_TOOL_GRACE_S": "1",
            "SLUICE_SHUTDOWN_GRACE_S": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": spans.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        service_env = {
            "agent-runner": {"SLUICE_RUNNER_METRICS_PORT": str(runner_port)},
            "tool-runner": {"SLUICE_TOOL_METRICS_PORT": str(tool_port)},
        }
        with running_stack(tmp_path_factory.mktemp("traced-stack"), env=env, service_env=service_env) as stack:
            yield Traced(
                stack, spans, f"http://127.0.0.1:{runner_port}/metrics", f"http://127.0.0.1:{tool_port}/metrics"
            )


@asynccontextmanager
async def edge_client(traced: Traced) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=traced.edge_url, timeout=30.0) as client:
        yield client


async def submit(client: httpx.AsyncClient, text: str) -> str:
    created = await client.post("/v1/tasks", json={"input": text})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def events_until(
    client: httpx.AsyncClient, task_id: str, until: set[str], *, after: str | None = None, timeout_s: float = 60
) -> list[dict[str, Any]]:
    """The task's events (NDJSON stream) up to and including the first whose type is in `until`."""
    params = {"format": "ndjson", **({"after": after} if after else {})}
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        async with client.stream("GET", f"/v1/tasks/{task_id}/events", params=params) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "heartbeat":
                    continue
                seen.append(event)
                if event["type"] in until:
                    return seen
    raise AssertionError(f"stream ended before {until}: {[e['type'] for e in seen]}")


def one(spans: list[ReceivedSpan], what: str) -> ReceivedSpan:
    assert len(spans) == 1, f"expected one {what}, got {spans}"
    return spans[0]


def is_ancestor(store: SpanStore, ancestor: ReceivedSpan, span: ReceivedSpan) -> bool:
    return any(a.span_id == ancestor.span_id for a in store.ancestors(span))


def task_log_lines(stack: Stack, task_id: str) -> list[dict[str, Any]]:
    """Every JSON log line of every service that names the task."""
    lines = []
    for name in SERVICES:
        for raw in stack.logs(name).splitlines():
            if f'"task_id":"{task_id}"' in raw:
                lines.append(json.loads(raw))
    return lines


def metric_samples(text: str) -> dict[str, float]:
    """`name{labels}` → value for every sample; parsing itself proves the exposition format is valid."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    wanted = [f"{k}={v}" for k, v in labels.items()]
    return sum(v for k, v in samples.items() if k.split("{")[0] == name and all(w in k.split("{")[1] for w in wanted))


# ---------------------------------------------------------------- one task, one trace


async def test_a_task_with_a_tool_call_is_one_trace_across_edge_runner_and_tool_runner(traced: Traced) -> None:
    async with edge_client(traced) as client:
        task_id = await submit(client, "what is 17*23?")
        events = await events_until(client, task_id, TERMINAL)
        record = (await client.get(f"/v1/tasks/{task_id}")).json()
    assert events[-1]["type"] == "task.completed", events[-1]
    trace_id = events[0]["trace_id"]
    assert len(trace_id) == 32 and {e["trace_id"] for e in events} == {trace_id}
    assert record["trace_id"] == trace_id  # how an operator finds the trace from the task id

    store = traced.spans

    def complete(s: SpanStore) -> list[ReceivedSpan] | None:
        spans = s.spans(trace_id=trace_id)
        names = [x.name for x in spans]
        ready = names.count("chat sluice-demo") >= 2 and "execute_tool calculator" in names
        return spans if ready and "invoke_agent assistant" in names and "POST /v1/tasks" in names else None

    spans = store.wait_for(complete, what="the task's whole trace")
    assert {s.service for s in spans} >= {EDGE, RUNNER, TOOLS}

    # POST /v1/tasks → send task.submitted, send work message
    server = one(store.spans(trace_id=trace_id, name="POST /v1/tasks", service=EDGE), "request span")
    assert server.kind == "server" and server.parent_span_id == ""
    submitted = one(store.spans(trace_id=trace_id, name="send sluice.evt.{task_id}.task.submitted"), "submitted")
    work = one(store.spans(trace_id=trace_id, name="send sluice.run.{task_id}", service=EDGE), "work send")
    for send in (submitted, work):
        assert send.kind == "producer" and is_ancestor(store, server, send)
        assert send.attributes["messaging.system"] == "nats"
        assert send.attributes["messaging.operation.type"] == "send"
        assert send.attributes["sluice.task_id"] == task_id
        assert isinstance(send.attributes["messaging.nats.stream_sequence"], int)
    assert str(submitted.attributes["messaging.nats.stream_sequence"]) == events[0]["id"]

    # → invoke_agent: a child of the work message's send span, not a redelivery
    invoke = one(store.spans(trace_id=trace_id, name="invoke_agent assistant", service=RUNNER), "invoke_agent")
    assert invoke.parent_span_id == work.span_id
    assert invoke.attributes["messaging.destination.name"] == "sluice.run.{task_id}"
    assert invoke.attributes["messaging.nats.delivery_count"] == 1 and invoke.links == ()

    # → chat spans with the GenAI attributes and token counts
    chats = sorted(store.spans(trace_id=trace_id, name="chat sluice-demo"), key=lambda s: s.start_ns)
    assert len(chats) == 2
    for chat in chats:
        assert chat.kind == "client" and is_ancestor(store, invoke, chat)
        a = chat.attributes
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.request.model"] == "sluice-demo" and a["gen_ai.response.model"]
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert "gen_ai.input.messages" not in a  # content capture is off unless asked for
    assert chats[0].attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert chats[1].attributes["gen_ai.response.finish_reasons"] == ["stop"]
    completed = [e for e in events if e["type"] == "llm.completed"]
    assert [c.attributes["gen_ai.usage.output_tokens"] for c in chats] == [
        e["data"]["usage"]["output_tokens"] for e in completed
    ]

    # → the tool call message → execute_tool in the tool-runner
    call = one(store.spans(trace_id=trace_id, name="send sluice.tool.calculator.{task_id}"), "tool call send")
    assert call.service == RUNNER and is_ancestor(store, invoke, call)
    tool = one(store.spans(trace_id=trace_id, name="execute_tool calculator", service=TOOLS), "execute_tool")
    assert tool.parent_span_id == call.span_id
    assert tool.attributes["gen_ai.tool.name"] == "calculator"
    tool_events = {e["type"]: e for e in events if e["type"].startswith("tool.")}
    assert tool_events["tool.completed"]["data"]["result"].startswith("391")

    # No span name carries a task id: destinations are templated.
    assert not [s.name for s in spans if task_id in s.name]

    # Every log line about the task, in every service, carries the task's trace id.
    lines = task_log_lines(traced.stack, task_id)
    assert {line["service"] for line in lines} >= {"stream-edge", "agent-runner"}
    assert {line.get("trace_id") for line in lines} == {trace_id}, [
        ln for ln in lines if ln.get("trace_id") != trace_id
    ]


async def test_an_event_stream_connection_is_its_own_trace_linked_to_the_task(traced: Traced) -> None:
    async with edge_client(traced) as client:
        task_id = await submit(client, "what is 2+2?")
        events = await events_until(client, task_id, TERMINAL)
    trace_id = events[0]["trace_id"]

    def stream_span(s: SpanStore) -> ReceivedSpan | None:
        found = s.spans(
            name="GET /v1/tasks/{task_id}/events",
            service=EDGE,
            where=lambda x: any(link.trace_id == trace_id for link in x.links),
        )
        return found[0] if found else None

    span = traced.spans.wait_for(stream_span, what="the stream connection's span")
    assert span.trace_id != trace_id and span.kind == "server"
    assert span.attributes.get("sluice.task_id") == task_id


# ---------------------------------------------------------------- crash and redelivery


async def test_after_the_runner_is_killed_the_retry_attempt_links_to_the_work_message(traced: Traced) -> None:
    stack = traced.stack
    async with edge_client(traced) as client:
        task_id = await submit(client, "what is 6*7? [fault:slow:150]")
        await events_until(client, task_id, {"llm.delta"})
        stack.kill("agent-runner")  # SIGKILL mid-stream: no ack, no goodbye, its unflushed spans are gone
        await asyncio.to_thread(stack.start_service, "agent-runner")
        events = await events_until(client, task_id, TERMINAL, timeout_s=90)
    assert events[-1]["type"] == "task.completed", events[-1]
    trace_id = events[0]["trace_id"]
    assert {e["trace_id"] for e in events} == {trace_id}
    assert max(e["data"]["attempt"] for e in events if e["type"] == "task.started") >= 2

    store = traced.spans

    def retried(s: SpanStore) -> list[ReceivedSpan] | None:
        found = s.spans(trace_id=trace_id, name="invoke_agent assistant", service=RUNNER)
        return [x for x in found if x.links] or None

    (retry, *_) = store.wait_for(retried, what="the retry attempt's invoke_agent span")
    work = one(store.spans(trace_id=trace_id, name="send sluice.run.{task_id}", service=EDGE), "work send")
    assert retry.parent_span_id == work.span_id
    assert retry.attributes["messaging.nats.delivery_count"] >= 2
    (link,) = retry.links
    assert (link.trace_id, link.span_id) == (trace_id, work.span_id)
    assert link.attributes["sluice.link.reason"] == "redelivery"
    assert retry.resource["service.instance.id"]


# ---------------------------------------------------------------- a pause for input continues the trace


async def test_a_task_resumed_after_input_continues_the_same_trace(traced: Traced) -> None:
    async with edge_client(traced) as client:
        task_id = await submit(client, "ask me for my favourite colour")
        asked = await events_until(client, task_id, {"task.input_required"} | TERMINAL)
        assert asked[-1]["type"] == "task.input_required", asked[-1]
        answered = await client.post(f"/v1/tasks/{task_id}/input", json={"input": "blue"})
        assert answered.status_code == 202, answered.text
        rest = await events_until(client, task_id, TERMINAL, after=asked[-1]["id"])
    events = asked + rest
    trace_id = events[0]["trace_id"]
    assert {e["trace_id"] for e in events} == {trace_id}

    store = traced.spans

    def attempts(s: SpanStore) -> list[ReceivedSpan] | None:
        found = s.spans(trace_id=trace_id, name="invoke_agent assistant", service=RUNNER)
        return found if len(found) >= 2 and s.spans(trace_id=trace_id, name="resume task") else None

    first, second = sorted(store.wait_for(attempts, what="both attempts"), key=lambda s: s.start_ns)
    resume = one(store.spans(trace_id=trace_id, name="resume task", service=EDGE), "resume task")
    resumed_work = store.parent_of(second)
    assert resumed_work is not None and resumed_work.name == "send sluice.run.{task_id}"
    assert is_ancestor(store, resume, second)
    (back,) = resume.links  # to the POST /input request, which is its own trace
    request = store.wait_for(lambda s: s.by_id(back.span_id), what="the input request's span")
    assert request.trace_id != trace_id and request.name == "POST /v1/tasks/{task_id}/input"
    assert first.links == () and second.links == ()  # a resume is new work, not a redelivery
    resumed_logs = [ln for ln in task_log_lines(traced.stack, task_id) if ln["msg"] == "task resumed"]
    assert [ln.get("trace_id") for ln in resumed_logs] == [trace_id]  # the edge logs it in the task's trace


async def test_a_cancel_runs_in_the_task_trace_and_links_to_the_request(traced: Traced) -> None:
    async with edge_client(traced) as client:
        task_id = await submit(client, "tell me about NATS streams [fault:slow:200]")
        started = await events_until(client, task_id, {"llm.delta"} | TERMINAL)
        assert started[-1]["type"] == "llm.delta", started[-1]
        canceled = await client.post(f"/v1/tasks/{task_id}/cancel")
        assert canceled.status_code == 202, canceled.text
        rest = await events_until(client, task_id, TERMINAL, after=started[-1]["id"])
    events = started + rest
    assert events[-1]["type"] == "task.canceled"
    trace_id = events[0]["trace_id"]
    assert {e["trace_id"] for e in events} == {trace_id}

    store = traced.spans
    cancel = store.wait_for(
        lambda s: s.spans(trace_id=trace_id, name="cancel task", service=EDGE), what="the cancel span"
    )[0]
    notice = one(store.spans(trace_id=trace_id, name="send sluice.ctl.{task_id}"), "cancel notice")
    assert notice.parent_span_id == cancel.span_id
    (back,) = cancel.links
    request = store.wait_for(lambda s: s.by_id(back.span_id), what="the cancel request's span")
    assert request.name == "POST /v1/tasks/{task_id}/cancel" and request.trace_id != trace_id


# ---------------------------------------------------------------- metrics


async def test_metrics_parse_and_move_as_a_task_runs(traced: Traced) -> None:
    async with edge_client(traced) as client, httpx.AsyncClient(timeout=10) as plain:

        async def scrape() -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
            edge = (await client.get("/metrics")).text
            runner = (await plain.get(traced.runner_metrics_url)).text
            tools = (await plain.get(traced.tool_metrics_url)).text
            return metric_samples(edge), metric_samples(runner), metric_samples(tools)

        edge0, runner0, tools0 = await scrape()
        task_id = await submit(client, "what is 12*12?")
        await events_until(client, task_id, TERMINAL)
        edge1, runner1, tools1 = await scrape()

    def moved(before: dict[str, float], after: dict[str, float], name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved(edge0, edge1, "sluice_edge_events_delivered_total") >= 5
    assert moved(edge0, edge1, "sluice_edge_streams_opened_total") >= 1
    for present in ("active_streams", "catchup_replays_total", "stream_catchup_lag_events", "slow_clients_cut_total",
                    "nats_reconnects_total"):  # fmt: skip
        assert f"sluice_edge_{present}{{}}" in edge1, present
    assert moved(runner0, runner1, "sluice_runner_tasks_completed_total") == 1
    assert moved(runner0, runner1, "gen_ai_client_token_usage_count") >= 4  # 2 calls × (input, output)
    assert moved(runner0, runner1, "gen_ai_client_token_usage_sum", gen_ai_token_type="output") > 0
    assert moved(runner0, runner1, "gen_ai_client_operation_duration_seconds_count") >= 2
    assert moved(runner0, runner1, "sluice_runner_tool_calls_total", tool="calculator") == 1
    assert "sluice_runner_tasks_in_flight{}" in runner1
    assert "sluice_runner_nats_reconnects_total{}" in runner1
    assert moved(tools0, tools1, "sluice_tool_calls_total", tool="calculator", outcome="ok") == 1
    assert moved(tools0, tools1, "sluice_tool_call_duration_seconds_count", tool="calculator") == 1
    assert "sluice_tool_nats_reconnects_total{}" in tools1
