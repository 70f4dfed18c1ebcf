"""The wire contract decodes strictly: unknown types and missing fields are clear errors at the boundary."""

from __future__ import annotations

import msgspec
import pytest

from sluice import events as ev

BASE = '"task_id":"01JD3S0000000000000000000A","ts":"2026-11-21T10:00:00.123Z","source":"agent-runner"'


def test_every_contract_type_is_in_the_union() -> None:
    assert set(ev.EVENT_TYPES) == {
        "task.submitted", "task.started", "agent.started", "agent.completed", "llm.started", "llm.delta",
        "llm.completed", "tool.started", "tool.completed", "budget.warning", "budget.exceeded",
        "task.input_required", "task.resumed", "task.completed", "task.failed", "task.canceled",
    }  # fmt: skip


def test_round_trip_keeps_every_field_and_omits_the_absent_id() -> None:
    event = ev.LlmDelta(
        task_id="01JD3S0000000000000000000A", ts="t", source="agent-runner", trace_id="ab" * 16,
        data=ev.LlmDeltaData(step=1, attempt=1, text="Hel"),
    )  # fmt: skip
    payload = ev.encode(event)
    assert b'"id"' not in payload
    assert msgspec.json.decode(payload)["type"] == "llm.delta"
    assert ev.decode_event(payload) == event


def test_unknown_type_is_rejected_with_the_field_named() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.type"):
        ev.decode_event("{" + BASE + ',"type":"llm.nonsense","data":{}}')


def test_missing_data_field_is_rejected_with_its_path() -> None:
    with pytest.raises(msgspec.ValidationError, match="text"):
        ev.decode_event("{" + BASE + ',"type":"llm.delta","data":{"step":1,"attempt":1}}')


def test_stream_only_types_decode_only_when_served() -> None:
    gap = "{" + BASE + ',"type":"stream.gap","data":{"after":"3","oldest":"9"}}'
    with pytest.raises(msgspec.ValidationError):
        ev.decode_event(gap)
    assert isinstance(ev.decode_event(gap, served=True), ev.StreamGap)


def test_every_listed_data_field_is_present_even_when_defaulted() -> None:
    data = ev.ToolCompletedData(call_id="c1", name="calculator", ok=True, result="391")
    assert set(msgspec.json.decode(ev.encode(data))) >= {
        "call_id",
        "name",
        "ok",
        "result",
        "error",
        "duration_ms",
    }


def test_schema_covers_events_record_and_messages() -> None:
    schema = ev.schemas()
    names = set(schema["$defs"])
    assert {"LlmDelta", "TaskRecord", "WorkMessage", "ToolCallMessage", "TaskSnapshot"} <= names
