"""`make chaos`: tasks of every kind across 2 edges, 2 agent-runners, 2 tool-runners and a 3-node NATS cluster
(3 replicas) while the nemesis kills, freezes and restarts runners, edges and NATS nodes — then every task's log
is checked for the invariants (one terminal event, last; attempts in order; each message and tool call once; each
step's tokens add up) and every client's stream, resumed across edges, against the log.

Seeded: SLUICE_CHAOS_SEED=<n> replays a run's choices (timing still varies). SLUICE_CHAOS_SHORT=1 is the short
form CI runs. Prints the faults injected, the violations (must be 0), the tasks failed by faults (must be 0) and
the failover times (a runner's kill, freeze or restart → the next attempt's task.started): p50 / p99 / max of
the takeovers that had another runner live and every NATS node up, and apart from them those that did not (the
other runner out too leaves nobody to take over; a lost NATS node stops JetStream while it elects new leaders).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from sluice.bus import Bus, connect
from sluice.config import CommonConfig
from sluice.eventlog import LogEntry, read_log
from support.cluster import ClusterStack, ResumingClient, StreamBroken, wait_healthy
from support.edge import FrameReader, StreamFrame
from support.nats_server import NatsCluster, running_cluster

from .invariants import Takeover, check_client, check_log, takeovers
from .nemesis import AGENT_RUNNERS, TOOL_RUNNERS, Fault, Nemesis

SEED = int(os.environ.get("SLUICE_CHAOS_SEED") or random.randrange(1_000_000))
SHORT = os.environ.get("SLUICE_CHAOS_SHORT") == "1"
TASKS = 10 if SHORT else 30
MIN_FAULTS = 10 if SHORT else 30
ACK_WAIT_S = 3.0  # the default
TASK_TIMEOUT_S = 240.0  # a client gives up on a task that has not ended by then: a task stuck by a fault
FREEZE_S = 2.5 * ACK_WAIT_S  # frozen well past the takeover
STORY = "Tell me a long story about how rivers find the sea, the mountains they start in and the towns on their banks"
KINDS = [
    ("long answer", "assistant", f"{STORY} [fault:slow:60]"),
    ("tool call", "assistant", "What is 17*23? [fault:slow:30]"),
    ("crew", "dev-team", "Design, build, review and document a tiny URL shortener"),
    ("input request", "careful-assistant", "What is 12*34?"),
]

pytestmark = [pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    root = tmp_path_factory.mktemp("chaos-nats")
    with running_cluster(3, root) as nodes:
        try:
            yield nodes
        finally:  # the nodes' stores go with the cluster; their logs (every run of each node) stay for a post-mortem
            (root / "logs").mkdir()
            for server in nodes.servers:
                for log in server.logs():
                    shutil.copy(log, root / "logs" / log.name)


@pytest.fixture(scope="module")
def sluice(cluster: NatsCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterStack]:
    root = tmp_path_factory.mktemp("chaos-stack")
    env = {"SLUICE_REPLICAS": "3", "SLUICE_RUNNER_CONCURRENCY": "16", "SLUICE_RUNNER_GRACE_S": "2",
           "SLUICE_TOOL_GRACE_S": "2", "SLUICE_RECONCILE_GRACE_S": "10"}  # fmt: skip
    stack = ClusterStack(root=root, cluster=cluster, env=env,
                         service_env={"demo-llm": {"SLUICE_DEMO_LLM_TOKENS_PER_S": "60"}})  # fmt: skip
    stack.start()
    for name in (AGENT_RUNNERS[1], TOOL_RUNNERS[1]):  # the second of each, beside the stack's own
        twin = stack._process(name.removesuffix("-2"))
        twin.log_path = root / "logs" / f"{name}.log"
        stack.services[name] = twin.start(timeout_s=90)
    try:
        yield stack
    finally:
        for name in (AGENT_RUNNERS[1], TOOL_RUNNERS[1]):
            stack.services[name].kill()
        stack.stop()


@pytest.fixture(scope="module")
async def bus(cluster: NatsCluster, sluice: ClusterStack) -> AsyncIterator[Bus]:
    b = await connect(CommonConfig(nats_urls=tuple(cluster.urls.split(",")), replicas=3), name="sluice-chaos")
    yield b
    await b.close()


class Task:
    """One task as a client drives it: submitted to either edge, read across reconnects, answered if it asks."""

    def __init__(self, http: httpx.AsyncClient, edges: tuple[str, str], kind: tuple[str, str, str], n: int) -> None:
        self.http, self.edges = http, edges
        self.kind, self.agent, self.text = kind
        self.text = f"{self.text} ({n})"
        self.key = uuid.uuid4().hex
        self.client: ResumingClient | None = None
        self.error = ""
        self.orphaned_keys = 0

    async def drive(self, rng: random.Random) -> None:
        try:
            task_id = await self._retrying("POST", "/v1/tasks", json={"input": self.text, "agent": self.agent},
                                           headers={"Idempotency-Key": self.key}, rng=rng)  # fmt: skip
            self.client = ResumingClient(self.http, self.edges, task_id, edge_index=rng.randrange(2))
            if self.kind == "input request":
                await self.client.read(until=_asks, timeout_s=TASK_TIMEOUT_S)
                if not self.client.ended:
                    await self._retrying("POST", f"/v1/tasks/{task_id}/input", json={"approve": True}, rng=rng)
            await self.client.read(timeout_s=TASK_TIMEOUT_S)
        except (TimeoutError, StreamBroken, httpx.HTTPError, AssertionError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"[:300]
        last = self.client.frames[-1].type if self.client and self.client.frames else None
        print(f"  {self.kind} {self.client.task_id if self.client else '-'}: {last} {self.error}", flush=True)

    async def _retrying(self, method: str, path: str, *, rng: random.Random, **kwargs: Any) -> str:
        """Sends to a random edge, the other one while it fails (killed edge, NATS election: 5xx / no answer)."""
        edge = rng.randrange(2)
        for _ in range(120):
            try:
                response = await self.http.request(method, f"{self.edges[edge]}{path}", **kwargs)
                if response.status_code in (201, 202):
                    return str(response.json()["id"])
                if response.status_code == 409 and path.endswith("/input"):
                    if await self._resumed(self.edges[edge], path.removesuffix("/input")):
                        return ""  # answered already (a retry whose first answer was lost)
                    await asyncio.sleep(0.5)  # the record trails the event: the runner is still pausing the task
                    continue
                if response.status_code == 409 and response.json()["error"]["code"] == "idempotency_key_in_use":
                    # The request that claimed the key died before it created the task (a killed edge, NATS out):
                    # the key is orphaned, and the edge says so. A client that waited uses a new key.
                    self.orphaned_keys += 1
                    kwargs["headers"] = {"Idempotency-Key": uuid.uuid4().hex}
                    continue
                if response.status_code < 500:
                    raise AssertionError(f"{method} {path}: {response.status_code} {response.text[:200]}")
            except httpx.TransportError:
                pass
            edge = 1 - edge
            await asyncio.sleep(0.5)
        raise TimeoutError(f"{method} {path}: no edge answered")

    async def _resumed(self, edge: str, task_path: str) -> bool:
        """Does the task's log hold a `task.resumed` (an answer that was taken)?"""
        async with self.http.stream("GET", f"{edge}{task_path}/events?follow=false") as response:
            if response.status_code != 200:
                return False
            return any(f.type == "task.resumed" for f in await FrameReader(response).read(timeout_s=10))


