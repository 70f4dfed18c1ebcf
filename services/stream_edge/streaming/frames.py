"""The bytes of the event stream (CONTRACT §5): the only code in Sluice that writes `data:` or a blank line.

Pure functions, no I/O. An event is stored without `id`; it is served with `"id":"<seq>"` spliced in front of the
stored JSON, without decoding it. The `*_event` functions do the splice and the framing in one join: they are what
the engine calls once per event and format, however many clients read the result.

    SSE     id: 42\\nevent: llm.delta\\ndata: {"id":"42","task_id":...}\\n\\n
    NDJSON  {"id":"42","task_id":...}\\n
"""

from __future__ import annotations

import msgspec

__all__ = [
    "NDJSON_CONTENT_TYPE",
    "SSE_CONTENT_TYPE",
    "SSE_KEEPALIVE",
    "TERMINAL_TYPE_BYTES",
    "ndjson_event",
    "ndjson_heartbeat",
    "ndjson_line",
    "served_json",
    "sse_data",
    "sse_event",
    "sse_frame",
    "sse_retry",
    "type_bytes",
]

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
NDJSON_CONTENT_TYPE = "application/x-ndjson"
SSE_KEEPALIVE = b": keep-alive\n\n"
TERMINAL_TYPE_BYTES = frozenset({b"task.completed", b"task.failed", b"task.canceled"})  # the log's last event

_type_cache: dict[str, bytes] = {}


def type_bytes(event_type: str) -> bytes:
    """An event type as the bytes of an `event:` line (types come from validated subjects: no newlines)."""
    cached = _type_cache.get(event_type)
    if cached is None:
        cached = event_type.encode()
        if len(_type_cache) < 256:
            _type_cache[event_type] = cached
    return cached


def sse_retry(retry_ms: int) -> bytes:
    """The first bytes of every SSE stream."""
    return b"retry: %d\n\n" % retry_ms


def _one_line_object(payload: bytes) -> bytes:
    """The stored JSON as a compact one-line object: stored events already are; anything else is re-encoded."""
    if payload.startswith(b"{") and not payload.startswith(b"{}") and b"\n" not in payload and b"\r" not in payload:
        return payload
    try:
        decoded = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        decoded = {"undecodable": payload.decode("utf-8", "replace")}
    if not isinstance(decoded, dict):
        decoded = {"value": decoded}
    return msgspec.json.encode(decoded)


def served_json(seq: int, payload: bytes) -> bytes:
    """`b'{"id":"42",' + payload[1:]`: the served envelope, with its id, from the stored one."""
    payload = _one_line_object(payload)
    if payload == b"{}":
        return b'{"id":"%d"}' % seq
    return b'{"id":"%d",' % seq + payload[1:]


def sse_frame(id: str | int | None, type: str, json_bytes: bytes) -> bytes:
    """One SSE event; `id=None` writes no id line (stream-only events such as `stream.gap`)."""
    head = b"event: " + type_bytes(type) + b"\ndata: "
    if id is not None:
        head = b"id: " + str(id).encode() + b"\n" + head
    return head + json_bytes + b"\n\n"


def sse_data(id: int | None, bodies: list[bytes]) -> bytes:
    """One log event as a protocol's SSE frames (`data:` only, as the AI SDK and AG-UI read them), the event id on
    the last: a connection cut between them resumes before the event, never inside it. No bodies: nothing;
    `id=None`: no id line (a stream-only frame, a closing marker)."""
    if not bodies:
        return b""
    head = [b"data: " + body + b"\n\n" for body in bodies[:-1]]
    id_line = b"" if id is None else b"id: %d\n" % id
    return b"".join((*head, id_line, b"data: ", bodies[-1], b"\n\n"))


def ndjson_line(json_bytes: bytes) -> bytes:
    return json_bytes + b"\n"


def ndjson_heartbeat(ts: str) -> bytes:
    return b'{"type":"heartbeat","ts":"' + ts.encode() + b'"}\n'


def sse_event(seq: int, event_type: bytes, payload: bytes) -> bytes:
    """`sse_frame(seq, type, served_json(seq, payload))` in one join: the hot path."""
    payload = _one_line_object(payload)
    if payload == b"{}":
        return sse_frame(seq, event_type.decode(), served_json(seq, payload))
    sid = b"%d" % seq
    return b"".join((b"id: ", sid, b"\nevent: ", event_type, b'\ndata: {"id":"', sid, b'",', payload[1:], b"\n\n"))


def ndjson_event(seq: int, payload: bytes) -> bytes:
    """`ndjson_line(served_json(seq, payload))` in one join: the hot path."""
    payload = _one_line_object(payload)
    if payload == b"{}":
        return ndjson_line(served_json(seq, payload))
    return b"".join((b'{"id":"', b"%d" % seq, b'",', payload[1:], b"\n"))
