"""CONTRACT §5 under NATS faults: the whole stack as processes on a 3-node JetStream cluster with SLUICE_REPLICAS=3.

"A client that reconnects with the last id it saw receives every later event exactly once, in order — across edge
restarts, edge replicas, runner crashes and (with 3 replicas) the loss of one NATS node."

Losing a node: each test kills (SIGKILL) one chosen NATS node while tasks stream — the leader of SLUICE_EVENTS, the
node an edge is connected to, the leader of the agent-runners' work consumer — and checks that what each client
received, across its reconnects to either edge, is exactly the task's log: ids strictly increasing, nothing missing
against a final `follow=false` read, nothing twice (in the stream or in the log), one terminal event and it is the
last. Then the node comes back and every stream, the task bucket and both durable consumers have three current
replicas again. Two more: a task record update that meets the bucket's leader election, and an event publish
through a loss of quorum (beyond the contract's one node; it must wait, not fail, and store the event once).

Reads right after writes, without any fault: with replicas, a follower may answer a read before it has applied
the write just acknowledged; readers that must see a known write (the runner waiting for its tool result, a client
reading the task it just created) are tested for that.

The module runs its own cluster (killing nodes must not disturb other tests) and one xdist worker runs it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import httpx
import msgspec
import pytest

from sluice import subjects
from sluice.bus import Bus, connect
from sluice.clock import now_iso
from sluice.config import CommonConfig
from sluice.eventlog import EventWriter, read_log
from sluice.events import (
    TERMINAL_TYPES,
    TaskCanceled,
    TaskCanceledData,
    TaskRecord,
)
from sluice.ids import new_task_id
from sluice.records import TaskStore
from support.cluster import (
    TASKS_STREAM,
    ClusterStack,
    ResumingClient,
    connected_node,
    consumer_leader,
    leaders,
    log_frames,
    node_named,
    restarted_at_end,
    stream_leader,
    wait_healthy,
)
from support.edge import StreamFrame
from support.nats_server import NatsCluster, running_cluster
from support.waiting import eventually

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("nats-cluster-faults"),
    pytest.mark.timeout(150),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds a process's NATS node in /proc"),
]

ENV = {"SLUICE_REPLICAS": "3", "SLUICE_RUNNER_CONCURRENCY": "8"}
TOKENS_PER_S = "50"  # the demo model's pace: an answer streams for a few seconds
STORY = "Tell me a long story about how rivers find the sea, the mountains they start in and the towns on their banks"
CREW_TASK = "Design, build, review and document a tiny URL shortener"
# Every task of a node-loss test must still be running when the node goes: the demo model paces each reply so that
# a task lasts well over 5 s from its first model call, far longer than it takes all of them to start.
STORY_PACE = "[fault:slow:150]"  # ~80 words at 150 ms each: ~12 s of text
TOOL_PACE = "[fault:slow:500]"  # the tool call, then a ~16-word answer at 500 ms each: ~9 s
TASK_KINDS = [
    ("assistant", f"{STORY} {STORY_PACE}"),
    ("assistant", f"What is 17*23? {TOOL_PACE}"),  # a tool call: SLUICE_TOOLS and the tool-runner in the path
    ("dev-team", CREW_TASK),  # a crew: four stages, four model steps of ~120 words each at TOKENS_PER_S: ~10 s
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with running_cluster(3, tmp_path_factory.mktemp("nats-cluster-faults")) as nodes:
        yield nodes


@pytest.fixture(scope="module")
def sluice(cluster: NatsCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterStack]:
    stack = ClusterStack(
        root=tmp_path_factory.mktemp("cluster-stack"),
        cluster=cluster,
        env=ENV,
        service_env={"demo-llm": {"SLUICE_DEMO_LLM_TOKENS_PER_S": TOKENS_PER_S}},
    )
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
async def bus(cluster: NatsCluster, sluice: ClusterStack) -> AsyncIterator[Bus]:
    config = CommonConfig(nats_urls=tuple(cluster.urls.split(",")), replicas=3)
    b = await connect(config, name="sluice-tests-cluster-faults")
    yield b
    await b.close()


@pytest.fixture
async def healthy(cluster: NatsCluster, bus: Bus) -> AsyncIterator[None]:
    """Each test starts from a whole cluster with every asset replicated three times; a node a test stopped comes
    back at its end whatever happened."""
    with restarted_at_end(cluster):
        await wait_healthy(bus.js)
        yield


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0)) as client:
        yield client


# ---------------------------------------------------------------- helpers


async def submit(http: httpx.AsyncClient, edge: str, text: str, *, agent: str = "assistant") -> str:
    response = await http.post(f"{edge}/v1/tasks", json={"input": text, "agent": agent})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def deltas(frames: list[StreamFrame]) -> int:
    return sum(f.type == "llm.delta" for f in frames)


def view(frames: list[StreamFrame]) -> list[tuple[str | None, str | None, dict[str, Any]]]:
    return [(f.id, f.type, f.data) for f in frames]


async def assert_received_exactly_the_log(
    http: httpx.AsyncClient, bus: Bus, edge: str, client: ResumingClient
) -> list[StreamFrame]:
    """What the client received across all its connections is the task's log, each event once, in order."""
    got = client.frames
    where = f"task {client.task_id}: {client.describe()}"
    assert all(f.id is not None for f in got), f"an event without an id (a stream.gap?): {where}"
    ids = [int(f.id or 0) for f in got]
    assert ids == sorted(set(ids)), f"ids not strictly increasing: {ids}; {where}"
    types = [f.type for f in got]
    assert sum(t in TERMINAL_TYPES for t in types) == 1 and types[-1] in TERMINAL_TYPES, f"{types}; {where}"
    log = await log_frames(http, edge, client.task_id)
    missing = sorted({int(f.id or 0) for f in log} - set(ids))
    assert not missing, f"events never received: {missing}; {where}"
    assert view(got) == view(log), where
    # The log itself holds each message once (a publish retried across the election was deduplicated).
    msg_ids = await eventually(lambda: _msg_ids(bus, client.task_id, len(log)), timeout_s=10, what="the log's msg ids")
    assert len(set(msg_ids)) == len(msg_ids), msg_ids
    assert_each_step_streamed_its_text_once(got)
    return log