def _asks(frames: list[StreamFrame]) -> bool:
    return any(f.type == "task.input_required" for f in frames)


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _failover(takeover: Takeover, faults: list[Fault]) -> tuple[float, Fault, list[Fault]] | None:
    """How long after the fault that hit the previous runner while it held the task (the last, if several did) the
    next attempt started, that fault, and the faults that were also under way then and could slow the takeover:
    the other agent-runner out (nobody left to take over) or a NATS node lost (JetStream electing new leaders)."""
    hits = [f for f in faults if f.runner_id == takeover.previous_runner
            and takeover.previous_started_at <= f.at <= takeover.started_at]  # fmt: skip
    if not hits:
        return None
    hit = hits[-1]
    others = [f for f in faults if f is not hit and f.during(hit.at, takeover.started_at)
              and (f.kind == "node-kill" or (f.target in AGENT_RUNNERS and f.target != hit.target))]  # fmt: skip
    return takeover.started_at - hit.at, hit, others


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S.%f")[:-3]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


async def test_nemesis(sluice: ClusterStack, cluster: NatsCluster, bus: Bus) -> None:
    rng = random.Random(SEED)
    print(f"\nchaos seed {SEED} ({'short' if SHORT else 'full'}: {TASKS} tasks, at least {MIN_FAULTS} faults)")
    await wait_healthy(bus.js, timeout_s=90)
    nemesis = Nemesis(sluice, cluster, bus, random.Random(rng.random()), freeze_s=FREEZE_S, min_faults=MIN_FAULTS)
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0)) as http:
        tasks: list[Task] = []
        faulting = asyncio.create_task(nemesis.run(stop, pause_s=(0.8, 2.0)))
        started = time.monotonic()
        async with asyncio.TaskGroup() as group:
            # Tasks keep coming for as long as faults do, so faults meet tasks at every stage.
            while len(tasks) < TASKS or not nemesis.enough.is_set():
                task = Task(http, sluice.edge_urls, KINDS[len(tasks) % len(KINDS)], len(tasks))
                tasks.append(task)
                group.create_task(task.drive(random.Random(rng.random())))
                await asyncio.sleep(rng.uniform(0.5, 2.5))
            stop.set()
        await faulting
        took_s = time.monotonic() - started

        violations: list[str] = []
        failed: list[str] = []
        clean: list[tuple[float, str]] = []  # failovers with another runner live and every NATS node up
        overlapped: list[tuple[float, str]] = []  # the others: nothing could take over, or NATS was electing
        for task in tasks:
            if task.client is None:
                violations.append(f"{task.kind}: never submitted: {task.error}")
                continue
            entries: list[LogEntry] = [e async for e in read_log(bus, task.client.task_id)]
            where = f"{task.kind} {task.client.task_id}"
            violations += [f"{where}: {p}" for p in check_log(entries)]
            violations += [f"{where}: {p}" for p in check_client(task.client.frames, entries)]
            if task.error:
                violations.append(f"{where}: the client gave up: {task.error}")
            if not entries or entries[-1].type != "task.completed":
                failed.append(f"{where}: {entries[-1].type if entries else 'no log'} {entries[-1].payload[:200]!r}")
            for takeover in takeovers(task.client.task_id, entries, _epoch):
                if (failover := _failover(takeover, nemesis.faults)) is not None:
                    took, hit, others = failover
                    line = f"{took:.2f} s: {where}: {hit.kind} {hit.target} at {_clock(hit.at)}"
                    if others:
                        line += " while " + ", ".join(f"{f.kind} {f.target} at {_clock(f.at)}" for f in others)
                    (overlapped if others else clean).append((took, line))

    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(nemesis.counts().items()))
    print(f"faults injected: {len(nemesis.faults)} ({counts}) over {took_s:.0f} s")
    violations += [f"did not come back: {line}" for line in nemesis.unrecovered]
    print(f"invariant violations: {len(violations)}")
    for line in violations[:20]:
        print(f"  {line}")
    print(f"tasks failed by faults: {len(failed)} of {len(tasks)}")
    if orphaned := sum(t.orphaned_keys for t in tasks):
        print(f"submissions whose Idempotency-Key was orphaned by a fault (retried with a new key): {orphaned}")
    for line in failed[:10]:
        print(f"  {line}")
    for label, measured in (("with another runner live and every NATS node up", clean),
                            ("while the other runner or a NATS node was out too", overlapped)):  # fmt: skip
        if measured:
            took = [t for t, _ in measured]
            figures = f"p50 {statistics.median(took):.2f} s, p99 {_pct(took, 0.99):.2f} s, max {max(took):.2f} s"
            print(f"failover (a runner's kill/freeze/restart → next task.started) {label}: {len(took)} takeovers, "
                  f"{figures}")  # fmt: skip
            for _, line in sorted(measured, reverse=True)[:3]:
                print(f"  {line}")
    assert len(nemesis.faults) >= MIN_FAULTS
    assert not violations, violations[:5]
    assert not failed, failed[:5]
