"""Idle streams: what one open, idle event stream costs the edge process in memory, from 1,000 to 10,000 streams.

Each stream is on its own task (one feed, one JetStream consumer per stream: the worst case), heartbeats flowing
(SLUICE_HEARTBEAT_S=2). Three edges, each its own process, under the same raw-socket client (bench/loadgen.py):

    floor    a bare FastAPI route holding an idle SSE response under uvicorn (no NATS, no engine)
    engine   the streaming engine behind a minimal FastAPI route (bench/sluice_edge.py)
    edge     the production stream-edge (`sluice edge`): real tasks, `GET /v1/tasks/{id}/events`

KB / stream = (RSS with the streams open − RSS after a warm-up) / streams open. The floor and the engine are
measured at the smallest count only; the production edge at every count (is its cost flat?).
`python -m bench idle [-- --idle 1000,5000,10000 --kinds floor,engine,edge]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from collections.abc import Sequence

from bench.edge_fanout import CpuMeter, _bus, expect, loadgen, tell
from bench.procs import nats_server, rss_bytes, start_edge, table
from sluice import subjects
from sluice.bus import Bus
from sluice.events import TaskSubmittedData
from sluice.ids import new_task_id
from sluice.records import TaskStore
from stream_edge.commands import TaskService

KIND_PROCS = {"floor": "floor", "engine": "sluice", "edge": "edge"}
HEARTBEAT_S = "2"


async def _any_agent(name: str) -> bool:
    return True  # no runner serves these tasks: they only need to exist


async def make_tasks(bus: Bus, count: int) -> list[str]:
    """`count` real tasks (record + task.submitted + work message), as the edge's create route makes them."""
    service = TaskService(bus, TaskStore(await bus.js.key_value(subjects.TASKS_BUCKET)), _any_agent)
    made: list[str] = []
    request = TaskSubmittedData(input="idle", agent="assistant", history=[], metadata={})
    for start in range(0, count, 100):
        records = await asyncio.gather(*(service.submit(request) for _ in range(min(100, count - start))))
        made += [r.id for r in records]
    return made


async def paths_for(kind: str, bus: Bus, count: int, *, one_task: bool = False) -> list[str]:
    if kind != "edge":
        prefix = new_task_id()[:20]
        return [f"/t/{prefix}{0 if one_task else i:06d}" for i in range(count)]
    if one_task:
        return [f"/v1/tasks/{(await make_tasks(bus, 1))[0]}/events"] * count
    return [f"/v1/tasks/{task_id}/events" for task_id in await make_tasks(bus, count)]


async def open_idle(url: str, paths: Sequence[str]) -> tuple[asyncio.subprocess.Process, int]:
    with tempfile.NamedTemporaryFile("w", suffix=".paths", delete=False) as f:
        f.write("\n".join(paths))
    gen = await loadgen("idle-file", url, f.name)
    ok = int(await expect(gen, "READY", timeout_s=600))
    os.unlink(f.name)
    return gen, ok


async def close_idle(gen: asyncio.subprocess.Process) -> None:
    await tell(gen, "STOP")
    await expect(gen, "REPORT")
    await gen.wait()


async def measure(bus: Bus, nats_url: str, kind: str, count: int, *, one_task: bool = False) -> list[str]:
    warm_paths = await paths_for(kind, bus, 20)
    paths = await paths_for(kind, bus, count, one_task=one_task)
    with start_edge(KIND_PROCS[kind], nats_url) as edge:
        gen, _ = await open_idle(edge.url, warm_paths)
        await close_idle(gen)
        await asyncio.sleep(2.5)  # the warm-up's feeds retire
        before = rss_bytes(edge.pid)
        gen, ok = await open_idle(edge.url, paths)
        try:
            await asyncio.sleep(3.0)  # heartbeats flow (every 2 s)
            meter = CpuMeter({"edge": edge.pid})
            meter.start()
            await asyncio.sleep(3.0)
            cpu = meter.stop()["edge"]
            after = rss_bytes(edge.pid)
            await close_idle(gen)
        finally:
            if gen.returncode is None:
                gen.kill()
                await gen.wait()
    per = (after - before) / max(1, ok) / 1024
    return [
        kind,
        str(count),
        "1" if one_task else str(count),
        str(ok),
        f"{before / 2**20:.0f}",
        f"{after / 2**20:.0f}",
        f"{per:.1f}",
        f"{cpu:.1f}%",
    ]


async def run(args: argparse.Namespace) -> list[list[str]]:
    os.environ["SLUICE_HEARTBEAT_S"] = HEARTBEAT_S
    rows: list[list[str]] = []
    with nats_server() as nats:
        bus = await _bus(nats.url)
        try:
            for count in args.idle:
                # The floor and the bare engine once (at the smallest count): what the production edge adds.
                for kind in args.kinds if count == min(args.idle) else [k for k in args.kinds if k == "edge"]:
                    rows.append(await measure(bus, nats.url, kind, count))
                    print("  " + " | ".join(rows[-1]), flush=True)
            for count in args.one_task:  # every stream on the same task: one feed, its ring shared by all
                rows.append(await measure(bus, nats.url, "edge", count, one_task=True))
                print("  " + " | ".join(rows[-1]), flush=True)
        finally:
            await bus.close()
    print("\n(idle) open idle SSE streams, heartbeats every 2 s")
    print(table(rows, ["edge", "streams", "tasks", "open", "RSS before MB", "RSS after MB", "KB / stream", "idle CPU"]))
    return rows


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench idle")
    parser.add_argument("--idle", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 5000, 10000])
    parser.add_argument("--kinds", type=lambda s: s.split(","), default=list(KIND_PROCS))
    # 50,000 streams on one task need 50,000 descriptors in the edge process: a machine whose hard RLIMIT_NOFILE
    # is lower (`ulimit -Hn`) holds what it allows (the load generator raises its soft limit to the hard one).
    parser.add_argument("--one-task", type=lambda s: [int(x) for x in s.split(",") if x], default=[10000])
    parser.add_argument("--quick", action="store_true", help="300 streams only")
    args = parser.parse_args(argv)
    if args.quick:
        args.idle, args.one_task = [300], []
    asyncio.run(run(args))
