"""What `sync_interval: always` costs: JetStream publish latency and throughput with the default and with fsync on
every write, on the same machine in the same run.

nats-server acknowledges a publish once the message is written to its store files, but by default it asks the
operating system to flush them to disk only every 2 minutes (`sync_interval`, default 2m): an acknowledged event
survives a nats-server crash, and — with 3 replicas — the loss of a node, but a power failure of the whole
cluster within that window can lose acknowledged events. `sync_interval: always` fsyncs before every ack.

    python -m bench durability [-- --events 2000 --inflight 64]

Figures: p50/p99 of one publish waiting for its ack (one at a time), and events/s with `--inflight` publishes in
flight, each as measured and as a ratio of the default's.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.procs import nats_server, percentile, table
from sluice import subjects
from sluice.admin import provision_as_admin
from sluice.bus import connect
from sluice.config import CommonConfig

__all__ = ["main"]

SETTINGS = {
    "default (2m)": None,
    "always": "jetstream {\n  sync_interval: always\n}\n",  # the store dir comes from the -sd flag
}
PAYLOAD = b'{"task_id":"bench","type":"llm.delta","data":{"step":1,"attempt":1,"text":"' + b"x" * 200 + b'"}}'


async def _measure(url: str, events: int, inflight: int) -> tuple[list[float], float]:
    config = CommonConfig(nats_urls=(url,))
    await provision_as_admin(config)
    bus = await connect(config, name="sluice-bench-durability")
    try:
        task_id = "bench0000durability"
        subject = subjects.event(task_id, "llm.delta")
        latencies: list[float] = []
        for n in range(events // 4):
            started = time.perf_counter()
            await bus.js.publish(subject, PAYLOAD, headers={"Nats-Msg-Id": f"{task_id}:l{n}"})
            latencies.append(time.perf_counter() - started)
        gate = asyncio.Semaphore(inflight)

        async def one(n: int) -> None:
            async with gate:
                await bus.js.publish(subject, PAYLOAD, headers={"Nats-Msg-Id": f"{task_id}:t{n}"})

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for n in range(events):
                group.create_task(one(n))
        return latencies, events / (time.perf_counter() - started)
    finally:
        await bus.close()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench durability")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--inflight", type=int, default=64)
    args = parser.parse_args(argv)
    results: dict[str, tuple[list[float], float]] = {}
    for name, config in SETTINGS.items():
        with nats_server(config) as server:
            results[name] = asyncio.run(_measure(server.url, args.events, args.inflight))
    base_lat, base_rate = results["default (2m)"]
    base_p50 = percentile(base_lat, 0.5)
    rows = []
    for name, (lat, rate) in results.items():
        p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
        rows.append(
            [
                name,
                f"{p50 * 1e3:.2f} ms",
                f"{p99 * 1e3:.2f} ms",
                f"{p50 / base_p50:.1f}x",
                f"{rate:,.0f}",
                f"{rate / base_rate:.2f}x",
            ]
        )
    header = ["sync_interval", "publish p50", "publish p99", "p50 vs default", "events/s", "events/s vs default"]
    print(table(rows, header))
    print(f"({args.events // 4} sequential publishes for latency, {args.events} with {args.inflight} in flight)")
