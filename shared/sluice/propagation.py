"""W3C trace context in NATS headers: injected into every message Sluice publishes, extracted on receive.

No instrumentation package exists for nats-py, so this is the one place that carries context across NATS.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

__all__ = ["attached", "current_trace_id", "extract", "inject", "link_from", "trace_id_from_headers"]


def inject(headers: dict[str, str], ctx: otel_context.Context | None = None) -> dict[str, str]:
    """Adds `traceparent` (and `tracestate`) of `ctx` (default: the current context) to `headers`."""
    propagate.inject(headers, context=ctx)
    return headers


def extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(headers or {}))


def link_from(headers: Mapping[str, str] | None) -> trace.Link | None:
    """A span link to the producer of a message (for redelivered or batched processing)."""
    span_ctx = trace.get_current_span(extract(headers)).get_span_context()
    return trace.Link(span_ctx) if span_ctx.is_valid else None


def current_trace_id(ctx: otel_context.Context | None = None) -> str:
    span_ctx = trace.get_current_span(ctx).get_span_context()
    return format(span_ctx.trace_id, "032x") if span_ctx.is_valid else ""


def trace_id_from_headers(headers: Mapping[str, str] | None) -> str:
    """The trace id in a `traceparent` header, or ""; works even when no tracer provider is installed."""
    parent = (headers or {}).get("traceparent", "")
    parts = parent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else ""


@contextmanager
def attached(headers: Mapping[str, str] | None) -> Iterator[otel_context.Context]:
    """Makes the context carried by `headers` current for the block (without starting a span)."""
    ctx = extract(headers)
    token = otel_context.attach(ctx)
    try:
        yield ctx
    finally:
        otel_context.detach(token)
