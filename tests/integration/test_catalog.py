"""The live catalog over NATS (CONTRACT §9): advertisements, `/v1/agents` and `/v1/tools` with live-runner counts,
unknown agents refused before anything is published, withdrawn agents, a dying runner leaving the catalog, bad
advertisements ignored, and an agent-runner that picks up a tool schema changed at runtime without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_runner.live_tools import LiveTools
from demo_llm.main import running_server as running_demo
from demo_llm.settings import DemoLLMSettings
from sluice import subjects
from sluice.bus import Bus, connect
from sluice.catalog import Advertiser, AgentAdvert, CatalogView, KnownAgent, RunnerAdvert, ToolAdvert
from sluice.catalog.adverts import encode_advert
from sluice.config import CommonConfig
from sluice.provision import provision
from support.catalog_watch import until_catalog
from support.edge import EdgeUnderTest, published, running_edge
from support.nats_server import NatsServer, running_server
from support.procs import ServiceProcess, base_env
from support.runners import FakeToolRunner, demo_requests, running_worker, submit, wait_for_end
from support.runners import test_settings as runner_settings

SCHEMA_V1: dict[str, Any] = {
    "type": "object",
    "properties": {"expression": {"type": "string", "description": "v1: an arithmetic expression"}},
    "required": ["expression"],
}
SCHEMA_V2: dict[str, Any] = {
    "type": "object",
    "properties": {
        "expression": {"type": "string", "description": "v2: an arithmetic expression"},
        "precision": {"type": "integer", "minimum": 0, "description": "v2: digits after the point"},
    },
    "required": ["expression"],
}


@dataclass
class Private:
    """A NATS server of its own (nothing advertised in it but what the test does), a bus and a catalog view."""

    server: NatsServer
    common: CommonConfig
    bus: Bus
    view: CatalogView


@pytest.fixture
async def private(tmp_path: Path) -> AsyncIterator[Private]:
    with running_server(tmp_path) as server:
        common = CommonConfig(nats_urls=(server.url,), ack_wait_s=3.0, catalog_ttl_s=2.0)
        bus = await connect(common, name="catalog-tests")
        await provision(bus.js, common)
        view = CatalogView(bus)
        await view.start()
        try:
            yield Private(server, common, bus, view)
        finally:
            await view.stop()
            await bus.close()


@contextlib.asynccontextmanager
async def advertising(bus: Bus, advert: RunnerAdvert) -> AsyncIterator[Advertiser]:
    """A runner's advertiser until the block ends (then it withdraws, as a clean stop does)."""
    advertiser = Advertiser(bus, advert)
    stopping = asyncio.Event()
    task = asyncio.create_task(advertiser.run(stopping))
    try:
        await asyncio.wait_for(advertiser.written.wait(), 10)
        yield advertiser
    finally:
        stopping.set()
        await task


def agent_runner(runner: str, *names: str, ttl_s: float = 2.0) -> RunnerAdvert:
    agents = [AgentAdvert(name=n, description=f"{n} agent", tools=["calculator"]) for n in names]
    return RunnerAdvert(runner=runner, kind="agent-runner", started_at=f"2026-01-01T00:00:0{runner[-1]}Z",
                        ttl_s=ttl_s, agents=agents)  # fmt: skip


def tool_runner(runner: str, schema: dict[str, Any], *, started_at: str = "2026-01-01T00:00:00Z") -> RunnerAdvert:
    tool = ToolAdvert(name="calculator", description="calculates", input_schema=schema, timeout_s=5)
    return RunnerAdvert(runner=runner, kind="tool-runner", started_at=started_at, ttl_s=2.0, tools=[tool])


def counts(entries: list[dict[str, Any]]) -> dict[str, int]:
    return {e["name"]: e["runners"] for e in entries}


# ---------------------------------------------------------------- the edge's view of the catalog


async def test_agents_and_tools_are_listed_with_how_many_live_runners_serve_each(private: Private) -> None:
    async with (
        running_edge(private.common, private.bus) as edge,
        advertising(private.bus, agent_runner("a1", "solo", "duo")),
        advertising(private.bus, agent_runner("a2", "duo")),
        advertising(private.bus, tool_runner("t1", SCHEMA_V1)),
    ):
        runtime = edge.app.state.edge
        await until_catalog(runtime.catalog, lambda: counts([a.to_json() for a in runtime.catalog.agents()]) ==
                            {"solo": 1, "duo": 2})  # fmt: skip
        agents = (await edge.client.get("/v1/agents")).json()["agents"]
        tools = (await edge.client.get("/v1/tools")).json()["tools"]
    assert counts(agents) == {"duo": 2, "solo": 1}
    assert next(a for a in agents if a["name"] == "solo")["tools"] == ["calculator"]
    assert tools == [
        {"name": "calculator", "description": "calculates", "input_schema": SCHEMA_V1, "timeout_s": 5.0, "runners": 1}
    ]


