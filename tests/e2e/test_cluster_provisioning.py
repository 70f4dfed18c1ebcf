"""Provisioning with SLUICE_REPLICAS=3 from several provisioners at once, on a 3-node cluster that is still forming,
while the services wait for it; and a service or a provisioner configured for fewer replicas changes nothing.

The services and provisioners start with one node up — before JetStream has a quorum or a meta leader, so nothing
can be created yet — and the other nodes come up while they wait. Every service then comes up ready, and what the
provisioners created together is one set of streams, consumers and bucket, each with 3 replicas; provisioning
again changes nothing. Services only ever check (sluice.provisioned); they never create or change a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sluice import subjects
from sluice.admin import provision_as_admin
from sluice.bus import Bus, connect
from sluice.config import CommonConfig
from sluice.provision import provision
from support.cluster import ASSETS, TASKS_STREAM, replica_health, unstarted_cluster
from support.nats_server import NatsCluster, free_port
from support.procs import SLUICE, ServiceProcess, base_env
from support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("nats-cluster-faults"), pytest.mark.timeout(120)]

READY = '"msg":"ready"'
WAITING = "JetStream not ready"  # what a service logs while JetStream cannot answer it (sluice.provisioned)


@pytest.fixture
def forming(tmp_path: Path) -> Iterator[NatsCluster]:
    with unstarted_cluster(tmp_path / "nats") as cluster:
        yield cluster


@contextlib.contextmanager
def services(cluster: NatsCluster, log_dir: Path) -> Iterator[list[ServiceProcess]]:
    env = base_env(
        SLUICE_NATS_URL=cluster.urls,
        SLUICE_REPLICAS="3",
        SLUICE_HTTP_HOST="127.0.0.1",
        SLUICE_HTTP_PORT=str(free_port()),
        SLUICE_RUNNER_METRICS_PORT="0",
        SLUICE_TOOL_METRICS_PORT="0",
        OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",  # never called: no task runs here
        OPENAI_API_KEY="demo",
    )
    procs = [ServiceProcess(name, env, log_dir / f"{name}.log") for name in ("edge", "agent-runner", "tool-runner")]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()


def _logged(proc: ServiceProcess, text: str) -> Callable[[], bool]:
    return lambda: text in proc.log_text()


async def created_at(bus: Bus) -> dict[str, object]:
    """When each stream and durable consumer was created, and its replica count: moves if anything is re-created."""
    out: dict[str, object] = {}
    for stream, consumer in ASSETS:
        if consumer is None:
            info = await bus.js.stream_info(stream)
            out[stream] = (info.created, info.config.num_replicas)
        else:
            cinfo = await bus.js.consumer_info(stream, consumer)
            out[f"{stream}/{consumer}"] = (cinfo.created, cinfo.config.ack_wait, len(cinfo.cluster.replicas or []) + 1)
    return out


async def test_services_provisioning_a_forming_cluster_at_once_agree_on_three_replicas(
    forming: NatsCluster, tmp_path: Path
) -> None:
    first, *rest = forming.servers
    first.start()  # one node of three: no quorum, so no stream with 3 replicas can exist yet
    config = CommonConfig(nats_urls=tuple(forming.urls.split(",")), replicas=3)
    buses = [await connect(config, name=f"sluice-tests-provisioner-{n}") for n in range(3)]
    try:
        with services(forming, tmp_path / "logs") as procs:
            # Each service is up, connected and waiting for provisioning, but JetStream cannot answer anyone yet.
            await asyncio.gather(*(asyncio.to_thread(p.start, ready_log=WAITING, timeout_s=40) for p in procs))
            # Three more provisioners join them now (not before: each waits at most 30 s for JetStream, and the
            # services may take that long to start on a loaded machine); none can finish without a quorum.
            provisioning = [asyncio.create_task(provision(bus.js, config)) for bus in buses]
            done, _ = await asyncio.wait(provisioning, timeout=1.0)
            assert not done, done
            for node in rest:
                await asyncio.to_thread(node.start)
            await asyncio.wait_for(asyncio.gather(*provisioning), timeout=40)
            for proc in procs:
                wait_until(_logged(proc, READY), timeout_s=40, what=f"{proc.command} to be ready")
                assert proc.running, proc.log_tail()
                assert "Traceback" not in proc.log_text() and '"level":"error"' not in proc.log_text(), proc.log_tail()

        js = buses[0].js
        for stream, consumer in ASSETS:
            assert await replica_health(js, stream, consumer) is None
        for name in (subjects.EVENTS_STREAM, subjects.WORK_STREAM, subjects.TOOLS_STREAM, TASKS_STREAM):
            assert (await js.stream_info(name)).config.num_replicas == 3, name
        bucket = await (await js.key_value(subjects.TASKS_BUCKET)).status()
        assert bucket.stream_info.config.num_replicas == 3
        names = sorted(str(s.config.name) for s in await js.streams_info())
        assert names == sorted({s for s, _ in ASSETS}), names

        before = await created_at(buses[0])
        await asyncio.gather(*(provision(bus.js, config) for bus in buses))  # everyone again, at once
        assert await created_at(buses[0]) == before
        for stream in (subjects.WORK_STREAM, subjects.TOOLS_STREAM):
            assert (await js.stream_info(stream)).state.consumer_count == 1, stream
    finally:
        for bus in buses:
            await bus.close()


async def test_fewer_replicas_configured_elsewhere_never_lower_a_three_replica_cluster(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """A tool-runner started with SLUICE_REPLICAS=1 against R3 streams serves with them as they are and says why;
    `sluice provision` with SLUICE_REPLICAS=1 refuses, naming the change and the flag; the streams stay at 3."""
    urls = tuple(nats_cluster.urls.split(","))
    await provision_as_admin(CommonConfig(nats_urls=urls, replicas=3), wait_s=60)
    bus = await connect(CommonConfig(nats_urls=urls), name="sluice-tests-replicas")
    try:
        before = await created_at(bus)
        env = base_env(SLUICE_NATS_URL=nats_cluster.urls, SLUICE_REPLICAS="1", SLUICE_TOOL_METRICS_PORT="0")
        runner = ServiceProcess("tool-runner", env, tmp_path / "tool-runner.log")
        try:
            await asyncio.to_thread(runner.start, ready_log=READY, timeout_s=60)
            log = runner.log_text()
            assert "3 replicas (this service's SLUICE_REPLICAS=1)" in log and "left as it is" in log, log[-3000:]
        finally:
            runner.terminate()
        refused = await asyncio.to_thread(
            subprocess.run, [SLUICE, "provision"], env=env, capture_output=True, text=True, timeout=90
        )
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "replicas 3 -> 1" in refused.stderr and "--allow-fewer-replicas" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert await created_at(bus) == before  # nothing re-created, every replica count still 3
        for name in (subjects.EVENTS_STREAM, subjects.WORK_STREAM, subjects.TOOLS_STREAM, TASKS_STREAM):
            assert (await bus.js.stream_info(name)).config.num_replicas == 3, name
    finally:
        await bus.close()
