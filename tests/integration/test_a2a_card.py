"""The A2A agent card, conformant to 1.0 (ETag, 304, the 0.3 shape only on request), `POST /a2a/`, and a messageId
reused for a different message refused."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from a2a.types import AgentCard
from google.protobuf import json_format

from sluice import subjects
from sluice.bus import Bus
from sluice.catalog import KnownAgent
from sluice.catalog.adverts import encode_advert
from sluice.config import CommonConfig
from support.catalog_watch import until_catalog
from support.edge import EdgeUnderTest, running_edge

CARD = "/.well-known/agent-card.json"
ONLY_0_3 = ("url", "preferredTransport", "protocolVersion", "additionalInterfaces")


@pytest.fixture
async def edge(common_config: CommonConfig, bus: Bus) -> AsyncIterator[EdgeUnderTest]:
    async with running_edge(common_config, bus) as running:
        yield running


async def test_a_1_0_client_gets_exactly_a_1_0_card_and_a_0_3_client_the_0_3_fields(edge: EdgeUnderTest) -> None:
    current = await edge.client.get(CARD, headers={"A2A-Version": "1.0"})
    default = await edge.client.get(CARD)
    legacy = await edge.client.get(CARD, headers={"A2A-Version": "0.3"})
    card = current.json()
    assert default.json() == card  # no version header: the current protocol
    assert not set(ONLY_0_3) & set(card), card.keys()
    # Strict parse into the SDK's A2A 1.0 AgentCard message: an unknown (e.g. 0.3-only) field would be refused.
    parsed = json_format.ParseDict(card, AgentCard(), ignore_unknown_fields=False)
    assert {i.protocol_version for i in parsed.supported_interfaces} >= {"1.0"}
    assert {"assistant", "dev-team"} <= {s.id for s in parsed.skills}
    old = legacy.json()
    assert old["protocolVersion"].startswith("0.3") and old["url"].endswith("/a2a") and old["preferredTransport"]
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict(old, AgentCard(), ignore_unknown_fields=False)
    assert current.headers["etag"] != legacy.headers["etag"] and "a2a-version" in current.headers["vary"].lower()


async def test_the_card_has_an_etag_a_matching_if_none_match_is_304_and_a_catalog_change_a_new_etag(
    edge: EdgeUnderTest, bus: Bus
) -> None:
    first = await edge.client.get(CARD)
    etag = first.headers["etag"]
    again = await edge.client.get(CARD, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other = await edge.client.get(CARD, headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.json() == first.json()

    name = f"card-agent-{uuid.uuid4().hex[:8]}"
    kv = await bus.js.key_value(subjects.CATALOG_BUCKET)
    await kv.create(subjects.catalog_known_key(name), encode_advert(KnownAgent(name=name)))
    catalog = edge.app.state.edge.catalog
    await until_catalog(catalog, lambda: catalog.is_known(name))
    changed = await edge.client.get(CARD, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert name in {s["id"] for s in changed.json()["skills"]}


async def _rpc(edge: EdgeUnderTest, method: str, params: dict[str, Any], *, path: str = "/a2a") -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    response = await edge.client.post(path, json=body, headers={"A2A-Version": "1.0"})
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    return reply


def _send(message_id: str, text: str, **metadata: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "message": {"messageId": message_id, "role": "ROLE_USER", "parts": [{"text": text}]},
        "configuration": {"returnImmediately": True},
    }
    if metadata:
        params["metadata"] = metadata
    return params


async def test_post_a2a_with_a_trailing_slash_is_the_same_endpoint(edge: EdgeUnderTest) -> None:
    reply = await _rpc(edge, "SendMessage", _send(str(uuid.uuid4()), "hello over /a2a/"), path="/a2a/")
    task_id = reply["result"]["task"]["id"]
    got = await _rpc(edge, "GetTask", {"id": task_id}, path="/a2a/")
    assert got["result"]["id"] == task_id


async def test_a_reused_message_id_is_the_same_task_but_with_other_content_an_error(edge: EdgeUnderTest) -> None:
    message_id = str(uuid.uuid4())
    first = await _rpc(edge, "SendMessage", _send(message_id, "what is 2+2?"))
    repeat = await _rpc(edge, "SendMessage", _send(message_id, "what is 2+2?"))
    assert repeat["result"]["task"]["id"] == first["result"]["task"]["id"]  # a retry: the same task
    for different in (_send(message_id, "what is 3+3?"), _send(message_id, "what is 2+2?", agent="dev-team")):
        error = (await _rpc(edge, "SendMessage", different))["error"]
        assert error["code"] == -32602 and "already used for a different message" in error["message"], error


async def test_the_card_serves_no_500_for_odd_headers(edge: EdgeUnderTest) -> None:
    for headers in ({"If-None-Match": "*"}, {"If-None-Match": ""}, {"A2A-Version": "9.9"}, {"If-None-Match": ",,"}):
        response = await edge.client.get(CARD, headers=headers)
        assert response.status_code in (200, 304), (headers, response.status_code)
    assert (await edge.client.get(CARD, headers={"If-None-Match": "*"})).status_code == 304
    assert httpx  # the edge fixture's client is httpx