async def _msg_ids(bus: Bus, task_id: str, count: int) -> list[str] | None:
    """The Nats-Msg-Id of each of the task's events, once a read (direct get: any replica answers) sees them all."""
    ids = [entry.headers.get("Nats-Msg-Id", "") async for entry in read_log(bus, task_id)]
    return ids if len(ids) == count else None


def assert_each_step_streamed_its_text_once(frames: list[StreamFrame]) -> None:
    """Between a step's `llm.started` and its `llm.completed`, the deltas add up to the content: none lost or
    repeated (a retried step starts again with a new `llm.started`)."""
    text: list[str] = []
    for frame in frames:
        data = frame.data.get("data", {})
        if frame.type == "llm.started":
            text = []
        elif frame.type == "llm.delta":
            text.append(data["text"])
        elif frame.type == "llm.completed":
            assert "".join(text) == data["content"], f"step {data['step']}.{data['attempt']}: {text}"


async def assert_completed(http: httpx.AsyncClient, edge: str, task_id: str, terminal_id: str) -> None:
    async def record() -> dict[str, Any] | None:
        body: dict[str, Any] = (await http.get(f"{edge}/v1/tasks/{task_id}")).json()
        return body if body.get("last_event_id") == terminal_id else None

    body = await eventually(record, timeout_s=15, what=f"task {task_id}'s record to note its terminal event")
    assert body["state"] == "completed", body


async def back_to_three_replicas(cluster: NatsCluster, bus: Bus, name: str) -> float:
    """Restarts the node; returns how long until every asset has three current replicas again."""
    started = time.monotonic()
    node_named(cluster, name).start()
    await wait_healthy(bus.js, timeout_s=60)
    info = await bus.js.stream_info(subjects.EVENTS_STREAM)
    assert info.config.num_replicas == 3 and info.cluster is not None
    peers = [info.cluster.leader or "", *(str(p.name) for p in info.cluster.replicas or [])]
    assert sorted(peers) == ["n0", "n1", "n2"]
    return time.monotonic() - started


# ---------------------------------------------------------------- reads right after writes, no fault at all
#
# With 3 replicas any replica answers a direct get, and a follower applies a write only when it hears of the commit
# from the leader — on a quiet cluster, a moment after the writer got its ack. A reader that must see a write it
# knows was made (it was told, or made it itself) must not trust a follower's view alone.

