"""Sluice on a 3-node NATS JetStream cluster with 3 replicas, as processes, and the tools to break it.

- `ClusterStack`: the whole stack of `support.stack` (demo model, tool-runner, agent-runner, edge) plus a second
  edge process, every service given all three NATS URLs and `SLUICE_REPLICAS=3`. It does not own the cluster:
  the test module runs its own (`running_cluster`), so killing nodes disturbs no other test.
- Where things live: `stream_leader`, `consumer_leader` (server names, asked until the cluster has elected one),
  `connected_node` (the node a process's NATS connection goes to, read from /proc), `node_named`.
- `wait_healthy`: every Sluice stream, the task bucket and both durable consumers have a leader and all their
  replicas current — the state to start a fault test from, and to get back to after a node restarts.
- `ResumingClient`: an SSE client of one task that reconnects with `Last-Event-ID` — to the other edge — when its
  stream breaks, the edge answers 503 or refuses the connection, or the test tells it to move. Any other answer
  (a 404 or a 500 during a node loss) is a wrong answer: it fails the read (`WrongAnswer`), it is never retried.
- `log_frames`: a task's whole log as a `follow=false` read serves it, once the log shows the terminal event.
- `unstarted_cluster`: three clustered nodes that the test starts one by one (a cluster forming).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import ClusterInfo

from sluice import subjects
from sluice.events import TERMINAL_TYPES
from support.edge import FrameReader, StreamFrame
from support.nats_server import NatsCluster, NatsServer, free_port
from support.procs import ServiceProcess
from support.stack import SERVICES, Stack
from support.waiting import eventually

__all__ = [
    "ASSETS",
    "BUCKET_STREAMS",
    "CONTEXTS_STREAM",
    "SECOND_EDGE",
    "TASKS_STREAM",
    "ClusterStack",
    "ResumingClient",
    "StreamBroken",
    "WrongAnswer",
    "connected_node",
    "consumer_leader",
    "leaders",
    "log_frames",
    "node_named",
    "replica_health",
    "restarted_at_end",
    "stream_leader",
    "unstarted_cluster",
    "wait_healthy",
]

TASKS_STREAM = f"KV_{subjects.TASKS_BUCKET}"
CONTEXTS_STREAM = f"KV_{subjects.CONTEXTS_BUCKET}"
# Every KV bucket provision creates has its name among the builders (subjects.*_BUCKET): derived, so a new bucket
# is waited for and checked without an edit here.
BUCKET_STREAMS = tuple(f"KV_{getattr(subjects, name)}" for name in subjects.__all__ if name.endswith("_BUCKET"))
# Every replicated asset Sluice provisions: (stream, consumer or None).
ASSETS: tuple[tuple[str, str | None], ...] = (
    (subjects.EVENTS_STREAM, None),
    (subjects.WORK_STREAM, None),
    (subjects.TOOLS_STREAM, None),
    *((stream, None) for stream in BUCKET_STREAMS),
    (subjects.WORK_STREAM, subjects.WORK_CONSUMER),
    (subjects.TOOLS_STREAM, subjects.TOOL_CONSUMER),
)
_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError, TimeoutError)
SECOND_EDGE = "edge-b"


# ---------------------------------------------------------------- the stack


@dataclass
class ClusterStack(Stack):
    """`Stack` on a NATS cluster it does not own, with a second edge (`SECOND_EDGE`) on its own port."""

    cluster: NatsCluster | None = None
    second_edge_port: int = field(default_factory=free_port)

    @property
    def nats_url(self) -> str:
        assert self.cluster is not None, "a ClusterStack needs the cluster"
        return self.cluster.urls

    @property
    def edge_urls(self) -> tuple[str, str]:
        return self.edge_url, f"http://127.0.0.1:{self.second_edge_port}"

    @property
    def names(self) -> tuple[str, ...]:
        return (*SERVICES, SECOND_EDGE)

    def start(self) -> ClusterStack:
        """`sluice provision` and every service at once while the cluster may still be forming: provisioning waits
        for JetStream, each service waits (not ready) until what it needs is provisioned, then for its ready signal."""
        for name in SERVICES:
            self.services.setdefault(name, self._process(name))
        second = self._process("edge")
        second.env["SLUICE_HTTP_PORT"] = str(self.second_edge_port)
        second.log_path = self.root / "logs" / f"{SECOND_EDGE}.log"
        self.services.setdefault(SECOND_EDGE, second)
        with ThreadPoolExecutor(len(self.names) + 1) as pool:
            futures = [pool.submit(self.provision), *(pool.submit(self.start_service, name) for name in self.names)]
            for future in futures:
                future.result()
        return self

    def start_service(self, name: str) -> ServiceProcess:
        if name != SECOND_EDGE:
            return super().start_service(name)
        proc = self.services[name]
        if not proc.running:
            proc.start(ready_url=f"{self.edge_urls[1]}/readyz")
        return proc

    def stop(self) -> None:
        second = self.services.get(SECOND_EDGE)
        if second is not None and second.running:
            with contextlib.suppress(Exception):
                second.terminate(timeout_s=15)
            second.kill()
        super().stop()  # `nats` is None: the cluster is left to its owner

    def pid(self, name: str) -> int:
        proc = self.service(name).proc
        assert proc is not None and proc.poll() is None, f"{name} is not running"
        return proc.pid


# ---------------------------------------------------------------- where things live


def node_named(cluster: NatsCluster, name: str) -> NatsServer:
    for server in cluster.servers:
        if server.name == name:
            return server
    raise KeyError(f"no node {name!r} in the cluster")


async def _cluster_info(js: JetStreamContext, stream: str, consumer: str | None) -> ClusterInfo | None:
    try:
        info = await (js.consumer_info(stream, consumer) if consumer else js.stream_info(stream))
    except _NATS_ERRORS:
        return None  # no leader to answer (an election), or the request was lost with a connection
    return info.cluster


async def stream_leader(js: JetStreamContext, stream: str, *, timeout_s: float = 30.0) -> str:
    async def probe() -> str | None:
        info = await _cluster_info(js, stream, None)
        return info.leader if info is not None else None

    return await eventually(probe, timeout_s=timeout_s, what=f"a leader of {stream}")


async def consumer_leader(js: JetStreamContext, stream: str, consumer: str, *, timeout_s: float = 30.0) -> str:
    async def probe() -> str | None:
        info = await _cluster_info(js, stream, consumer)
        return info.leader if info is not None else None

    return await eventually(probe, timeout_s=timeout_s, what=f"a leader of {stream}/{consumer}")


async def replica_health(js: JetStreamContext, stream: str, consumer: str | None = None) -> str | None:
    """None if the asset has a leader and every other replica is current and online; else what is missing."""
    info = await _cluster_info(js, stream, consumer)
    name = f"{stream}/{consumer}" if consumer else stream
    if info is None or not info.leader:
        return f"{name}: no leader"
    peers = info.replicas or []
    behind = [p.name for p in peers if not p.current or p.offline]
    if len(peers) != 2 or behind:
        return f"{name}: leader {info.leader}, replicas {[(p.name, p.current, p.offline) for p in peers]}"
    return None


async def leaders(js: JetStreamContext) -> dict[str, str | None]:
    """Who leads each Sluice asset now (None: no leader, or no answer)."""
    out: dict[str, str | None] = {}
    for stream, consumer in ASSETS:
        info = await _cluster_info(js, stream, consumer)
        out[f"{stream}/{consumer}" if consumer else stream] = info.leader if info is not None else None
    return out


async def wait_healthy(js: JetStreamContext, *, timeout_s: float = 45.0) -> None:
    """Until every Sluice asset has a leader and two current replicas (3 in all)."""
    problems: list[str] = []

    async def probe() -> bool:
        problems[:] = [p for s, c in ASSETS if (p := await replica_health(js, s, c)) is not None]
        return not problems

    try:
        await eventually(probe, timeout_s=timeout_s, what="all Sluice assets with 3 current replicas")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}: {problems}") from None


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def _established_remote_ports(pid: int) -> set[int]:
    """Remote ports of the process's established TCP connections (IPv4 and IPv6 tables)."""
    inodes = _socket_inodes(pid)
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "01" and cols[9] in inodes:  # 01: ESTABLISHED
                ports.add(int(cols[2].rsplit(":", 1)[1], 16))
    return ports


