"""The missed wake-up: a tool result that reaches the waiting runner before JetStream has stored it.

A publish is delivered to core-NATS subscribers as it arrives at the server, but a replicated stream stores it
only once a quorum of its replicas agreed. A runner that woke on the core subject and then read the log could find
nothing yet — and since no second wake-up comes, it sat until the tool's deadline (on a loaded machine the
window between the two is wide; here it is made wide on purpose: both followers of SLUICE_EVENTS are frozen while
the result is published). The runner now waits through an ordered JetStream consumer, which delivers only what
is stored: the result arrives as soon as the followers are back.

Own cluster: freezing nodes must not disturb other tests.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator

import pytest

from agent_runner.ports import ToolDispatch
from agent_runner.sink import NatsSink
from sluice import msgids, subjects
from sluice.bus import Bus, connect
from sluice.config import CommonConfig
from sluice.eventlog import EventWriter
from sluice.events import TaskSubmitted, TaskSubmittedData, ToolCall, ToolCompleted, ToolCompletedData, encode
from sluice.guard import LogGuard
from sluice.ids import new_task_id
from sluice.provision import provision
from support.cluster import node_named, stream_leader, wait_healthy
from support.nats_server import NatsCluster, running_cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("nats-cluster-wakeup"),
    pytest.mark.timeout(180),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="freezes nats-server processes"),
]

FROZEN_S = 1.5  # shorter than an ordered consumer's idle heartbeat (5 s): the consumer itself stays put
TOOL_DEADLINE_S = 1.0
GIVE_UP_AFTER_S = 20.0  # beyond the deadline: what a runner that missed the result would wait before giving up


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with running_cluster(3, tmp_path_factory.mktemp("nats-wakeup")) as nodes:
        yield nodes


@pytest.fixture(scope="module")
async def admin(cluster: NatsCluster) -> AsyncIterator[Bus]:
    config = CommonConfig(nats_urls=tuple(cluster.urls.split(",")), replicas=3)
    bus = await connect(config, name="sluice-wakeup-admin")
    await provision(bus.js, config)
    await wait_healthy(bus.js, timeout_s=90)
    yield bus
    await bus.close()


async def test_a_result_published_before_it_is_stored_still_reaches_the_waiting_runner(
    cluster: NatsCluster, admin: Bus
) -> None:
    leader = node_named(cluster, await stream_leader(admin.js, subjects.EVENTS_STREAM))
    followers = [s for s in cluster.servers if s is not leader]
    # The runner and the tool-runner both talk to the leader: the result's core delivery to the runner is at once.
    near = await connect(CommonConfig(nats_urls=(leader.url,), replicas=3), name="sluice-wakeup-runner")
    try:
        task_id = new_task_id()
        writer = EventWriter(near, "agent-runner")
        submitted = TaskSubmittedData(input="what is 17*23?", agent="assistant", history=[], metadata={})
        after = await writer.emit(TaskSubmitted, task_id, submitted, msg_id=msgids.submitted(task_id))
        guard = LogGuard(near, writer, task_id, last_seq=after, whole_log=True)
        sink = NatsSink(near, guard, task_id, "", tool_wait_extra_s=GIVE_UP_AFTER_S)
        call = ToolCall(call_id="call_1", name="calculator", arguments='{"expression": "17*23"}')
        dispatched = await near.nc.subscribe(subjects.tool_call("calculator", task_id))
        waiting = asyncio.create_task(sink.run_tools([ToolDispatch(call, TOOL_DEADLINE_S)], after_seq=after))
        await dispatched.next_msg(timeout=30)  # the runner is waiting now

        for server in followers:
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            result = ToolCompletedData(call_id="call_1", name="calculator", ok=True, result="391", duration_ms=1.0)
            event = EventWriter(near, "tool-runner").build(ToolCompleted, task_id, result)
            headers = {"Nats-Msg-Id": msgids.tool_completed(task_id, "call_1")}
            # Delivered to core subscribers now, stored when the followers are back: a core publish, as JetStream
            # cannot acknowledge it before then.
            await near.nc.publish(subjects.event(task_id, "tool.completed"), encode(event), headers=headers)
            await near.nc.flush()
            await asyncio.sleep(FROZEN_S)  # the fault: how long the stream cannot store it
        finally:
            for server in followers:
                assert server.proc is not None
                os.kill(server.proc.pid, signal.SIGCONT)
        [answer] = await asyncio.wait_for(waiting, TOOL_DEADLINE_S + GIVE_UP_AFTER_S + 30)
        assert answer.data.ok and answer.data.result == "391", (
            f"the runner gave up instead of reading the stored result: {answer.data.error}"
        )
        assert answer.source == "tool-runner"
    finally:
        await near.close()
