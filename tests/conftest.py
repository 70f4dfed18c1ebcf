"""Session fixtures: one real nats-server per test session (per xdist worker), with its own store dir; and the
`needs_program` mark (support.system_deps): skip when the program is missing, fail under CI=true."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from sluice.admin import provision_as_admin
from sluice.bus import Bus, connect
from sluice.config import CommonConfig
from support import system_deps
from support.catalog import advertise_shipped_agents
from support.nats_server import NatsCluster, NatsServer, running_cluster, running_server


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs_program"):
        for program in mark.args:
            if system_deps.find(program) is None:
                if system_deps.in_ci():
                    pytest.fail(f"CI=true: {system_deps.absence(program)}", pytrace=False)
                pytest.skip(system_deps.absence(program))


# The session's streams and consumers: a short ack wait, so redelivery tests do not wait 30 s.
SESSION_ACK_WAIT_S = 3.0


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with running_server(tmp_path_factory.mktemp("nats")) as server:
        asyncio.run(provision_as_admin(CommonConfig(nats_urls=(server.url,), ack_wait_s=SESSION_ACK_WAIT_S)))
        yield server


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with running_cluster(3, tmp_path_factory.mktemp("nats-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def common_config(nats_server: NatsServer) -> CommonConfig:
    return CommonConfig(nats_urls=(nats_server.url,), ack_wait_s=SESSION_ACK_WAIT_S)


@pytest.fixture(scope="session")
async def bus(common_config: CommonConfig) -> AsyncIterator[Bus]:
    """A connection to the provisioned session server, shared by the session's tests (each uses its own task ids);
    the shipped agents are known in its catalog, as after an agent-runner's first start."""
    b = await connect(common_config, name="sluice-tests")
    await advertise_shipped_agents(b)
    yield b
    await b.close()
