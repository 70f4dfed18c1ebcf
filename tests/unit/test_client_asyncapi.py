"""The AsyncAPI document of the NATS interface is well-formed: every reference resolves, every address parameter
is declared, and the payload schemas accept the messages Sluice really sends."""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import msgspec
import pytest

from sluice import events as ev
from sluice import subjects
from sluice.events import LOG_EVENT_CLASSES, encode, event_type
from sluice.ids import new_task_id
from sluice.messages import ControlMessage, ToolCallMessage, WorkMessage
from stream_edge.asyncapi import build_document
from support.clients import scripted_events

DOC = build_document()


def resolve(ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = DOC
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve (at {part!r})"
        node = node[part]
    return node


def refs_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs_in(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs_in(value)]
    return []


def validator(schema_name: str) -> Any:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": DOC["components"]}
    return jsonschema_rs.Draft7Validator(schema)


def test_it_is_an_asyncapi_3_document_and_every_reference_resolves() -> None:
    assert DOC["asyncapi"] == "3.0.0"
    assert {"title", "version"} <= DOC["info"].keys()
    refs = refs_in(DOC)
    assert len(refs) > 50
    for ref in refs:
        resolve(ref)


def test_channels_cover_every_subject_and_declare_their_parameters() -> None:
    addresses = {c["address"] for c in DOC["channels"].values()}
    assert {"sluice.evt.{task_id}.{type}", "sluice.run.{task_id}", "sluice.tool.{name}.{task_id}",
            "sluice.ctl.{task_id}"} <= addresses  # fmt: skip
    for name, channel in DOC["channels"].items():
        placeholders = set(re.findall(r"{(\w+)}", channel["address"]))
        assert placeholders == set(channel.get("parameters", {})), name
        assert channel["messages"], name
    assert set(resolve("#/components/parameters/type")["enum"]) == set(ev.EVENT_TYPES)
    # The shapes agree with the subject builders.
    task = new_task_id()
    assert subjects.event(task, "llm.delta") == f"sluice.evt.{task}.llm.delta"
    assert subjects.tool_call("calculator", task) == f"sluice.tool.calculator.{task}"


def test_operations_point_at_their_channel_and_its_messages() -> None:
    for name, operation in DOC["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        channel_ref = operation["channel"]["$ref"]
        resolve(channel_ref)
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel_ref + "/messages/"), name
            resolve(message["$ref"])


def test_every_event_type_has_a_message_with_a_resolvable_payload() -> None:
    messages = DOC["components"]["messages"]
    for cls in LOG_EVENT_CLASSES:
        message = messages[cls.__name__]
        assert message["name"] == event_type(cls)
        payload = resolve(message["payload"]["$ref"])
        assert payload["properties"]["type"] == {"enum": [event_type(cls)]}


@pytest.mark.parametrize("event", scripted_events(new_task_id(), tool=("clock", "{}", "noon"), ask="Name?"),
                         ids=lambda e: event_type(type(e)))  # fmt: skip
def test_payload_schemas_accept_the_events_sluice_stores(event: ev.Event) -> None:
    stored = msgspec.json.decode(encode(event))
    stored.pop("id", None)
    validator(type(event).__name__).validate(stored)


def test_payload_schemas_accept_the_messages_and_reject_a_wrong_one() -> None:
    task = new_task_id()
    samples = {
        "WorkMessage": WorkMessage(task_id=task, reason="resumed"),
        "ToolCallMessage": ToolCallMessage(task_id=task, call_id="c1", name="clock", arguments="{}"),
        "ControlMessage": ControlMessage(task_id=task, action="cancel"),
    }
    for name, message in samples.items():
        validator(name).validate(msgspec.json.decode(encode(message)))
    assert not validator("LlmDelta").is_valid({"type": "llm.delta", "task_id": task, "ts": "t", "source": "s",
                                               "data": {"step": 1}})  # fmt: skip