PROBE_S = 10.0  # ~600 create-then-read pairs: with direct gets the bug showed in ~3 s
QUIET_S = 0.01  # the cluster idles this long before each write, as a quiet deployment does: then followers lag


async def test_an_event_is_read_back_as_soon_as_its_publish_is_acknowledged(bus: Bus, healthy: None) -> None:
    """`read_log` has the stream leader confirm where the replicas' answer ends (shared/sluice/eventlog.py); before
    that, about 1 read in 80 missed the event just acknowledged."""
    writer = EventWriter(bus, "tests")
    missed = []
    for n in range(300):
        task_id = new_task_id()
        await asyncio.sleep(QUIET_S)
        seq = await writer.emit(TaskCanceled, task_id, TaskCanceledData(reason=f"probe {n}"), msg_id=f"{task_id}:end")
        if seq not in [entry.seq async for entry in read_log(bus, task_id)]:
            missed.append(seq)
    assert not missed, f"{len(missed)} of 300 events not read back right after their publish was acknowledged"


async def test_every_tool_result_reaches_the_waiting_runner_at_once(
    sluice: ClusterStack, healthy: None, http: httpx.AsyncClient
) -> None:
    """The agent-runner waits for `tool.completed` by a wake-up on the subject and then a read of the log; a read
    answered by a lagging follower missed the result, and the task sat until the tool's deadline + ack wait + margin
    (~50 s) — one tool call in five on a quiet cluster, before `read_log` confirmed its end with the leader."""
    waits = []
    for n in range(10):
        client = ResumingClient(http, sluice.edge_urls, await submit(http, sluice.edge_url, f"What is 17*23? ({n})"))
        await client.read(timeout_s=90)  # a hang guard only: the wait is measured on the events' own timestamps
        assert client.frames[-1].type == "task.completed" and "391" in client.frames[-1].data["data"]["output"]
        types = [f.type for f in client.frames]
        result = types.index("tool.completed")
        answer = types.index("llm.started", result)  # the runner's next step: it has read the result
        waited_s = _at(client.frames[answer]) - _at(client.frames[result])
        assert waited_s < TOOL_DEADLINE_S, f"task {client.task_id}: the result sat {waited_s:.1f}s before it was read"
        waits.append(round(waited_s, 3))
    print(f"\n10 tool-calling tasks one after another: result-to-next-step {waits} s")


TOOL_DEADLINE_S = 10.0  # the calculator's timeout: a runner that missed the result waits at least this long


def _at(frame: StreamFrame) -> float:
    return datetime.fromisoformat(frame.data["ts"]).timestamp()


async def test_a_task_record_is_found_as_soon_as_it_is_created(bus: Bus, healthy: None) -> None:
    """Creates a record and reads it back at once, again and again for PROBE_S; the first miss fails it. With
    direct gets (any replica answers) about 1 read in 150 missed on a quiet cluster, the first miss after ~3 s on
    average; the bucket now reads through its leader (provision.ensure_tasks_bucket)."""
    store = TaskStore(await bus.js.key_value(subjects.TASKS_BUCKET))
    deadline = time.monotonic() + PROBE_S
    created = 0
    while time.monotonic() < deadline:
        now = now_iso()
        record = TaskRecord(id=new_task_id(), state="submitted", agent="assistant", input=f"probe {created}",
                            created_at=now, updated_at=now)  # fmt: skip
        await asyncio.sleep(QUIET_S)
        await store.create(record)
        created += 1
        assert await store.find(record.id) is not None, f"task record {created} not found right after its create"


# ---------------------------------------------------------------- losing a node


