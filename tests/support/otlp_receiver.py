"""An OTLP trace receiver inside the test: OTLP/HTTP (protobuf) and OTLP/gRPC on free loopback ports.

Services export to it as they would to Jaeger or a collector; the test then asks questions about the spans it
received (`spans(name=..., service=...)`, `trace(trace_id)`) and waits for them with a deadline
(`wait_for(...)`), never sleeping.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

__all__ = [
    "ReceivedLink",
    "ReceivedSpan",
    "SpanCapture",
    "SpanStore",
    "grpc_receiver",
    "http_receiver",
    "span_capture",
]

KINDS = {
    PbSpan.SPAN_KIND_UNSPECIFIED: "unspecified",
    PbSpan.SPAN_KIND_INTERNAL: "internal",
    PbSpan.SPAN_KIND_SERVER: "server",
    PbSpan.SPAN_KIND_CLIENT: "client",
    PbSpan.SPAN_KIND_PRODUCER: "producer",
    PbSpan.SPAN_KIND_CONSUMER: "consumer",
}


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return _attributes(v.kvlist_value.values)
    return getattr(v, which)


def _attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


@dataclass(frozen=True)
class ReceivedLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    service: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    links: tuple[ReceivedLink, ...]
    status_code: int
    start_ns: int
    end_ns: int
    events: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<{self.service} {self.kind} {self.name!r} {self.trace_id[:8]}/{self.span_id} ← {self.parent_span_id}>"


@dataclass
class SpanStore:
    """Everything received, decoded to plain Python; thread-safe (the servers run in threads)."""

    _spans: list[ReceivedSpan] = field(default_factory=list)
    _lock: threading.Condition = field(default_factory=threading.Condition)
    requests: int = 0
    endpoint: str = ""

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        received: list[ReceivedSpan] = []
        for rs in request.resource_spans:
            resource = _attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    received.append(
                        ReceivedSpan(
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            name=s.name,
                            kind=KINDS.get(s.kind, str(s.kind)),
                            service=str(resource.get("service.name", "")),
                            attributes=_attributes(s.attributes),
                            resource=resource,
                            links=tuple(
                                ReceivedLink(link.trace_id.hex(), link.span_id.hex(), _attributes(link.attributes))
                                for link in s.links
                            ),
                            status_code=int(s.status.code),
                            start_ns=int(s.start_time_unix_nano),
                            end_ns=int(s.end_time_unix_nano),
                            events=tuple(e.name for e in s.events),
                        )
                    )
        with self._lock:
            self.requests += 1
            self._spans.extend(received)
            self._lock.notify_all()

    def spans(
        self,
        *,
        name: str | None = None,
        prefix: str | None = None,
        service: str | None = None,
        trace_id: str | None = None,
        where: Callable[[ReceivedSpan], bool] | None = None,
    ) -> list[ReceivedSpan]:
        with self._lock:
            out = list(self._spans)
        return [
            s
            for s in out
            if (name is None or s.name == name)
            and (prefix is None or s.name.startswith(prefix))
            and (service is None or s.service == service)
            and (trace_id is None or s.trace_id == trace_id)
            and (where is None or where(s))
        ]

    def by_id(self, span_id: str) -> ReceivedSpan | None:
        return next((s for s in self.spans() if s.span_id == span_id), None)

    def parent_of(self, span: ReceivedSpan) -> ReceivedSpan | None:
        return self.by_id(span.parent_span_id) if span.parent_span_id else None

    def ancestors(self, span: ReceivedSpan) -> list[ReceivedSpan]:
        chain: list[ReceivedSpan] = []
        current = self.parent_of(span)
        while current is not None and current not in chain:
            chain.append(current)
            current = self.parent_of(current)
        return chain

    def wait_for(self, check: Callable[[SpanStore], Any], *, timeout_s: float = 15.0, what: str = "spans") -> Any:
        """Blocks until `check(store)` is truthy (re-checked on every export), then returns its result."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                result = check(self)
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = sorted({f"{s.service}:{s.name}" for s in self._spans})
                    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}; received {names}")
                self._lock.wait(min(remaining, 0.5))

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def _handler(store: SpanStore) -> type[BaseHTTPRequestHandler]:
    class OtlpHttpHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = _decompress(self.rfile.read(length), self.headers.get("Content-Encoding", "").lower())
            if self.path.rstrip("/") != "/v1/traces":
                self._reply(404, b"")
                return
            if "protobuf" not in self.headers.get("Content-Type", ""):
                self._reply(415, b"")
                return
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            store.add(request)
            self._reply(200, trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return OtlpHttpHandler


@contextmanager
def http_receiver() -> Iterator[SpanStore]:
    """OTLP/HTTP on a free port; `store.endpoint` is the base URL for OTEL_EXPORTER_OTLP_ENDPOINT."""
    store = SpanStore()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(store))
    server.daemon_threads = True
    store.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="otlp-http", daemon=True)
    thread.start()
    try:
        yield store
    finally:
        server.shutdown()
        server.server_close()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store: SpanStore) -> None:
        self.store = store

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.store.add(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@contextmanager
def grpc_receiver() -> Iterator[SpanStore]:
    """OTLP/gRPC (TraceService) on a free port; `store.endpoint` is `http://127.0.0.1:<port>`."""
    store = SpanStore()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(store), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    store.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield store
    finally:
        server.stop(grace=None)


class SpanCapture(SpanProcessor):
    """Collects the spans this test process ends, through the global SDK tracer provider (installed if absent).

    For in-process tests of the messaging helpers; every test filters by its own trace or task id, so tests that
    share the process never see each other's spans.
    """

    def __init__(self) -> None:
        self._spans: list[ReadableSpan] = []
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self._spans.append(span)

    def spans(self, *, trace_id: int | None = None, name: str | None = None) -> list[ReadableSpan]:
        with self._lock:
            out = list(self._spans)
        return [
            s
            for s in out
            if (trace_id is None or (s.context is not None and s.context.trace_id == trace_id))
            and (name is None or s.name == name)
        ]


_capture: SpanCapture | None = None


def span_capture() -> SpanCapture:
    """The process-wide capture (one processor, added once to the global provider)."""
    global _capture
    if _capture is None:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            trace.set_tracer_provider(TracerProvider())
            provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider), "another non-SDK tracer provider is installed"
        _capture = SpanCapture()
        provider.add_span_processor(_capture)
    return _capture
