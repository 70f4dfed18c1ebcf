"""The NATS-only ceiling for the capacity runs: the edge's own feed consumers, no HTTP and no client.

One process, one NATS connection, per task one pull consumer made by the engine's `Link` exactly as a feed makes
it (no acks, in memory, one replica, parked pull requests of 1,000), and the events counted and timed as the load
generator counts them (a per-task counter and the publish time in each event). What this sustains is what JetStream
and a Python NATS client on this machine allow the same consumers; the edge's capacity is reported as a ratio of it.

    python -m bench.nats_sink NATS_URL TASK,TASK,...   READY, then `STOP {last n per task}`, then `REPORT {...}`
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time

from nats.aio.msg import Msg

from bench.loadgen import _stdin_line
from bench.sequence import Tally
from sluice.bus import connect
from sluice.config import CommonConfig
from stream_edge.streaming.link import AckFields, Link

_EVENT_RE = re.compile(rb'"text": ?"(\d+):([0-9.]+)')
BATCH = 1000


class TaskSink(Tally):
    """One task's consumer: keeps a pull parked, checks order, records publish → receive latency."""

    def __init__(self, link: Link, task_id: str, latencies: list[float]) -> None:
        self.link = link
        self.task_id = task_id
        self.name = link.new_key("c")
        super().__init__(latencies)
        self.target: int | None = None  # the last n published, once the publisher has stopped
        self.caught_up = asyncio.Event()
        self._due = 0

    def expect_last(self, n: int) -> None:
        self.target = n
        self._check()

    def _check(self) -> None:
        if self.target is not None and self.expected > self.target:
            self.caught_up.set()

    async def start(self) -> None:
        self.link.route_consumer(self.name, self)
        await self.link.create_consumer(self.name, self.task_id, 1, "feed")
        await self._pull()

    async def _pull(self) -> None:
        key = self.link.new_key("r")
        self.link.route_reply(key, self)
        self._due += BATCH
        await self.link.request_fetch(key, self.name, BATCH, 0, expires_s=30.0, heartbeat_s=5.0)

    async def on_pulled(self, fields: AckFields, msg: Msg) -> None:
        now = time.time()
        self._due -= 1
        match = _EVENT_RE.search(msg.data)
        if match is not None:
            self.see(int(match.group(1)), now - float(match.group(2)))
            self._check()
        if self._due < BATCH // 2:
            await self._pull()

    async def on_reply(self, key: str, msg: Msg) -> None:
        status = (msg.headers or {}).get("Status")
        if status != "100":
            self.link.unroute(key)
            self._due = max(0, self._due - BATCH)
            await self._pull()


async def run(nats_url: str, tasks: list[str]) -> None:
    bus = await connect(CommonConfig(nats_urls=(nats_url,)), name="bench-nats-sink")
    link = Link(bus)
    await link.start()
    latencies: list[float] = []
    sinks = [TaskSink(link, task_id, latencies) for task_id in tasks]
    await asyncio.gather(*(s.start() for s in sinks))
    print("READY", flush=True)
    stop = json.loads((await _stdin_line()).split(" ", 1)[1])
    for s in sinks:
        s.expect_last(stop[s.task_id])
    try:
        async with asyncio.timeout(5.0):  # what has not arrived by then counts as missing
            await asyncio.gather(*(s.caught_up.wait() for s in sinks))
    except TimeoutError:
        pass
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")

    report = {
        "received": sum(s.received for s in sinks),
        "gaps": sum(s.gaps for s in sinks),
        "dups": sum(s.dups for s in sinks),
        "missing": sum(max(0, stop[s.task_id] + 1 - s.expected) for s in sinks),
        "p50_ms": pct(0.50) * 1000,
        "p99_ms": pct(0.99) * 1000,
    }
    print("REPORT " + json.dumps(report), flush=True)
    for s in sinks:
        await link.delete_consumer(s.name)
    await link.stop()
    await bus.close()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2].split(",")))