async def test_losing_the_events_stream_leader_mid_task_the_client_resumes_on_either_edge_exactly_once(
    sluice: ClusterStack, cluster: NatsCluster, bus: Bus, healthy: None, http: httpx.AsyncClient
) -> None:
    edge_a, edge_b = sluice.edge_urls
    task_id = await submit(http, edge_a, CREW_TASK, agent="dev-team")  # four model steps: it outlasts the election
    client = ResumingClient(http, sluice.edge_urls, task_id)
    await client.read(until=lambda frames: deltas(frames) >= 3, timeout_s=20)

    leader = await stream_leader(bus.js, subjects.EVENTS_STREAM)
    node_named(cluster, leader).kill()
    killed = time.monotonic()
    # The connection is gone; the client comes back on the other edge with the last id it saw — during the
    # election — reads on a while, moves back to the first edge, and reads to the end.
    client.move()
    seen, before = deltas(client.frames), len(client.frames)
    await client.read(until=lambda frames: deltas(frames) >= seen + 5, timeout_s=60)
    first_after_s = client.arrivals[before] - killed
    client.move()
    await client.read(timeout_s=90)
    finished_s = time.monotonic() - killed

    assert client.frames[-1].type == "task.completed", client.describe()
    assert {c.edge for c in client.connections if c.frames} == {edge_a, edge_b}, client.describe()
    new_leader = await stream_leader(bus.js, subjects.EVENTS_STREAM)
    assert new_leader != leader
    log = await assert_received_exactly_the_log(http, bus, edge_b, client)
    await assert_completed(http, edge_a, task_id, str(log[-1].id))
    recovered_s = await back_to_three_replicas(cluster, bus, leader)
    print(f"\nSLUICE_EVENTS leader {leader} killed, {new_leader} took over: first event on the new connection "
          f"{first_after_s:.1f}s after the kill, task ended at {finished_s:.1f}s ({len(log)} events); 3 current "
          f"replicas {recovered_s:.1f}s after the restart\n  {client.describe()}")  # fmt: skip


async def test_losing_the_node_an_edge_is_connected_to_its_streams_carry_on_exactly_once(
    sluice: ClusterStack, cluster: NatsCluster, bus: Bus, healthy: None, http: httpx.AsyncClient
) -> None:
    node = connected_node(sluice.pid("edge"), cluster)
    assert node is not None, "the edge holds no connection to a cluster node"
    await run_through_a_node_loss(sluice, cluster, bus, http, victim=node.name, clients_on=0)


async def test_losing_the_work_consumer_leader_every_concurrent_task_completes_exactly_once(
    sluice: ClusterStack, cluster: NatsCluster, bus: Bus, healthy: None, http: httpx.AsyncClient
) -> None:
    leader = await consumer_leader(bus.js, subjects.WORK_STREAM, subjects.WORK_CONSUMER)
    await run_through_a_node_loss(sluice, cluster, bus, http, victim=leader, clients_on=None)


async def test_a_task_record_update_during_the_buckets_leader_election_waits_for_the_new_leader(
    cluster: NatsCluster, bus: Bus, healthy: None
) -> None:
    """A runner's terminal CAS that meets the task bucket's election is not lost: TaskStore waits for the new leader
    (shared/sluice/records.py). Before it did, the update failed, the runner nak'ed, and when the nak was lost as
    well the task sat for a whole ack wait."""
    leader = await stream_leader(bus.js, TASKS_STREAM)
    survivor = next(s for s in cluster.servers if s.name != leader)
    # A connection to a node that stays up: what is waited out is the election, not a reconnect.
    writer = await connect(CommonConfig(nats_urls=(survivor.url,), replicas=3), name="sluice-tests-kv-election")
    try:
        store = TaskStore(await writer.js.key_value(subjects.TASKS_BUCKET))
        task_id = new_task_id()
        now = now_iso()
        await store.create(TaskRecord(id=task_id, state="working", agent="assistant", input="x", created_at=now,
                                      updated_at=now))  # fmt: skip
        node_named(cluster, leader).kill()
        _, after = await store.update(task_id, lambda r: msgspec.structs.replace(r, state="completed", output="ok"))
        assert after.state == "completed" and (await store.get(task_id)).state == "completed"
    finally:
        await writer.close()
        await back_to_three_replicas(cluster, bus, leader)


OUTAGE_S = 7.0  # longer than Bus.publish's per-attempt timeout (2 s), well inside its retry window (30 s)