async def test_an_agent_no_runner_ever_offered_is_422_and_nothing_is_published(edge_on_session: EdgeUnderTest,
                                                                               bus: Bus) -> None:  # fmt: skip
    before = await published(bus)
    response = await edge_on_session.client.post("/v1/tasks", json={"input": "hi", "agent": "asistant"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "unknown_agent"
    assert await published(bus) == before
    ok = await edge_on_session.client.post("/v1/tasks", json={"input": "hi", "agent": "assistant"})
    assert ok.status_code == 201, ok.text


async def test_an_unknown_agent_on_a2a_is_a_json_rpc_error_and_nothing_is_published(
    edge_on_session: EdgeUnderTest, bus: Bus
) -> None:
    before = await published(bus)
    params = {
        "message": {"messageId": "m-unknown-agent", "role": "ROLE_USER", "parts": [{"text": "hi"}]},
        "metadata": {"agent": "no-such-agent"},
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": params}
    response = await edge_on_session.client.post("/a2a", json=body, headers={"A2A-Version": "1.0"})
    error = response.json()["error"]
    assert error["code"] == -32602 and "no-such-agent" in error["message"]
    assert await published(bus) == before


async def test_a_dead_runners_agents_stay_submittable_and_a_withdrawn_agent_is_refused(private: Private) -> None:
    dying = await connect(private.common, name="dying-runner")
    advertiser = Advertiser(dying, agent_runner("a1", "solo", ttl_s=1.0))
    stopping = asyncio.Event()
    task = asyncio.create_task(advertiser.run(stopping))
    await asyncio.wait_for(advertiser.written.wait(), 10)
    async with running_edge(private.common, private.bus) as edge:
        catalog = edge.app.state.edge.catalog
        await until_catalog(catalog, lambda: [a.runners for a in catalog.agents()] == [1])
        await dying.close()  # the runner's connection dies: no withdrawal, its TTL ends it
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await until_catalog(catalog, lambda: [a.runners for a in catalog.agents()] == [0])
        assert (await edge.client.get("/v1/agents")).json()["agents"][0] | {"description": ""} == {
            "name": "solo", "description": "", "crew": False, "tools": [], "stages": [], "approval_tools": [],
            "runners": 0,
        }  # fmt: skip
        queued = await edge.client.post("/v1/tasks", json={"input": "wait for a runner", "agent": "solo"})
        assert queued.status_code == 201, queued.text

        # An operator withdraws it: nats kv put sluice-catalog known.solo '{"name":"solo","withdrawn":true}'
        kv = await private.bus.js.key_value(subjects.CATALOG_BUCKET)
        await kv.put(subjects.catalog_known_key("solo"), encode_advert(KnownAgent(name="solo", withdrawn=True)))
        await until_catalog(catalog, lambda: not catalog.is_known("solo") or None)
        before = await published(private.bus)
        refused = await edge.client.post("/v1/tasks", json={"input": "hi", "agent": "solo"})
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "unknown_agent"
        assert await published(private.bus) == before
        assert (await edge.client.get("/v1/agents")).json()["agents"] == []


async def test_an_agent_registered_a_moment_ago_is_accepted_even_before_the_edges_watch_sees_it(
    private: Private,
) -> None:
    async with running_edge(private.common, private.bus) as edge:
        kv = await private.bus.js.key_value(subjects.CATALOG_BUCKET)
        await kv.create(subjects.catalog_known_key("fresh"), encode_advert(KnownAgent(name="fresh")))
        response = await edge.client.post("/v1/tasks", json={"input": "hi", "agent": "fresh"})
    assert response.status_code == 201, response.text


async def test_the_card_skills_and_the_accepted_agents_come_from_the_catalog(private: Private) -> None:
    async with (
        running_edge(private.common, private.bus) as edge,
        advertising(private.bus, agent_runner("a1", "solo")),
    ):
        catalog = edge.app.state.edge.catalog
        await until_catalog(catalog, lambda: catalog.is_known("solo"))
        card = (await edge.client.get("/.well-known/agent-card.json")).json()
        params = {"message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hi"}]}}
        body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": params}  # asks for "assistant"
        error = (await edge.client.post("/a2a", json=body, headers={"A2A-Version": "1.0"})).json()["error"]
    assert [s["id"] for s in card["skills"]] == ["solo"]
    assert card["skills"][0]["description"] == "solo agent" and "calculator" in card["skills"][0]["tags"]
    assert error["code"] == -32602 and "assistant" in error["message"]


# ---------------------------------------------------------------- bad advertisements


