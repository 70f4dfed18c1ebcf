"""The whole of Sluice with every service on its own NATS identity, against a nats-server that enforces the
authorization `sluice nats-auth` wrote (no anonymous user), provisioned by `sluice provision` as `admin`: a task
with a tool call runs end to end; a subscriber's forged terminal event is refused and the services keep working;
a service with a bad seed or an impossible setting stops with one line, never a traceback or a hang."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sluice import subjects
from sluice.bus import connect
from sluice.eventlog import read_log
from sluice.nats_auth import write_auth
from support.authed_nats import AuthedNats, refused, running_authed_server
from support.procs import SLUICE, base_env
from support.stack import SERVICES, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

IDENTITY = {"edge": "edge", "agent-runner": "agent-runner", "tool-runner": "tool-runner", "provision": "admin"}


@pytest.fixture(scope="module")
def authed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthedNats]:
    with running_authed_server(tmp_path_factory.mktemp("identities")) as server:
        yield server


@pytest.fixture(scope="module")
def stack(authed: AuthedNats, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    seeds = {name: {"SLUICE_NATS_NKEY_FILE": str(authed.auth.seeds[who])} for name, who in IDENTITY.items()}
    started = Stack(root=tmp_path_factory.mktemp("identity-stack"), nats=authed.server, service_env=seeds)
    try:
        yield started.start()
    finally:
        started.stop()


def _run(stack: Stack, prompt: str) -> tuple[str, list[str]]:
    created = httpx.post(
        f"{stack.edge_url}/v1/tasks", json={"input": prompt}, headers={"Accept": "text/event-stream"}, timeout=90
    )
    assert created.status_code in (200, 201), created.text
    task_id = created.headers["location"].rsplit("/", 1)[-1]
    return task_id, re.findall(r"^event: (\S+)$", created.text, flags=re.M)


def test_a_task_with_a_tool_call_runs_with_every_service_on_its_own_identity(stack: Stack) -> None:
    task_id, types = _run(stack, "What is 17*23?")
    assert types[0] == "task.submitted" and types[-1] == "task.completed", types
    assert "tool.started" in types and "tool.completed" in types
    record = httpx.get(f"{stack.edge_url}/v1/tasks/{task_id}", timeout=10).json()
    assert record["state"] == "completed" and "391" in json.dumps(record["output"])
    for name in ("edge", "agent-runner", "tool-runner"):
        assert "NATS refused" not in stack.logs(name), stack.logs(name)[-2000:]


async def test_a_subscriber_that_forges_an_ending_is_refused_and_sluice_goes_on(
    stack: Stack, authed: AuthedNats
) -> None:
    task_id, _ = _run(stack, "Say hello")
    reader = await connect(authed.config("subscriber"), name="sluice-subscriber", identity="subscriber")
    try:
        before = [entry.seq async for entry in read_log(reader, task_id)]
        forged = subjects.event(task_id, "task.failed")
        await reader.nc.publish(forged, b'{"forged": true}')
        assert await refused(reader, forged)
        assert [entry.seq async for entry in read_log(reader, task_id)] == before
    finally:
        await reader.close()
    _, types = _run(stack, "What is 2+2?")
    assert types[-1] == "task.completed"


def _service_exit(service: str, env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SLUICE, service], env=base_env(**env), capture_output=True, text=True, timeout=timeout_s, check=False
    )


@pytest.mark.parametrize("service", ["tool-runner", "agent-runner", "edge"])
def test_a_service_with_a_seed_the_server_does_not_know_exits_with_one_line(
    authed: AuthedNats, tmp_path: Path, service: str
) -> None:
    stranger = write_auth(tmp_path / "another-deployment")
    identity = IDENTITY[service]
    env = {"SLUICE_NATS_URL": authed.server.url, "SLUICE_NATS_NKEY_FILE": str(stranger.seeds[identity])}
    done = _service_exit(service, {**env, "SLUICE_HTTP_PORT": "0"})
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in output
    assert f"identity {identity}" in output and "refused" in output


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SLUICE_NATS_NKEY_FILE": "/nonexistent/tool-runner.nk"}, "/nonexistent/tool-runner.nk"),
        ({"SLUICE_EVENTS_MAX_AGE": "6s"}, "duplicate window"),
    ],
    ids=["missing-seed", "retention-below-duplicate-window"],
)
def test_a_service_misconfigured_for_nats_exits_with_one_line(
    authed: AuthedNats, env: dict[str, str], says: str
) -> None:
    done = _service_exit("tool-runner", {"SLUICE_NATS_URL": authed.server.url, **env})
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in output
    assert says in output
    assert len([line for line in output.splitlines() if says in line]) == 1


def test_every_service_of_the_stack_is_named_in_the_identity_table() -> None:
    """The stack above gives each NATS-using service a seed: a new service must get one too."""
    assert set(SERVICES) - {"demo-llm"} <= set(IDENTITY)