async def test_an_event_publish_rides_out_a_loss_of_quorum_and_is_stored_once(
    cluster: NatsCluster, bus: Bus, healthy: None
) -> None:
    """Beyond one node: the SLUICE_EVENTS leader loses both followers. Its first attempt can be neither stored nor
    refused; every retry with the same Nats-Msg-Id is answered "duplicate message id is in process" (409, 10158),
    which Bus.publish now retries too (shared/sluice/bus.py) instead of failing at once. When the nodes are back,
    the event is stored once."""
    leader = await stream_leader(bus.js, subjects.EVENTS_STREAM)
    keeper = node_named(cluster, leader)
    others = [s for s in cluster.servers if s is not keeper]
    writer = await connect(CommonConfig(nats_urls=(keeper.url,), replicas=3), name="sluice-tests-quorum")
    try:
        task_id = new_task_id()
        for node in others:
            node.kill()
        data = TaskCanceledData(reason="published while the stream had no quorum")
        publishing = asyncio.create_task(
            EventWriter(writer, "tests").emit(TaskCanceled, task_id, data, msg_id=f"{task_id}:end")
        )
        done, _ = await asyncio.wait({publishing}, timeout=OUTAGE_S)  # the outage lasts this long
        assert not done, f"the publish gave up during the outage: {publishing.exception()!r}"
        for node in others:
            node.start()
        seq = await asyncio.wait_for(publishing, timeout=30)
        stored = [(entry.seq, entry.headers.get("Nats-Msg-Id")) async for entry in read_log(bus, task_id)]
        assert stored == [(seq, f"{task_id}:end")]
    finally:
        await writer.close()
        for node in others:
            if node.proc is None:
                node.start()
        await wait_healthy(bus.js, timeout_s=60)


# ---------------------------------------------------------------- many tasks through one node's loss


async def run_through_a_node_loss(
    sluice: ClusterStack,
    cluster: NatsCluster,
    bus: Bus,
    http: httpx.AsyncClient,
    *,
    victim: str,
    clients_on: int | None,
    tasks: int = 5,
) -> None:
    """`tasks` tasks (a story, a tool call, a crew, ...) stream to clients — all on edge `clients_on`, or spread over
    both — that keep their streams open while `victim` is killed; every task completes with exactly one terminal
    event and every client received exactly its log."""
    edges = sluice.edge_urls
    kinds = [TASK_KINDS[i % len(TASK_KINDS)] for i in range(tasks)]
    ids = [await submit(http, edges[i % 2], f"{text} (task {i})", agent=agent) for i, (agent, text) in enumerate(kinds)]
    clients = [
        ResumingClient(http, edges, task_id, edge_index=clients_on if clients_on is not None else i % 2)
        for i, task_id in enumerate(ids)
    ]
    reading = [asyncio.create_task(c.read(timeout_s=100)) for c in clients]
    try:
        before = await leaders(bus.js)
        await eventually(lambda: _all_started(clients, reading), timeout_s=30, what="every task's first model call")
        node_named(cluster, victim).kill()
        killed = time.monotonic()
        await asyncio.gather(*reading)
    finally:
        for task in reading:
            task.cancel()
        await asyncio.gather(*reading, return_exceptions=True)
    finished_s = time.monotonic() - killed
    for client, (_agent, text) in zip(clients, kinds, strict=True):
        assert client.frames[-1].type == "task.completed", client.describe()
        after_kill = sum(t > killed for t in client.arrivals)
        assert after_kill > 1, f"task {client.task_id} was not mid-task when the node went: {client.describe()}"
        log = await assert_received_exactly_the_log(http, bus, edges[1], client)
        await assert_completed(http, edges[0], client.task_id, str(log[-1].id))
        if "17*23" in text:
            assert "391" in client.frames[-1].data["data"]["output"]
    recovered_s = await back_to_three_replicas(cluster, bus, victim)
    print(f"\nkilled {victim} (leaders: {before}); all {tasks} tasks ended {finished_s:.1f}s after the kill; "
          f"3 current replicas {recovered_s:.1f}s after the restart")  # fmt: skip
    for client in clients:
        silence, at = client.longest_silence(killed)
        print(f"  {client.task_id}: longest silence {silence:.1f}s (to {at:.1f}s after the kill); {client.describe()}")


async def _all_started(clients: list[ResumingClient], reading: list[asyncio.Task[None]]) -> bool:
    """Every task's first model call has begun and none has ended: the fault comes mid-task. (Waiting for every
    task to stream text at the same moment raced the short answers; a paced task lasts far longer than the time
    between the first task's start and the last one's.)"""
    for client, task in zip(clients, reading, strict=True):
        if task.done():
            task.result()  # a reader that failed fails the wait now
            raise AssertionError(f"task {client.task_id} ended before the fault: {client.describe()}")
    return all(any(f.type == "llm.started" for f in c.frames) for c in clients)
