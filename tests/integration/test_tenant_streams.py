"""One tenant's open streams are counted on every kind of stream the edge serves (CONTRACT §8): the native events
route, A2A subscribe and send-streaming, the AI SDK chat and AG-UI streams. A stream that would create a task and
is refused creates none; a native create-and-stream at the limit answers the record instead. One edge in this
process, a limit of one stream (the counting across replicas is tests/e2e/test_tenant_limits.py)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from sluice.bus import Bus
from sluice.config import CommonConfig
from support.catalog import advertise_shipped_agents
from support.edge import EdgeUnderTest, published, running_edge

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
async def edge(common_config: CommonConfig, bus: Bus) -> AsyncIterator[EdgeUnderTest]:
    await advertise_shipped_agents(bus)
    async with running_edge(common_config, bus, tenant_max_streams=1) as running:
        yield running


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "tenant_limit"
    assert int(response.headers["Retry-After"]) >= 1


@contextlib.asynccontextmanager
async def one_open_stream(client: httpx.AsyncClient, task_id: str) -> AsyncIterator[None]:
    """A live native stream of the task, open (a first line read) inside the block."""
    async with client.stream("GET", f"/v1/tasks/{task_id}/events") as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        await anext(lines)
        yield
        await lines.aclose()


async def test_every_kind_of_stream_counts_and_a_refused_one_creates_nothing(edge: EdgeUnderTest, bus: Bus) -> None:
    client = edge.client
    task_id = (await client.post("/v1/tasks", json={"input": "waits for a runner"})).json()["id"]
    context_id = (await client.get(f"/v1/tasks/{task_id}")).json()["context_id"]
    async with one_open_stream(client, task_id):
        assert_limited(await client.get(f"/v1/tasks/{task_id}/events", params={"follow": "false"}))
        assert_limited(await client.get(f"/v1/chat/{context_id}/stream"))
        assert_limited(await client.get(f"/v1/ag-ui/runs/{task_id}/events"))
        before = await published(bus)
        chat = {"id": uuid.uuid4().hex, "trigger": "submit-message", "messageId": None,
                "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}  # fmt: skip
        assert_limited(await client.post("/v1/chat", json=chat))
        run = {"threadId": uuid.uuid4().hex, "runId": uuid.uuid4().hex, "state": {}, "tools": [], "context": [],
               "messages": [{"id": "m1", "role": "user", "content": "hi"}], "forwardedProps": {}}  # fmt: skip
        assert_limited(await client.post("/v1/ag-ui", json=run))
        message = {"role": "ROLE_USER", "messageId": uuid.uuid4().hex, "parts": [{"text": "hi"}]}
        rpc = {"jsonrpc": "2.0", "id": 1, "method": "SendStreamingMessage", "params": {"message": message}}
        refused_send = await client.post("/a2a", json=rpc, headers={"A2A-Version": "1.0"})
        assert "tenant_limit" in refused_send.text and "-32603" in refused_send.text
        rest = await client.post("/a2a/rest/message:stream", json={"message": message}, headers={"A2A-Version": "1.0"})
        assert rest.status_code == 429, rest.text
        assert rest.json()["error"]["details"][0]["reason"] == "TENANT_LIMIT" and "tenant_limit" in rest.text
        assert await published(bus) == before, "a refused stream created a task"
        # Create-and-stream at the limit: the task is created, and answered as its record.
        created = await client.post("/v1/tasks", json={"input": "x"}, headers={"Accept": "text/event-stream"})
        assert created.status_code == 201 and created.headers["content-type"].startswith("application/json")
    # The native stream closed: its place is free, and an A2A subscribe takes it.
    subscribe = {"jsonrpc": "2.0", "id": 2, "method": "SubscribeToTask", "params": {"id": task_id}}
    async with client.stream("POST", "/a2a", json=subscribe, headers={"A2A-Version": "1.0"}) as a2a:
        assert a2a.status_code == 200
        lines = a2a.aiter_lines()
        assert "tenant_limit" not in await anext(lines)
        assert_limited(await client.get(f"/v1/tasks/{task_id}/events", params={"follow": "false"}))
        await lines.aclose()