def connected_node(pid: int, cluster: NatsCluster) -> NatsServer | None:
    """The node the process's NATS connection goes to (None while it is reconnecting). Linux only."""
    ports = _established_remote_ports(pid)
    found = [server for server in cluster.servers if server.port in ports]
    assert len(found) <= 1, f"process {pid} holds connections to several nodes: {[s.name for s in found]}"
    return found[0] if found else None


@contextlib.contextmanager
def restarted_at_end(cluster: NatsCluster) -> Iterator[None]:
    """Whatever node a test stops comes back when it ends, passed or failed."""
    try:
        yield
    finally:
        for server in cluster.servers:
            if server.proc is None:
                server.start()


# ---------------------------------------------------------------- a client that resumes


class StreamBroken(Exception):
    """The edge answered 503, or the stream ended before the terminal event: a client reconnects."""


class WrongAnswer(AssertionError):
    """The edge answered something a client must not retry (not 200, not 503): the test fails with it."""


RECONNECT_STATUS = 503  # the one answer that means "this edge cannot serve now, try again (elsewhere)"


@dataclass
class Connection:
    edge: str
    after: str | None
    opened_s: float
    frames: int = 0
    outcome: str = ""


@dataclass
class ResumingClient:
    """One task's SSE stream, kept going across edges with `Last-Event-ID`, as a browser's EventSource does."""

    http: httpx.AsyncClient
    edges: Sequence[str]
    task_id: str
    retry_s: float = 0.25  # reconnect delay (an EventSource waits `retry:`; tests need not wait 2 s)
    frames: list[StreamFrame] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # monotonic time of each frame
    connections: list[Connection] = field(default_factory=list)
    edge_index: int = 0
    _t0: float = field(default_factory=time.monotonic)

    @property
    def last_id(self) -> str | None:
        with_id = [f.id for f in self.frames if f.id is not None]
        return with_id[-1] if with_id else None

    @property
    def ended(self) -> bool:
        return bool(self.frames) and self.frames[-1].type in TERMINAL_TYPES

    def move(self) -> None:
        """The next connection goes to the other edge."""
        self.edge_index = (self.edge_index + 1) % len(self.edges)

    async def read(self, *, until: Callable[[list[StreamFrame]], Any] | None = None, timeout_s: float = 60.0) -> None:
        """Reads until `until(frames)` holds (then drops the connection, as a client that goes away) or the terminal
        event; a broken stream, a refused connection or a 503 makes it reconnect to the other edge; any other status
        raises `WrongAnswer`."""
        async with asyncio.timeout(timeout_s):
            while not self.ended and not (until is not None and until(self.frames)):
                try:
                    await self._connection(until)
                except (httpx.TransportError, StreamBroken) as exc:
                    self.connections[-1].outcome = f"broken: {type(exc).__name__}: {exc}"[:200]
                    self.move()
                    await asyncio.sleep(self.retry_s)

    async def _connection(self, until: Callable[[list[StreamFrame]], Any] | None) -> None:
        base = self.edges[self.edge_index]
        headers = {"Accept": "text/event-stream"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        conn = Connection(base, self.last_id, round(time.monotonic() - self._t0, 2))
        self.connections.append(conn)
        url = f"{base}/v1/tasks/{self.task_id}/events"
        async with self.http.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                answer = f"{response.status_code} {response.text[:200]}"
                if response.status_code != RECONNECT_STATUS:
                    conn.outcome = f"wrong answer: {answer}"
                    raise WrongAnswer(f"{url} answered {answer}; connections: {self.describe()}")
                raise StreamBroken(answer)
            reader = FrameReader(response)
            while (frame := await reader.next()) is not None:
                self.frames.append(frame)
                self.arrivals.append(time.monotonic())
                conn.frames += 1
                if frame.type in TERMINAL_TYPES:
                    conn.outcome = "terminal"
                    return
                if until is not None and until(self.frames):
                    conn.outcome = "dropped by the client"
                    return
        raise StreamBroken("the response ended before the terminal event")

    def longest_silence(self, since: float = 0.0) -> tuple[float, float]:
        """The longest wait between two frames after `since` (monotonic), and when it ended (relative to `since`)."""
        times = [since, *(t for t in self.arrivals if t > since)]
        gaps = [(b - a, b - since) for a, b in itertools.pairwise(times)]
        return max(gaps, default=(0.0, 0.0))

    def describe(self) -> str:
        return "; ".join(
            f"{c.opened_s}s {c.edge.rsplit(':', 1)[1]} after={c.after}: {c.frames} frames, {c.outcome}"
            for c in self.connections
        )


async def log_frames(http: httpx.AsyncClient, edge: str, task_id: str, *, timeout_s: float = 30.0) -> list[StreamFrame]:
    """The task's whole log, read with `follow=false` once it ends with the terminal event (a read answered by a
    replica that lags may stop short of it, or a 503: asked again; any other status raises `WrongAnswer`)."""

    async def probe() -> list[StreamFrame] | None:
        url = f"{edge}/v1/tasks/{task_id}/events?follow=false"
        try:
            async with http.stream("GET", url) as response:
                if response.status_code == RECONNECT_STATUS:
                    return None
                if response.status_code != 200:
                    await response.aread()
                    raise WrongAnswer(f"{url} answered {response.status_code} {response.text[:200]}")
                frames = await FrameReader(response).read(timeout_s=10)
        except httpx.TransportError:
            return None
        return frames if frames and frames[-1].type in TERMINAL_TYPES else None

    return await eventually(probe, timeout_s=timeout_s, what=f"the whole log of task {task_id}")


# ---------------------------------------------------------------- a cluster that forms under the test's eyes


@contextlib.contextmanager
def unstarted_cluster(root: Path, size: int = 3) -> Iterator[NatsCluster]:
    """`size` clustered nodes, routes set, none started: the test starts them (`server.start()`) when it chooses,
    as nodes come up one by one in a real deployment. All are stopped at the end."""
    ports = [free_port() for _ in range(size)]
    servers = [
        NatsServer(
            store_dir=root / f"n{i}",
            cluster_port=ports[i],
            routes=[p for j, p in enumerate(ports) if j != i],
            name=f"n{i}",
        )
        for i in range(size)
    ]
    try:
        yield NatsCluster(servers)
    finally:
        for server in servers:
            server.stop()
