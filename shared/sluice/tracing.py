"""Messaging spans for NATS, after the OpenTelemetry messaging conventions, and the task-trace helpers.

No instrumentation package exists for nats-py; this module is the one place that turns a publish or a delivery
into a span. Destinations are *templated* (`sluice.run.{task_id}`, `sluice.evt.{task_id}.task.submitted`), so a
span name or metric label never carries a task id; the id goes into `sluice.task_id`.

- `send_span(template, task_id)`: a PRODUCER span around one publish. `Bus.publish` opens it (except for
  `llm.delta`, which would cost a span per token) and injects *its* context into the message headers, so the
  consumer's span is its child.
- `process_span(name, msg)`: a CONSUMER span for handling one JetStream message: child of the producer context in
  the headers, with stream sequence, delivery count and `Nats-Msg-Id` as attributes; a redelivered message's span
  also LINKS to the producer (`sluice.link.reason=redelivery`), so a retry attempt points at what it retries.
- `linked_span(name, headers)`: a span in the *current* trace that links to a task's trace (stream connections).
- `continue_span(name, headers)`: a span in the *task's* trace (parent from `headers`) that links to the current
  span — how the edge's `/input` and `/cancel` keep a task in one trace though each HTTP request starts its own.
- `link_current_span(headers)`: the same link added to a span someone else started (an event stream's server span).
- `server_attributes`, `genai_input_messages`, `genai_output_messages`: GenAI client-span attributes in the
  conventions' shapes (message content only when `sluice.telemetry.capture_message_content()`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import nats.errors
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.util.types import AttributeValue

from sluice import subjects
from sluice.errors import InvalidInput
from sluice.propagation import extract

__all__ = [
    "DELIVERY_COUNT",
    "STREAM_SEQUENCE",
    "TASK_ID",
    "continue_span",
    "genai_input_messages",
    "genai_output_messages",
    "link_current_span",
    "linked_span",
    "process_span",
    "send_span",
    "server_attributes",
    "span_for_publish",
    "template_of",
]

SYSTEM = "nats"
TASK_ID = "sluice.task_id"
STREAM_SEQUENCE = "messaging.nats.stream_sequence"
DELIVERY_COUNT = "messaging.nats.delivery_count"
LINK_REASON = "sluice.link.reason"
MSG_ID_HEADER = "Nats-Msg-Id"
TASK_ID_TOKEN = "{task_id}"

_tracer = trace.get_tracer("sluice.messaging")


def template_of(subject: str) -> tuple[str, str | None]:
    """`sluice.run.01J…` → (`sluice.run.{task_id}`, `01J…`); a subject Sluice did not build comes back as is."""
    parts = subject.split(".")
    try:
        if subject.startswith(subjects.TOOL_PREFIX + ".") and len(parts) == 4:
            return f"{subjects.TOOL_PREFIX}.{parts[2]}.{TASK_ID_TOKEN}", subjects.task_id_of(subject)
        if subject.startswith(subjects.EVENT_PREFIX + ".") and len(parts) >= 5:
            rest = ".".join(parts[3:])
            return f"{subjects.EVENT_PREFIX}.{TASK_ID_TOKEN}.{rest}", subjects.task_id_of(subject)
        for prefix in (subjects.WORK_PREFIX, subjects.CONTROL_PREFIX):
            if subject.startswith(prefix + ".") and len(parts) == 3:
                return f"{prefix}.{TASK_ID_TOKEN}", subjects.task_id_of(subject)
    except InvalidInput:
        pass
    return subject, None


def span_for_publish(subject: str) -> bool:
    """Whether `Bus.publish` opens a send span by default: inside a trace, for every message except token deltas.

    Outside any trace no span is opened: a lone root span per publish would be noise, and would give the message a
    trace id that no event of its task carries.
    """
    return not subject.endswith(".llm.delta") and trace.get_current_span().get_span_context().is_valid


def _messaging_attributes(template: str, operation: str, task_id: str | None) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": "publish" if operation == "send" else operation,
        "messaging.destination.name": template,
        "messaging.destination.template": template,
    }
    if task_id:
        attrs[TASK_ID] = task_id
    return attrs


@contextmanager
def send_span(
    subject_template: str,
    task_id: str | None = None,
    *,
    msg_id: str | None = None,
    payload_size: int | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Iterator[Span]:
    """A PRODUCER span `send <template>` around one publish; inject inside it so consumers become its children.

    Set `messaging.nats.stream_sequence` on the yielded span once the stream has acknowledged the message.
    """
    attrs = _messaging_attributes(subject_template, "send", task_id)
    if msg_id:
        attrs["messaging.message.id"] = msg_id
    if payload_size is not None:
        attrs["messaging.message.body.size"] = payload_size
    attrs.update(attributes or {})
    with _tracer.start_as_current_span(f"send {subject_template}", kind=SpanKind.PRODUCER, attributes=attrs) as span:
        yield span


def _delivery(msg: Any) -> tuple[dict[str, AttributeValue], int]:
    """JetStream metadata of a message as attributes, and its delivery count (1 for a core NATS message)."""
    try:
        meta = msg.metadata
    except (nats.errors.NotJSMessageError, AttributeError):  # a core NATS message has no JetStream metadata
        return {}, 1
    attrs: dict[str, AttributeValue] = {}
    delivered = int(getattr(meta, "num_delivered", 1) or 1)
    attrs[DELIVERY_COUNT] = delivered
    sequence = getattr(meta, "sequence", None)
    if sequence is not None and getattr(sequence, "stream", None) is not None:
        attrs[STREAM_SEQUENCE] = int(sequence.stream)
    if getattr(meta, "stream", None):
        attrs["messaging.nats.stream"] = str(meta.stream)
    if getattr(meta, "consumer", None):
        attrs["messaging.consumer.group.name"] = str(meta.consumer)
    return attrs, delivered


@contextmanager
def process_span(
    name: str,
    msg: Any,
    subject_template: str | None = None,
    *,
    kind: SpanKind = SpanKind.CONSUMER,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Iterator[Span]:
    """A span for processing one NATS message, child of the producer context in its headers.

    `msg` is a `nats.aio.msg.Msg` (anything with `.subject`, `.headers`, `.data`, and `.metadata` for JetStream).
    When the message is a redelivery (delivery count > 1), the span also links to the producer context, so the
    retry attempt is visibly tied to the message it retries even when the first attempt's spans died with its
    process.
    """
    headers: Mapping[str, str] = msg.headers or {}
    derived, task_id = template_of(msg.subject)
    template = subject_template or derived
    attrs = _messaging_attributes(template, "process", task_id)
    delivery, delivered = _delivery(msg)
    attrs.update(delivery)
    if headers.get(MSG_ID_HEADER):
        attrs["messaging.message.id"] = headers[MSG_ID_HEADER]
    data = getattr(msg, "data", None)
    if data is not None:
        attrs["messaging.message.body.size"] = len(data)
    attrs.update(attributes or {})
    parent = extract(headers)
    links: list[Link] = []
    if delivered > 1:
        producer = trace.get_current_span(parent).get_span_context()
        if producer.is_valid:
            links.append(Link(producer, {LINK_REASON: "redelivery", DELIVERY_COUNT: delivered}))
    with _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attrs, links=links) as span:
        yield span


def link_current_span(headers: Mapping[str, str] | None, *, reason: str = "task") -> bool:
    """Adds to the span current now a link to the context carried by `headers`; False if either is missing.

    For a span someone else started (the HTTP server span of an event stream) that should point at a task's trace.
    """
    span = trace.get_current_span()
    target = trace.get_current_span(extract(headers)).get_span_context()
    if not (span.is_recording() and target.is_valid):
        return False
    span.add_link(target, {LINK_REASON: reason})
    return True


@contextmanager
def linked_span(
    name: str,
    headers: Mapping[str, str] | None,
    *,
    reason: str = "task",
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Iterator[Span]:
    """A span in the current trace with a link to the context carried by `headers` (e.g. a task.submitted event)."""
    links: list[Link] = []
    target = trace.get_current_span(extract(headers)).get_span_context()
    if target.is_valid:
        links.append(Link(target, {LINK_REASON: reason}))
    with _tracer.start_as_current_span(name, kind=kind, attributes=dict(attributes or {}), links=links) as span:
        yield span


@contextmanager
def continue_span(
    name: str,
    headers: Mapping[str, str] | None,
    *,
    reason: str = "request",
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Iterator[Span]:
    """A span in the trace carried by `headers` (the task's), linking back to the span current now (the request).

    Without a valid context in `headers` it is simply a child of the current span.
    """
    parent = extract(headers)
    if not trace.get_current_span(parent).get_span_context().is_valid:
        with _tracer.start_as_current_span(name, kind=kind, attributes=dict(attributes or {})) as span:
            yield span
        return
    links: list[Link] = []
    here = trace.get_current_span().get_span_context()
    if here.is_valid:
        links.append(Link(here, {LINK_REASON: reason}))
    with _tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=dict(attributes or {}), links=links
    ) as span:
        yield span


# ---------------------------------------------------------------- GenAI span helpers (OpenTelemetry GenAI conventions)


def server_attributes(url: str) -> dict[str, AttributeValue]:
    """`server.address` (host) and `server.port` of a client span, from the server's base URL."""
    parts = urlsplit(url)
    attrs: dict[str, AttributeValue] = {}
    if parts.hostname:
        attrs["server.address"] = parts.hostname
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        if port:
            attrs["server.port"] = port
    return attrs


def _text_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}] if content else []
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        return [{"type": "text", "content": p.get("text", "")} for p in content if isinstance(p, dict) and "text" in p]
    return []


