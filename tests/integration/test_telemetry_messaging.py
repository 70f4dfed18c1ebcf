"""Trace context over NATS: Bus.publish opens a templated `send` span and carries its context in the headers; a
consumer's `process` span is that span's child, and a redelivery links back to its producer."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from sluice import events as ev
from sluice import subjects
from sluice.bus import Bus
from sluice.eventlog import EventWriter, read_log
from sluice.ids import new_task_id
from sluice.messages import ControlMessage, WorkMessage
from sluice.propagation import attached, current_trace_id, trace_id_from_headers
from sluice.tracing import continue_span, link_current_span, linked_span, process_span, template_of
from support.otlp_receiver import SpanCapture, span_capture

tracer = trace.get_tracer("tests")


@pytest.fixture(scope="module")
def capture() -> SpanCapture:
    return span_capture()


def _traceparent_span_id(headers: dict[str, str]) -> int:
    return int(headers["traceparent"].split("-")[2], 16)


def _only(spans: list[ReadableSpan]) -> ReadableSpan:
    assert len(spans) == 1, spans
    return spans[0]


@pytest.mark.parametrize(
    ("subject_of", "template"),
    [
        (subjects.work, "sluice.run.{task_id}"),
        (lambda t: subjects.event(t, "task.submitted"), "sluice.evt.{task_id}.task.submitted"),
        (lambda t: subjects.event(t, "tool.completed"), "sluice.evt.{task_id}.tool.completed"),
        (lambda t: subjects.tool_call("calculator", t), "sluice.tool.calculator.{task_id}"),
        (subjects.control, "sluice.ctl.{task_id}"),
    ],
)
def test_destinations_are_templated_so_task_ids_never_reach_span_names(subject_of: object, template: str) -> None:
    task_id = new_task_id()
    assert template_of(subject_of(task_id)) == (template, task_id)  # type: ignore[operator]


def test_a_subject_sluice_did_not_build_is_left_as_it_is() -> None:
    assert template_of("_INBOX.abc") == ("_INBOX.abc", None)
    assert template_of("sluice.run.not*valid") == ("sluice.run.not*valid", None)


async def test_publish_opens_a_send_span_whose_context_travels_in_the_headers(bus: Bus, capture: SpanCapture) -> None:
    task_id = new_task_id()
    writer = EventWriter(bus, "test")
    with tracer.start_as_current_span("POST /v1/tasks") as root:
        submitted = ev.TaskSubmittedData(input="hi", agent="assistant", history=[], metadata={})
        seq = await writer.emit(ev.TaskSubmitted, task_id, submitted, msg_id=f"{task_id}:submitted")
    trace_id = root.get_span_context().trace_id
    send = _only(capture.spans(trace_id=trace_id, name="send sluice.evt.{task_id}.task.submitted"))
    assert send.kind == SpanKind.PRODUCER
    assert send.parent is not None and send.parent.span_id == root.get_span_context().span_id
    assert dict(send.attributes or {}) == {
        "messaging.system": "nats",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": "sluice.evt.{task_id}.task.submitted",
        "messaging.destination.template": "sluice.evt.{task_id}.task.submitted",
        "messaging.message.id": f"{task_id}:submitted",
        "messaging.message.body.size": (send.attributes or {})["messaging.message.body.size"],
        "messaging.nats.stream_sequence": seq,
        "sluice.task_id": task_id,
    }
    (entry,) = [e async for e in read_log(bus, task_id)]
    assert _traceparent_span_id(entry.headers) == send.context.span_id
    assert entry.decode().trace_id == trace_id_from_headers(entry.headers) == format(trace_id, "032x")


async def test_token_deltas_get_no_span_and_publishes_outside_a_trace_get_none(bus: Bus, capture: SpanCapture) -> None:
    task_id = new_task_id()
    writer = EventWriter(bus, "test")
    delta = ev.LlmDeltaData(step=1, attempt=1, text="tok")
    with tracer.start_as_current_span("invoke_agent assistant") as runner:
        await writer.emit(ev.LlmDelta, task_id, delta, msg_id=f"{task_id}:s1:a1:d1")
    assert [s.name for s in capture.spans(trace_id=runner.get_span_context().trace_id)] == ["invoke_agent assistant"]
    await writer.emit(ev.LlmDelta, task_id, delta, msg_id=f"{task_id}:s1:a1:d2")  # no trace at all
    first, second = [e async for e in read_log(bus, task_id)]
    assert _traceparent_span_id(first.headers) == runner.get_span_context().span_id
    assert "traceparent" not in second.headers


async def test_a_forced_span_covers_a_delta_and_a_declined_one_skips_another_message(
    bus: Bus, capture: SpanCapture
) -> None:
    task_id = new_task_id()
    with tracer.start_as_current_span("caller") as caller:
        subject = subjects.event(task_id, "llm.delta")
        await bus.publish(subject, b"{}", msg_id=f"{task_id}:forced", span=True)
        await bus.publish(subjects.event(task_id, "task.canceled"), b"{}", msg_id=f"{task_id}:skip", span=False)
    names = [s.name for s in capture.spans(trace_id=caller.get_span_context().trace_id)]
    assert names.count("send sluice.evt.{task_id}.llm.delta") == 1
    assert "send sluice.evt.{task_id}.task.canceled" not in names


async def test_processing_span_is_child_of_the_producer_and_a_redelivery_links_to_it(
    bus: Bus, capture: SpanCapture
) -> None:
    task_id = new_task_id()
    with tracer.start_as_current_span("edge") as edge:
        work = WorkMessage(task_id=task_id, reason="submitted")
        seq = await EventWriter(bus, "t").bus.publish(
            subjects.event(task_id, "task.started"), ev.encode(work), msg_id=f"{task_id}:run"
        )
    trace_id = edge.get_span_context().trace_id
    send = _only(capture.spans(trace_id=trace_id, name="send sluice.evt.{task_id}.task.started"))
    # An ephemeral pull consumer on the events stream (the work stream's one consumer belongs to the runners).
    sub = await bus.js.pull_subscribe(subjects.events_of_task(task_id), stream=subjects.EVENTS_STREAM)
    try:
        (msg,) = await sub.fetch(1, timeout=5)
        with process_span("invoke_agent assistant", msg, "sluice.run.{task_id}") as first:
            assert current_trace_id() == format(trace_id, "032x")
        await msg.nak()
        (again,) = await sub.fetch(1, timeout=5)
        with process_span("invoke_agent assistant", again, "sluice.run.{task_id}") as retry:
            pass
        await again.ack()
    finally:
        await sub.unsubscribe()

    spans = {s.context.span_id: s for s in capture.spans(trace_id=trace_id)}
    first_span = spans[first.get_span_context().span_id]
    retry_span = spans[retry.get_span_context().span_id]
    for span in (first_span, retry_span):
        assert span.kind == SpanKind.CONSUMER
        assert span.parent is not None and span.parent.span_id == send.context.span_id
        attrs = dict(span.attributes or {})
        assert attrs["messaging.system"] == "nats"
        assert attrs["messaging.operation.type"] == "process"
        assert attrs["messaging.destination.name"] == "sluice.run.{task_id}"
        assert attrs["messaging.nats.stream_sequence"] == seq
        assert attrs["messaging.message.id"] == f"{task_id}:run"
        assert attrs["sluice.task_id"] == task_id
        assert attrs["messaging.nats.stream"] == subjects.EVENTS_STREAM
    assert (first_span.attributes or {})["messaging.nats.delivery_count"] == 1
    assert first_span.links == ()
    assert (retry_span.attributes or {})["messaging.nats.delivery_count"] == 2
    (link,) = retry_span.links
    assert link.context.span_id == send.context.span_id
    assert dict(link.attributes or {}) == {"sluice.link.reason": "redelivery", "messaging.nats.delivery_count": 2}


async def test_a_cancel_notice_over_core_nats_carries_its_send_span(bus: Bus, capture: SpanCapture) -> None:
    task_id = new_task_id()
    received: asyncio.Queue[object] = asyncio.Queue()
    sub = await bus.nc.subscribe(subjects.control(task_id), cb=received.put)
    try:
        with tracer.start_as_current_span("POST cancel") as request:
            notice = ControlMessage(task_id=task_id, action="cancel", reason="test")
            await bus.notify(subjects.control(task_id), ev.encode(notice))
        msg = await asyncio.wait_for(received.get(), timeout=5)
    finally:
        await sub.unsubscribe()
    with process_span("cancel notice", msg) as handled:
        pass
    trace_id = request.get_span_context().trace_id
    send = _only(capture.spans(trace_id=trace_id, name="send sluice.ctl.{task_id}"))
    span = _only([s for s in capture.spans(trace_id=trace_id) if s.context == handled.get_span_context()])
    assert span.parent is not None and span.parent.span_id == send.context.span_id
    assert "messaging.nats.delivery_count" not in (span.attributes or {})  # core NATS: no JetStream metadata
    assert (span.attributes or {})["messaging.destination.name"] == "sluice.ctl.{task_id}"


async def test_a_request_continues_the_task_trace_and_links_back_to_itself(bus: Bus, capture: SpanCapture) -> None:
    task_id = new_task_id()
    writer = EventWriter(bus, "test")
    with tracer.start_as_current_span("POST /v1/tasks") as submit:
        data = ev.TaskSubmittedData(input="hi", agent="assistant", history=[], metadata={})
        await writer.emit(ev.TaskSubmitted, task_id, data, msg_id=f"{task_id}:submitted")
    (entry,) = [e async for e in read_log(bus, task_id)]
    with tracer.start_as_current_span("POST /v1/tasks/{id}/input") as request:
        with continue_span("resume task", entry.headers) as resumed:
            await bus.publish(subjects.work(task_id), b"{}", msg_id=f"{task_id}:run:r1")
        with linked_span("stream task events", entry.headers) as stream:
            pass
    task_trace = submit.get_span_context().trace_id
    assert resumed.get_span_context().trace_id == task_trace
    resumed_span = _only([s for s in capture.spans(trace_id=task_trace) if s.name == "resume task"])
    (back,) = resumed_span.links
    assert back.context.span_id == request.get_span_context().span_id
    assert capture.spans(trace_id=task_trace, name="send sluice.run.{task_id}")  # the work message is in it too
    assert stream.get_span_context().trace_id == request.get_span_context().trace_id != task_trace
    stream_span = _only([s for s in capture.spans(name="stream task events") if s.context == stream.get_span_context()])
    (to_task,) = stream_span.links
    assert to_task.context.trace_id == task_trace

    with tracer.start_as_current_span("GET /v1/tasks/{task_id}/events") as server:
        assert link_current_span(entry.headers)
    server_span = _only([s for s in capture.spans() if s.context == server.get_span_context()])
    assert [link.context.trace_id for link in server_span.links] == [task_trace]
    assert not link_current_span(entry.headers)  # no span current: nothing to link from


def test_attaching_headers_makes_their_trace_current() -> None:
    with tracer.start_as_current_span("producer") as producer:
        headers = {"traceparent": f"00-{format(producer.get_span_context().trace_id, '032x')}-"
                                  f"{format(producer.get_span_context().span_id, '016x')}-01"}  # fmt: skip
    assert current_trace_id() == ""
    with attached(headers):
        assert current_trace_id() == format(producer.get_span_context().trace_id, "032x")
    assert current_trace_id() == ""
