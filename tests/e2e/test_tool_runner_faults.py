"""`sluice tool-runner` as real processes: a runner killed mid-call loses nothing and duplicates nothing, and a
runner told to stop finishes what it can, hands back the rest, and exits 0.

These tests own their nats-server (and so their consumer settings: a 2 s ack wait makes a crash visible fast
without touching the session server other tests share).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from sluice import events as ev
from sluice.bus import Bus, connect
from sluice.config import CommonConfig
from sluice.ids import new_task_id
from sluice.provision import provision
from support.nats_server import NatsServer, free_port, running_server
from support.procs import ServiceProcess, base_env
from support.tool_runner import call_events, completed_event, create_task, names_of, publish_call
from support.waiting import eventually

pytestmark = pytest.mark.slow

ACK_WAIT = "2s"


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with running_server(tmp_path_factory.mktemp("nats-tool-runner")) as server:
        yield server


@pytest.fixture(scope="module")
async def own_bus(own_nats: NatsServer) -> AsyncIterator[Bus]:
    config = CommonConfig(nats_urls=(own_nats.url,), ack_wait_s=2.0)
    bus = await connect(config, name="sluice-tests-tool-runner")
    await provision(bus.js, config)
    yield bus
    await bus.close()


@pytest.fixture
def runners() -> Iterator[list[ServiceProcess]]:
    """The runner processes a test started; whatever is still running at the end is killed."""
    started: list[ServiceProcess] = []
    yield started
    for proc in started:
        proc.kill()


def start_runner(
    runners: list[ServiceProcess], nats: NatsServer, log_dir: Path, name: str, **env: str
) -> ServiceProcess:
    overrides = {"SLUICE_NATS_URL": nats.url, "SLUICE_ACK_WAIT": ACK_WAIT, "SLUICE_TOOL_METRICS_PORT": "0", **env}
    proc = ServiceProcess("tool-runner", base_env(**overrides), log_dir / f"{name}.log")
    runners.append(proc)
    return proc.start()


async def wait_started(bus: Bus, task_id: str, call_id: str) -> None:
    await eventually(lambda: call_events(bus, task_id, call_id), timeout_s=15, what="tool.started")


async def test_a_call_survives_its_runner_being_killed_and_completes_exactly_once(
    own_bus: Bus, own_nats: NatsServer, runners: list[ServiceProcess], tmp_path: Path
) -> None:
    task_id = new_task_id()
    await create_task(own_bus, task_id)
    first = start_runner(runners, own_nats, tmp_path, "first")
    call_id = await publish_call(own_bus, task_id, "slow_echo", {"text": "survived", "seconds": 3})
    await wait_started(own_bus, task_id, call_id)
    second = start_runner(runners, own_nats, tmp_path, "second")  # idle until the call comes back
    first.kill()

    done = await completed_event(own_bus, task_id, call_id, timeout_s=20)
    assert done.data.ok is True and done.data.result == "survived"
    # Both runners published tool.started with the same msg id; JetStream kept one (and past the duplicate
    # window the second runner would have found it in the log and not published another).
    assert names_of(await call_events(own_bus, task_id, call_id)) == ["tool.started", "tool.completed"]
    assert second.running


async def test_sigterm_lets_a_running_call_finish_then_exits_0(
    own_bus: Bus, own_nats: NatsServer, runners: list[ServiceProcess], tmp_path: Path
) -> None:
    task_id, port = new_task_id(), free_port()
    await create_task(own_bus, task_id)
    runner = start_runner(runners, own_nats, tmp_path, "graceful", SLUICE_TOOL_METRICS_PORT=str(port))
    call_id = await publish_call(own_bus, task_id, "slow_echo", {"text": "finished", "seconds": 2})
    await wait_started(own_bus, task_id, call_id)
    async with httpx.AsyncClient(timeout=5) as client:
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert "sluice_tool_calls_in_flight 1.0" in metrics and "sluice_tool_nats_connected 1.0" in metrics

    assert runner.terminate(timeout_s=15) == 0
    events = await call_events(own_bus, task_id, call_id)  # complete already: no other runner exists
    assert names_of(events) == ["tool.started", "tool.completed"]
    assert isinstance(events[1], ev.ToolCompleted) and events[1].data.result == "finished"
    # The call finished, then the runner stopped: its last record comes after the result's event.
    stopped = [r["ts"] for r in runner.log_records() if r.get("msg") == "tool-runner stopped"]
    assert stopped and datetime.fromisoformat(stopped[-1]) >= datetime.fromisoformat(events[1].ts), stopped


async def test_sigterm_hands_a_call_past_the_grace_period_to_another_runner(
    own_bus: Bus, own_nats: NatsServer, runners: list[ServiceProcess], tmp_path: Path
) -> None:
    task_id = new_task_id()
    await create_task(own_bus, task_id)
    leaving = start_runner(runners, own_nats, tmp_path, "leaving", SLUICE_TOOL_GRACE_S="0.5")
    call_id = await publish_call(own_bus, task_id, "slow_echo", {"text": "handed over", "seconds": 3})
    await wait_started(own_bus, task_id, call_id)
    assert leaving.terminate(timeout_s=15) == 0
    # It did not wait for the 3 s call: it left without a tool.completed.
    assert names_of(await call_events(own_bus, task_id, call_id)) == ["tool.started"]

    start_runner(runners, own_nats, tmp_path, "taking-over")
    done = await completed_event(own_bus, task_id, call_id, timeout_s=20)
    assert done.data.result == "handed over"
    assert names_of(await call_events(own_bus, task_id, call_id)) == ["tool.started", "tool.completed"]