def genai_input_messages(messages: Sequence[Mapping[str, Any]]) -> str:
    """`gen_ai.input.messages`: OpenAI chat messages in the conventions' role/parts shape, as JSON.

    Only for spans when `sluice.telemetry.capture_message_content()` is true: prompts may hold personal data.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        role = str(message.get("role", ""))
        if role == "tool":
            part = {"type": "tool_call_response", "id": message.get("tool_call_id"), "response": message.get("content")}
            out.append({"role": "tool", "parts": [part]})
            continue
        parts = _text_parts(message.get("content"))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            parts.append(
                {"type": "tool_call", "id": call.get("id"), "name": function.get("name"),
                 "arguments": function.get("arguments")}
            )  # fmt: skip
        out.append({"role": role, "parts": parts})
    return json.dumps(out, ensure_ascii=False)


def genai_output_messages(content: str, tool_calls: Sequence[Any], finish_reason: str) -> str:
    """`gen_ai.output.messages` of one completion (tool calls: anything with `call_id`, `name`, `arguments`)."""
    parts = _text_parts(content)
    parts += [{"type": "tool_call", "id": c.call_id, "name": c.name, "arguments": c.arguments} for c in tool_calls]
    return json.dumps([{"role": "assistant", "parts": parts, "finish_reason": finish_reason}], ensure_ascii=False)
