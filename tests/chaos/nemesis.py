"""The nemesis: kills (-9), freezes (SIGSTOP past the takeover, then SIGCONT) and restarts (SIGTERM) runners and
edges, and kills NATS nodes, at random from a seed, while tasks run. Each service has at most one fault at a time,
at most one NATS node is down at a time (3 replicas survive one loss, as the contract promises, not two), and at most
one agent-runner is out at a time (the contract promises that another runner takes a task over: one is there)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

from sluice.bus import Bus
from support.cluster import SECOND_EDGE, ClusterStack, wait_healthy
from support.nats_server import NatsCluster

__all__ = ["AGENT_RUNNERS", "EDGES", "TOOL_RUNNERS", "Fault", "Nemesis"]

AGENT_RUNNERS = ("agent-runner", "agent-runner-2")
TOOL_RUNNERS = ("tool-runner", "tool-runner-2")
EDGES = ("edge", SECOND_EDGE)


@dataclass
class Fault:
    at: float  # epoch seconds, comparable with the events' ts
    kind: str  # kill | freeze | restart | node-kill
    target: str
    runner_id: str = ""  # an agent-runner's name in task.started (`<hostname>-<pid>`)
    ended_at: float = math.inf  # when the target was back: restarted and ready, thawed, or the cluster healthy

    def during(self, start: float, end: float) -> bool:
        """Was the target out at some moment between `start` and `end`?"""
        return self.at <= end and self.ended_at >= start


@dataclass
class Nemesis:
    stack: ClusterStack
    cluster: NatsCluster
    bus: Bus
    rng: random.Random
    freeze_s: float
    min_faults: int
    faults: list[Fault] = field(default_factory=list)
    unrecovered: list[str] = field(default_factory=list)  # services that did not come back after a fault, and why
    enough: asyncio.Event = field(default_factory=asyncio.Event)  # set once `min_faults` were injected
    _busy: set[str] = field(default_factory=set)
    _down: set[str] = field(default_factory=set)  # did not come back: not faulted again
    _pending: set[asyncio.Task[None]] = field(default_factory=set)

    def counts(self) -> Counter[str]:
        def role(target: str) -> str:
            return "nats node" if target.startswith("nats:") else target.removesuffix("-2").removesuffix("-b")

        return Counter(f"{f.kind} {role(f.target)}" for f in self.faults)

    async def run(self, stop: asyncio.Event, *, pause_s: tuple[float, float]) -> None:
        """Injects a fault every `pause_s` (uniform) until `stop`, then waits for every service to be back."""
        while not stop.is_set():
            self._inject()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(*pause_s))
        await asyncio.gather(*self._pending)

    def _inject(self) -> None:
        choices: list[tuple[str, str]] = []
        runner_out = any(target in AGENT_RUNNERS for target in self._busy)
        for name in (*AGENT_RUNNERS, *TOOL_RUNNERS, *EDGES):
            if name not in self._busy | self._down and not (name in AGENT_RUNNERS and runner_out):
                kinds = ["kill", "restart"] + (["freeze", "freeze"] if name in AGENT_RUNNERS else [])
                choices += [(kind, name) for kind in kinds]
        if not any(target.startswith("nats") for target in self._busy):
            choices += [("node-kill", f"nats:{server.name}") for server in self.cluster.servers]
        if not choices:
            return
        kind, target = self.rng.choice(choices)
        self._busy.add(target)
        task = asyncio.create_task(self._apply(kind, target), name=f"fault {kind} {target}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _apply(self, kind: str, target: str) -> None:
        fault: Fault | None = None
        try:
            if kind == "node-kill":
                fault = self._note(Fault(time.time(), kind, target))
                await self._node_kill(target.removeprefix("nats:"))
                return
            proc = self.stack.services[target].proc
            assert proc is not None and proc.poll() is None, f"{target} is not running"
            runner_id = f"{socket.gethostname()}-{proc.pid}" if target in AGENT_RUNNERS else ""
            fault = self._note(Fault(time.time(), kind, target, runner_id))
            if kind == "freeze":
                os.kill(proc.pid, signal.SIGSTOP)
                await asyncio.sleep(self.freeze_s)
                os.kill(proc.pid, signal.SIGCONT)
                return
            if kind == "kill":
                proc.kill()
                await asyncio.to_thread(proc.wait)
                await asyncio.sleep(self.rng.uniform(0.2, 1.5))
            else:
                await asyncio.to_thread(self.stack.services[target].terminate, 30.0)
            await asyncio.to_thread(self._start, target)
        except Exception as exc:  # a service that exits at start (or a node that does not come back) is a finding
            self.unrecovered.append(f"{kind} {target}: {type(exc).__name__}: {str(exc)[-300:]}")
            self._down.add(target)
            print(f"  {target} did not come back after {kind}: {type(exc).__name__}", flush=True)
        finally:
            if fault is not None:
                fault.ended_at = time.time()
            self._busy.discard(target)

    async def _node_kill(self, name: str) -> None:
        (server,) = [s for s in self.cluster.servers if s.name == name]
        server.kill()
        await asyncio.sleep(self.rng.uniform(1.0, 3.0))
        await asyncio.to_thread(server.start)
        await wait_healthy(self.bus.js, timeout_s=90)

    def _note(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        at = time.strftime("%H:%M:%S", time.gmtime(fault.at))
        print(f"  fault {len(self.faults)} at {at}: {fault.kind} {fault.target} {fault.runner_id}", flush=True)
        if len(self.faults) >= self.min_faults:
            self.enough.set()
        return fault

    def _start(self, name: str) -> None:
        if name in (*EDGES, *SERVICES_OF_STACK):
            self.stack.start_service(name)
        else:
            self.stack.services[name].start(timeout_s=90)


SERVICES_OF_STACK = ("agent-runner", "tool-runner")
