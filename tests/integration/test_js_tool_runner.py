"""A tool-runner in JavaScript (tests/js_tool_runner/, the official @nats-io packages), written from the AsyncAPI
document's tool protocol: it advertises its tool in the catalog, serves calls through the shared consumer, and a
call redelivered after it crashed between `tool.completed` and the ack is not run or completed twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sluice import events as ev
from sluice.bus import Bus, connect
from sluice.catalog import CatalogView
from sluice.config import CommonConfig
from sluice.ids import new_task_id
from sluice.provision import provision
from stream_edge.asyncapi import build_document
from support.catalog_watch import until_catalog
from support.nats_server import NatsServer, running_server
from support.tool_runner import call_events, completed_event, create_task, publish_call
from support.waiting import eventually
from tool_runner.main import serve as tool_runner_serve
from tool_runner.settings import ToolRunnerSettings

RUNNER_DIR = Path(__file__).resolve().parents[1] / "js_tool_runner"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(
    NODE is None or not (RUNNER_DIR / "node_modules" / "@nats-io" / "jetstream").exists(),
    reason="node or tests/js_tool_runner/node_modules is missing: run `make node-deps` (make test does)",
)


@dataclass
class JsRunner:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def lines(self) -> list[dict[str, object]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    def logged(self, msg: str, **fields: object) -> list[dict[str, object]]:
        return [e for e in self.lines() if e.get("msg") == msg and all(e.get(k) == v for k, v in fields.items())]


@contextlib.contextmanager
def js_runner(server: NatsServer, log_path: Path, **env: str) -> Iterator[JsRunner]:
    assert NODE is not None
    environment = {**os.environ, "SLUICE_NATS_URL": server.url, "SLUICE_CATALOG_TTL_S": "3", **env}
    with log_path.open("ab") as out:
        proc = subprocess.Popen([NODE, str(RUNNER_DIR / "tool_runner.mjs")], env=environment, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    runner = JsRunner(proc, log_path)
    try:
        yield runner
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@dataclass
class Private:
    server: NatsServer
    bus: Bus
    view: CatalogView


@pytest.fixture
async def private(tmp_path: Path) -> AsyncIterator[Private]:
    with running_server(tmp_path) as server:
        common = CommonConfig(nats_urls=(server.url,), ack_wait_s=2.0)
        bus = await connect(common, name="js-tool-runner-tests")
        await provision(bus.js, common)
        view = CatalogView(bus)
        await view.start()
        try:
            yield Private(server, bus, view)
        finally:
            await view.stop()
            await bus.close()


async def test_the_js_tool_runner_advertises_and_serves_its_tool(private: Private, tmp_path: Path) -> None:
    task_id = new_task_id()
    await create_task(private.bus, task_id)
    with js_runner(private.server, tmp_path / "js.log", SLUICE_TOOL_RUNNER_ID="js-1") as runner:
        tools = await until_catalog(private.view, lambda: {t.name: t for t in private.view.tools()} or None)
        call_id = await publish_call(private.bus, task_id, "js_reverse", {"text": "sluice"})
        done = await completed_event(private.bus, task_id, call_id, timeout_s=20)
        unknown = await publish_call(private.bus, task_id, "no_such_js_tool", {})
        refused = await completed_event(private.bus, task_id, unknown, timeout_s=20)
        assert runner.logged("ready")
    await until_catalog(private.view, lambda: private.view.tools() == [] or None)  # its clean stop withdrew it
    assert tools["js_reverse"].runners == 1 and tools["js_reverse"].input_schema["required"] == ["text"]
    assert (done.data.ok, done.data.result, done.source) == (True, "eciuls", "tool-runner")
    assert refused.data.ok is False and "unknown tool" in (refused.data.error or "")
    events = await call_events(private.bus, task_id, call_id)
    assert [type(e) for e in events] == [ev.ToolStarted, ev.ToolCompleted]


async def test_a_call_redelivered_after_a_crash_before_the_ack_is_not_completed_twice(
    private: Private, tmp_path: Path
) -> None:
    task_id = new_task_id()
    await create_task(private.bus, task_id)
    call_id = f"crash-{task_id[-6:]}"
    log_path = tmp_path / "js.log"
    with js_runner(private.server, log_path, SLUICE_TOOL_RUNNER_ID="js-2", SLUICE_JS_EXIT_BEFORE_ACK=call_id) as first:
        await until_catalog(private.view, lambda: private.view.tools() or None)
        await publish_call(private.bus, task_id, "js_reverse", {"text": "abc"}, call_id=call_id)
        assert await asyncio.to_thread(first.proc.wait, 30) == 7  # it stored tool.completed and died unacked
    with js_runner(private.server, log_path, SLUICE_TOOL_RUNNER_ID="js-3") as second:
        await eventually(lambda: _async(second.logged("skipped", call_id=call_id)), timeout_s=30,
                         what="the redelivered call to be recognised")  # fmt: skip
        ran = second.logged("ran", call_id=call_id)
    events = await call_events(private.bus, task_id, call_id)
    assert [type(e) for e in events] == [ev.ToolStarted, ev.ToolCompleted], events
    assert len(ran) == 1 and ran[0]["delivered"] == 1  # run once, on the first delivery only
    assert second.logged("skipped", call_id=call_id)[0]["why"] == "completed"


async def test_side_by_side_with_the_python_tool_runner_each_call_reaches_the_runner_that_serves_its_tool(
    private: Private, tmp_path: Path
) -> None:
    """Both runners pull the one shared consumer; a call for a tool only the other one serves is passed on to it
    (not answered "unknown tool"), and passing on is not counted as a crash."""
    task_id = new_task_id()
    await create_task(private.bus, task_id)
    common = CommonConfig(nats_urls=(private.server.url,), ack_wait_s=2.0, max_deliver=2)
    settings = ToolRunnerSettings(metrics_port=0, fetch_timeout_s=0.5, runner_id="py-1")
    stopping = asyncio.Event()
    python_runner = asyncio.create_task(tool_runner_serve(private.bus, stopping, settings=settings, common=common))
    try:
        with js_runner(private.server, tmp_path / "js.log", SLUICE_TOOL_RUNNER_ID="js-4"):
            served = {"js_reverse", "calculator"}
            await until_catalog(private.view, lambda: served <= {t.name for t in private.view.tools()})
            calls = []
            for n in range(6):
                calls.append((await publish_call(private.bus, task_id, "js_reverse", {"text": f"ab{n}"}), f"{n}ba"))
                calls.append((await publish_call(private.bus, task_id, "calculator", {"expression": f"{n}*7"}),
                              str(n * 7)))  # fmt: skip
            done = [
                (await completed_event(private.bus, task_id, call_id, timeout_s=30), want) for call_id, want in calls
            ]
    finally:
        stopping.set()
        await asyncio.wait_for(python_runner, 30)
    errors = [e.data.error for e, _ in done]
    assert [(e.data.ok, e.data.result) for e, _ in done] == [(True, want) for _, want in done], errors


async def _async(value: object) -> object:
    return value


def test_the_asyncapi_document_states_the_tool_protocol_the_js_runner_follows() -> None:
    document = build_document()
    steps = document["operations"]["serveToolCall"]["description"]
    for rule in ("Nats-TTL", "{task_id}:tool:{call_id}:start", "{task_id}:tool:{call_id}:done", "Redelivery check",
                 "tool-runners", "KV-Operation: DEL", "+WPI"):  # fmt: skip
        assert rule in steps, rule
    assert {"RunnerAdvert", "KnownAgent"} <= set(document["components"]["schemas"])
    assert document["channels"]["catalogRunners"]["address"] == "$KV.sluice-catalog.runners.{kind}.{runner_id}"
