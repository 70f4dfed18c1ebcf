"""Services only check provisioning: on a server nobody provisioned they wait, not ready, naming what is missing
and what to run; they start once `sluice provision` has run; they never create or change anything themselves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import nats.js.errors
import pytest
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from sluice import subjects
from sluice.admin import provision_as_admin
from sluice.bus import connect
from sluice.config import CommonConfig
from sluice.permissions import needs_of
from sluice.provisioned import wait_provisioned
from support.nats_server import NatsServer, running_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[NatsServer]:
    with running_server(tmp_path) as server:
        yield server


class Said(logging.Handler):
    """Wakes a waiting test when a log line containing `text` is emitted."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.INFO)
        self.text = text
        self.lines: list[str] = []
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if self.text in line:
            self.lines.append(line)
            self.seen.set()


@pytest.fixture
def said() -> Iterator[Callable[[str], Said]]:
    handlers: list[Said] = []
    logger = logging.getLogger("sluice.provisioned")

    def make(text: str) -> Said:
        handler = Said(text)
        logger.addHandler(handler)
        handlers.append(handler)
        return handler

    yield make
    for handler in handlers:
        logger.removeHandler(handler)


@pytest.mark.parametrize("identity", ["edge", "agent-runner", "tool-runner"])
async def test_a_service_waits_not_ready_until_provisioned_and_creates_nothing(
    fresh_server: NatsServer, said: Callable[[str], Said], identity: str
) -> None:
    config = CommonConfig(nats_urls=(fresh_server.url,))
    bus = await connect(config, name=f"sluice-{identity}", identity=identity)
    try:
        waiting_line = said("not ready")
        waiting = asyncio.create_task(wait_provisioned(bus.js, config, needs_of(identity), service=identity))
        await asyncio.wait_for(waiting_line.seen.wait(), 20)
        assert not waiting.done()
        [line] = waiting_line.lines
        assert f"{identity} not ready" in line and "does not exist" in line and "sluice provision" in line
        for stream in needs_of(identity).streams:
            assert stream in line
        with pytest.raises(nats.js.errors.NotFoundError):  # it asked, it did not create
            await bus.js.stream_info(subjects.EVENTS_STREAM)
        await provision_as_admin(config)
        await asyncio.wait_for(waiting, 20)
    finally:
        await bus.close()


async def test_an_event_log_without_direct_gets_keeps_the_edge_waiting(
    fresh_server: NatsServer, said: Callable[[str], Said]
) -> None:
    config = CommonConfig(nats_urls=(fresh_server.url,))
    await provision_as_admin(config)
    bus = await connect(config, name="sluice-edge", identity="edge")
    try:
        stream = (await bus.js.stream_info(subjects.EVENTS_STREAM)).config
        stream.allow_direct = False
        await bus.js.update_stream(stream)
        waiting_line = said("direct gets are off")
        waiting = asyncio.create_task(wait_provisioned(bus.js, config, needs_of("edge"), service="edge"))
        await asyncio.wait_for(waiting_line.seen.wait(), 20)
        assert not waiting.done()
        await provision_as_admin(config)  # the operator's fix
        await asyncio.wait_for(waiting, 20)
        assert (await bus.js.stream_info(subjects.EVENTS_STREAM)).config.allow_direct
    finally:
        await bus.close()


async def test_other_retention_is_reported_and_left_alone(
    fresh_server: NatsServer, said: Callable[[str], Said]
) -> None:
    """The operator chose 30 days; a service configured for 7 says so once and changes nothing."""
    config = CommonConfig(nats_urls=(fresh_server.url,))
    await provision_as_admin(CommonConfig(nats_urls=(fresh_server.url,), events_max_age_s=30 * 86400.0))
    bus = await connect(config, name="sluice-tool-runner", identity="tool-runner")
    try:
        noted = said("left as it is")
        await asyncio.wait_for(wait_provisioned(bus.js, config, needs_of("tool-runner"), service="tool-runner"), 20)
        assert any("SLUICE_EVENTS" in line and "max age 2592000s" in line for line in noted.lines)
        assert (await bus.js.stream_info(subjects.EVENTS_STREAM)).config.max_age == pytest.approx(30 * 86400)
    finally:
        await bus.close()


async def test_a_work_stream_with_the_wrong_retention_is_not_used(
    fresh_server: NatsServer, said: Callable[[str], Said]
) -> None:
    config = CommonConfig(nats_urls=(fresh_server.url,))
    bus = await connect(config, name="sluice-agent-runner", identity="agent-runner")
    try:
        await bus.js.add_stream(
            StreamConfig(
                name=subjects.TOOLS_STREAM,
                subjects=[subjects.tool_stream_subjects()],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
            )
        )
        waiting_line = said("retention is")
        waiting = asyncio.create_task(wait_provisioned(bus.js, config, needs_of("agent-runner"), service="runner"))
        await asyncio.wait_for(waiting_line.seen.wait(), 20)
        assert not waiting.done() and "SLUICE_TOOLS" in waiting_line.lines[0]
        waiting.cancel()
    finally:
        await bus.close()
