"""The bytes of the event stream (pure functions; lives with the streaming tests it supports)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from stream_edge.streaming import frames, natsfast


def test_served_json_splices_the_id_without_decoding() -> None:
    payload = b'{"task_id":"T","type":"llm.delta","data":{"text":"a\\nb"}}'
    assert frames.served_json(42, payload) == b'{"id":"42",' + payload[1:]
    assert json.loads(frames.served_json(42, payload))["id"] == "42"


def test_sse_frame_has_id_event_and_one_data_line() -> None:
    body = frames.served_json(7, b'{"type":"task.started"}')
    assert (
        frames.sse_frame("7", "task.started", body)
        == b'id: 7\nevent: task.started\ndata: {"id":"7","type":"task.started"}\n\n'
    )
    assert frames.sse_frame(None, "stream.gap", b"{}") == b"event: stream.gap\ndata: {}\n\n"


def test_hot_path_framing_equals_the_composed_functions() -> None:
    payload = b'{"task_id":"T","type":"llm.delta"}'
    assert frames.sse_event(9, b"llm.delta", payload) == frames.sse_frame(
        9, "llm.delta", frames.served_json(9, payload)
    )
    assert frames.ndjson_event(9, payload) == frames.ndjson_line(frames.served_json(9, payload))


def test_payloads_that_would_break_the_framing_are_made_one_line() -> None:
    pretty = b'{\n  "type": "x",\n  "data": {"a": 1}\n}'
    line = frames.ndjson_event(3, pretty)
    assert line.count(b"\n") == 1 and json.loads(line) == {"id": "3", "type": "x", "data": {"a": 1}}
    assert frames.served_json(4, b"{}") == b'{"id":"4"}'
    assert json.loads(frames.served_json(5, b"not json"))["id"] == "5"
    assert b"\n\n" not in frames.sse_event(6, b"x.y", pretty)[:-2]


def test_keepalives_and_preamble() -> None:
    assert frames.sse_retry(2000) == b"retry: 2000\n\n"
    assert frames.SSE_KEEPALIVE == b": keep-alive\n\n"
    beat = json.loads(frames.ndjson_heartbeat("2026-01-01T00:00:00.000Z"))
    assert beat == {"type": "heartbeat", "ts": "2026-01-01T00:00:00.000Z"}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=12) | st.sampled_from(["Nats-Msg-Id"]),
            st.sampled_from([":", ": ", ":\t", " : ", ""]),
            st.text(max_size=12),
        ),
        max_size=6,
    ),
    st.binary(max_size=8),
)
def test_fast_header_parser_equals_the_nats_client_parser(lines: list[tuple[str, str, str]], noise: bytes) -> None:
    raw = b"\r\n".join(name.encode() + sep.encode() + value.encode() for name, sep, value in lines) + noise
    raw = raw + b"\r\n\r\n"
    assert natsfast.header_lines(raw) == Client._parse_header_lines(raw)