async def test_bad_advertisements_are_logged_once_each_and_the_rest_of_the_catalog_works(
    private: Private, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sluice.catalog.view")
    kv = await private.bus.js.key_value(subjects.CATALOG_BUCKET)
    bad_tools = RunnerAdvert(
        runner="t9", kind="tool-runner", started_at="2026-01-01T00:00:09Z",
        tools=[
            ToolAdvert(name="x" * 65), ToolAdvert(name="has space"),
            ToolAdvert(name="not_a_schema", input_schema={"type": "string"}),
            ToolAdvert(name="calculator", input_schema=SCHEMA_V2),  # claims t1's tool with another schema
            ToolAdvert(name="fine"),
        ],
    )  # fmt: skip
    async with advertising(private.bus, tool_runner("t1", SCHEMA_V1)):
        for _ in range(2):  # the same bad entries twice: logged once
            await kv.put(subjects.catalog_runner_key("tool-runner", "t8"), b"{not json")
            await kv.put(subjects.catalog_runner_key("tool-runner", "t7"), encode_advert(tool_runner("t6", {})))
            await kv.put(subjects.catalog_runner_key("tool-runner", "t9"), encode_advert(bad_tools))
        view = private.view
        tools = await until_catalog(view, lambda: {t.name: t for t in view.tools()} if len(view.tools()) == 2 else None)
        view.tools()  # a second read does not log the conflict again
    assert tools["calculator"].input_schema == SCHEMA_V1 and tools["calculator"].runners == 1
    assert tools["fine"].runners == 1
    messages = [r.getMessage() for r in caplog.records]
    for needle in ("t8", "names runner 't6'", "x" * 64, "'has space'", "'not_a_schema'", "runner t9 claims tool"):
        assert sum(needle in m for m in messages) == 1, (needle, messages)


# ---------------------------------------------------------------- runners come and go


async def test_a_killed_tool_runners_tools_leave_the_catalog(private: Private, tmp_path: Path) -> None:
    process = ServiceProcess(
        "tool-runner",
        base_env(SLUICE_NATS_URL=private.server.url, SLUICE_CATALOG_TTL="2s", SLUICE_TOOL_METRICS_PORT="0",
                 SLUICE_TOOL_RUNNER_ID="doomed"),
        tmp_path / "tool-runner.log",
    )  # fmt: skip
    process.start()
    try:
        view = private.view
        served = await until_catalog(view, lambda: {t.name: t.runners for t in view.tools()} or None)
        assert served["calculator"] == 1 and "ask_user" not in served
    finally:
        process.kill()
    await until_catalog(view, lambda: view.tools() == [] or None, timeout_s=30)


async def test_a_tool_schema_changed_at_runtime_reaches_the_agents_next_model_call(private: Private) -> None:
    """The agent-runner keeps running; its tools come only from the catalog, first from a tool-runner of one
    version, then from one of another version with a different schema."""
    async with running_demo(DemoLLMSettings(port=0), log_level="warning") as demo:
        fake = FakeToolRunner(private.bus)  # executes the calls; it advertises nothing
        await fake.start()
        try:
            settings = runner_settings(private.common, demo.base_url)
            async with running_worker(settings, tools=LiveTools(private.view)):
                offered: list[dict[str, Any]] = []
                for runner, schema in (("t1", SCHEMA_V1), ("t2", SCHEMA_V2)):
                    async with advertising(private.bus, tool_runner(runner, schema)):
                        await until_catalog(private.view, lambda s=schema: [t.input_schema for t in  # type: ignore[misc]
                                            private.view.tools()] == [s])  # fmt: skip
                        task_id = await submit(private.bus, f"What is 17 * 23? ({runner})")
                        events = await wait_for_end(private.bus, task_id, timeout_s=30)
                        assert type(events[-1]).__name__ == "TaskCompleted", events[-1]
                        calls = [e for e in await demo_requests(demo) if (e.get("last_user") or "").endswith(
                            f"({runner})")]  # fmt: skip
                        offered.append(calls[0]["tools"])
        finally:
            await fake.stop()
    assert offered[0]["calculator"] == SCHEMA_V1 and offered[1]["calculator"] == SCHEMA_V2
    assert "ask_user" in offered[0]  # the agent-runner's own tool joins the catalog's


@pytest.fixture
async def edge_on_session(common_config: CommonConfig, bus: Bus) -> AsyncIterator[EdgeUnderTest]:
    async with running_edge(common_config, bus) as edge:
        yield edge


async def test_the_catalog_key_builders_refuse_wildcards_and_dots() -> None:
    from sluice.errors import InvalidInput

    for bad in ("a.b", "*", ">", "", "a b"):
        with pytest.raises(InvalidInput):
            subjects.catalog_known_key(bad)
        with pytest.raises(InvalidInput):
            subjects.catalog_runner_key("tool-runner", bad)
    with pytest.raises(InvalidInput):
        subjects.catalog_runner_key("edge", "r1")
    assert httpx  # the module's HTTP client is the edge fixture's
