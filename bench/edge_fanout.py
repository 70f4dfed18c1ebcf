"""Stream-edge benchmark: the Sluice streaming engine against a baseline edge (bench/baseline_edge.py).

Both edges run as their own uvicorn process on the same nats-server; the load generator (bench/loadgen.py) is a
third process of raw sockets; the publisher runs in this process and writes straight to JetStream (async
publishes, every ack awaited), with a per-task counter and the publish time in each event.

    1 fan-out     T tasks × C clients × R events/s: delivered/s, publish→client p50/p99, gaps/dups, CPU
    2 capacity    R raised until p99 > 100 ms or any gap/dup/miss: the last rate that held, at 10×10 and 100×1
    3 idle        RSS per open idle SSE stream at N streams (each on its own task: one feed per stream)
    4 replay      time to deliver a 10k / 100k history to a fresh client, from the middle, and (--big) a 100k
                  history in a stream holding ~1M other events
    5 ceiling     the NATS client alone: one ordered push consumer drained; the engine's direct-get reader

`python -m bench edge [-- --quick | --big | --idle 1000,5000 | --parts fanout,capacity,idle,replay,ceiling]`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.procs import ROOT, Proc, cpu_seconds, nats_server, rss_bytes, start_edge, table
from sluice import subjects
from sluice.bus import Bus, connect
from sluice.config import CommonConfig
from sluice.ids import new_task_id
from sluice.provision import provision

KINDS = ("baseline", "sluice")
MAX_CONSUMERS = 100_000
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
PAD = b"lorem ipsum dolor sit amet " * 4  # events of ~300 bytes, as a typical llm.delta with its envelope


def event_payload(task_id: str, n: int) -> bytes:
    return (
        b'{"type":"llm.delta","task_id":"%s","ts":"2026-01-01T00:00:00.000Z","source":"bench",'
        b'"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","data":{"step":1,"attempt":1,"text":"%d:%.6f %s"}}'
        % (task_id.encode(), n, time.time(), PAD)
    )


# ---------------------------------------------------------------------- publishing


async def publish_rate(bus: Bus, tasks: Sequence[str], rate: float, duration_s: float) -> tuple[dict[str, int], float]:
    """Publishes `rate` events/s round-robin over `tasks` for `duration_s`; waits for every ack.
    Returns the last counter per task and the rate achieved."""
    js = bus.js
    counters = dict.fromkeys(tasks, -1)
    subjects_of = {t: subjects.event(t, "llm.delta") for t in tasks}
    tick = 0.005
    started = time.perf_counter()
    sent = 0
    acks: list[asyncio.Future[Any]] = []
    i = 0
    while True:
        elapsed = time.perf_counter() - started
        if elapsed >= duration_s:
            break
        due = int(rate * elapsed) - sent
        for _ in range(max(0, due)):
            task = tasks[i % len(tasks)]
            i += 1
            n = counters[task] + 1
            counters[task] = n
            headers = {"Nats-Msg-Id": f"{task}:b{n}", "traceparent": TRACEPARENT}
            acks.append(await js.publish_async(subjects_of[task], event_payload(task, n), headers=headers))
            sent += 1
        await asyncio.sleep(tick)
    achieved = sent / (time.perf_counter() - started)
    results = await asyncio.gather(*acks, return_exceptions=True)
    failed = sum(isinstance(r, BaseException) for r in results)
    if failed:
        print(f"  ! {failed} publishes not acknowledged", flush=True)
    return counters, achieved


async def fill(bus: Bus, task_id: str, count: int, first_n: int = 0) -> int:
    """Stores `count` events for one task as fast as JetStream takes them; returns the seq of the first."""
    js = bus.js
    subject = subjects.event(task_id, "llm.delta")
    first_seq = 0
    pending: list[asyncio.Future[Any]] = []
    for n in range(first_n, first_n + count):
        headers = {"Nats-Msg-Id": f"{task_id}:f{n}", "traceparent": TRACEPARENT}
        pending.append(await js.publish_async(subject, event_payload(task_id, n), headers=headers))
        if len(pending) >= 2000:
            acks = await asyncio.gather(*pending)
            first_seq = first_seq or acks[0].seq
            pending = []
    if pending:
        acks = await asyncio.gather(*pending)
        first_seq = first_seq or acks[0].seq
    return first_seq


# ---------------------------------------------------------------------- processes


async def loadgen(
    *args: str, module: str = "bench.loadgen", env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip


async def expect(proc: asyncio.subprocess.Process, word: str, timeout_s: float = 120.0) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(timeout_s):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise RuntimeError(f"load generator exited (waiting for {word})")
            if line.startswith(word):
                return line[len(word) :].strip()


async def tell(proc: asyncio.subprocess.Process, line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line.encode() + b"\n")
    await proc.stdin.drain()


class CpuMeter:
    """CPU% (of one core) of several processes over a window; this process counts as the publisher."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def _now(self) -> dict[str, float]:
        out = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out["publisher"] = usage.ru_utime + usage.ru_stime
        return out

    def start(self) -> None:
        self._t0, self._c0 = time.monotonic(), self._now()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._t0
        c1 = self._now()
        return {name: 100 * (c1[name] - self._c0[name]) / wall for name in c1}


# ---------------------------------------------------------------------- 1 + 2: fan-out and capacity


@dataclass(frozen=True)
class StreamTarget:
    """What the load generator's clients open: `path` ({task} filled in) of each task, with an `Authorization`
    header if one is given. `new_tasks(n)` makes the tasks of one run (the production edge streams only real tasks,
    and a fresh client replays a task from its start, so each run needs its own); None: fresh ids, which the
    engine edges stream as they are."""

    path: str = "/t/{task}"
    authorization: str | None = None
    new_tasks: Callable[[int], Awaitable[list[str]]] | None = None


ENGINE = StreamTarget()


@dataclass
class FanoutResult:
    rate: float
    achieved: float
    delivered_per_s: float
    p50_ms: float
    p99_ms: float
    gaps: int
    dups: int
    missing: int
    cpu: dict[str, float]

    @property
    def ok(self) -> bool:
        return (
            self.p99_ms <= 100
            and self.gaps == 0
            and self.dups == 0
            and self.missing == 0
            and self.achieved >= 0.9 * self.rate
        )


async def fanout(
    bus: Bus,
    edge: Proc | None,
    nats: Proc,
    tasks_n: int,
    clients: int,
    rate: float,
    duration_s: float,
    target: StreamTarget = ENGINE,
) -> FanoutResult:
    """`edge` None: the NATS-only ceiling (bench/nats_sink.py: the same consumers, no HTTP; its CPU is `edge`)."""
    if target.new_tasks is not None:
        tasks = await target.new_tasks(tasks_n)
    else:
        tasks = [new_task_id() for _ in range(tasks_n)]
    if edge is None:
        gen = await loadgen(nats.url, ",".join(tasks), module="bench.nats_sink")
    else:
        # The credential goes through the environment, not the command line (which `ps` shows).
        env = {"BENCH_AUTHORIZATION": target.authorization} if target.authorization else None
        gen = await loadgen("fanout", edge.url, ",".join(tasks), str(clients), target.path, env=env)
    try:
        await expect(gen, "READY")
        await asyncio.sleep(1.0)  # the streams have their headers; let them reach the live feed / consumer
        meter = CpuMeter({"edge": edge.pid if edge else gen.pid, "loadgen": gen.pid, "nats": nats.pid})
        meter.start()
        last, achieved = await publish_rate(bus, tasks, rate, duration_s)
        cpu = meter.stop()
        await tell(gen, "STOP " + json.dumps(last))
        report = json.loads(await expect(gen, "REPORT"))
    finally:
        if gen.returncode is None:
            gen.kill()
        await gen.wait()
    return FanoutResult(
        rate=rate,
        achieved=achieved,
        delivered_per_s=report["received"] / duration_s,
        p50_ms=report["p50_ms"],
        p99_ms=report["p99_ms"],
        gaps=report["gaps"],
        dups=report["dups"],
        missing=report["missing"],
        cpu=cpu,
    )


def edge_us_per_event(r: FanoutResult) -> float:
    """Edge CPU time per delivered event: steadier than latency on a shared machine."""
    return r.cpu["edge"] / 100 * 1e6 / r.delivered_per_s if r.delivered_per_s else float("nan")


def fanout_row(kind: str, shape: str, r: FanoutResult) -> list[str]:
    return [
        kind, shape, f"{r.rate:.0f}", f"{r.achieved:.0f}", f"{r.delivered_per_s:.0f}", f"{r.p50_ms:.1f}",
        f"{r.p99_ms:.1f}", f"{r.gaps}/{r.dups}/{r.missing}", f"{r.cpu['edge']:.0f}%",
        f"{edge_us_per_event(r):.1f}", f"{r.cpu['loadgen']:.0f}%", f"{r.cpu['nats']:.0f}%",
        f"{r.cpu['publisher']:.0f}%",
    ]  # fmt: skip


FANOUT_HEADER = [
    "edge", "T×C", "R ev/s", "published/s", "delivered/s", "p50 ms", "p99 ms", "gap/dup/miss",
    "edge CPU", "edge µs/event", "loadgen CPU", "nats CPU", "pub CPU",
]  # fmt: skip


async def part_fanout(bus: Bus, nats: Proc, args: argparse.Namespace) -> None:
    rows = []
    for kind in KINDS:
        with start_edge(kind, nats.url) as edge:
            for tasks_n, clients, rate in args.fanout:
                result = await fanout(bus, edge, nats, tasks_n, clients, rate, args.duration)
                rows.append(fanout_row(kind, f"{tasks_n}×{clients}", result))
                print("  " + " | ".join(rows[-1]), flush=True)
    print("\n(1) fan-out, publisher → JetStream → edge → load generator\n" + table(rows, FANOUT_HEADER), flush=True)


def why_over(r: FanoutResult) -> str:
    if r.gaps or r.dups or r.missing:
        return f"gap/dup/miss {r.gaps}/{r.dups}/{r.missing}"
    if r.achieved < 0.9 * r.rate:
        return f"publisher reached {r.achieved:.0f}/s of {r.rate:.0f}"
    return f"p99 {r.p99_ms:.0f} ms at {r.rate:.0f}/s (edge CPU {r.cpu['edge']:.0f}%)"


async def capacity(
    bus: Bus, edge: Proc | None, nats: Proc, tasks_n: int, clients: int, args: argparse.Namespace
) -> tuple[float, FanoutResult | None, str]:
    best: FanoutResult | None = None
    stopped = f"held up to --max-rate {args.max_rate:.0f}"
    rate = args.start_rate
    failed_at: float | None = None

    async def step(rate: float) -> FanoutResult:
        result = await fanout(bus, edge, nats, tasks_n, clients, rate, args.step)
        row = fanout_row("", f"{tasks_n}×{clients}", result)
        print("  " + " | ".join(row) + ("" if result.ok else "  ← over"), flush=True)
        return result

    while rate <= args.max_rate:
        result = await step(rate)
        if not result.ok:
            failed_at, stopped = rate, why_over(result)
            break
        best = result
        rate *= 2
    if best is not None and failed_at is not None and failed_at > best.rate * 1.3:
        result = await step((best.rate + failed_at) / 2)
        if result.ok:
            best = result
        else:
            stopped = why_over(result)
    return (best.rate if best else 0.0), best, stopped


async def part_capacity(bus: Bus, nats: Proc, args: argparse.Namespace) -> None:
    summary = []
    found: dict[tuple[str, str], float] = {}
    for kind in KINDS:
        with start_edge(kind, nats.url) as edge:
            for tasks_n, clients in ((10, 10), (100, 1)):
                print(f"  capacity {kind} {tasks_n}×{clients}", flush=True)
                rate, best, stopped = await capacity(bus, edge, nats, tasks_n, clients, args)
                found[(kind, f"{tasks_n}×{clients}")] = rate
                summary.append([
                    kind, f"{tasks_n}×{clients}", f"{rate:.0f}", f"{(best.delivered_per_s if best else 0):.0f}",
                    f"{best.p99_ms:.1f}" if best else "-", f"{best.cpu['edge']:.0f}%" if best else "-",
                    f"{edge_us_per_event(best):.1f}" if best else "-", stopped,
                ])  # fmt: skip
    print("  capacity NATS-only 100×1 (the same consumers, no HTTP: bench/nats_sink.py)", flush=True)
    ceiling, best, stopped = await capacity(bus, None, nats, 100, 1, args)
    found[("nats-only", "100×1")] = ceiling
    summary.append([
        "nats-only", "100×1", f"{ceiling:.0f}", f"{(best.delivered_per_s if best else 0):.0f}",
        f"{best.p99_ms:.1f}" if best else "-", f"{best.cpu['edge']:.0f}%" if best else "-", "-", stopped,
    ])  # fmt: skip
    print("\n(2) capacity: the highest published rate with p99 ≤ 100 ms and no gap/dup/miss", flush=True)
    header = ["edge", "T×C", "published ev/s", "delivered ev/s", "p99 ms", "edge CPU", "µs/event", "next step over"]
    print(table(summary, header))
    print("  (the publisher, NATS, the load generator and the edge share this machine's CPUs: when the next step is")
    print("   over because the publisher fell short, the figure is a floor for the edge, not its ceiling)")
    for shape in ("10×10", "100×1"):
        base, ours = found.get(("baseline", shape), 0), found.get(("sluice", shape), 0)
        ratio = f"{ours / base:.1f}×" if base else "n/a (baseline held no step)"
        print(f"  {shape}: sluice / baseline = {ratio}")
    ceiling = found.get(("nats-only", "100×1"), 0)
    ours = found.get(("sluice", "100×1"), 0)
    print(
        f"  100×1: sluice / NATS-only ceiling = {ours / ceiling:.2f}" if ceiling else "  100×1: no NATS-only step held"
    )


# ---------------------------------------------------------------------- 3: idle streams


async def idle_rss(nats: Proc, kind: str, count: int, tasks: int) -> list[str]:
    with start_edge(kind, nats.url) as edge:
        warm = await loadgen("idle", edge.url, "20", f"{new_task_id()[:18]}w")
        await expect(warm, "READY")
        await tell(warm, "STOP")
        await expect(warm, "REPORT")
        await warm.wait()
        await asyncio.sleep(2.5)  # the warm-up's feeds retire
        before = rss_bytes(edge.pid)
        gen = await loadgen("idle", edge.url, str(count), new_task_id()[:20], str(tasks))
        try:
            ok = int(await expect(gen, "READY", timeout_s=300))
            await asyncio.sleep(2.0)
            meter = CpuMeter({"edge": edge.pid})
            meter.start()
            await asyncio.sleep(3.0)
            cpu = meter.stop()["edge"]
            after = rss_bytes(edge.pid)
            await tell(gen, "STOP")
            await expect(gen, "REPORT")
        finally:
            if gen.returncode is None:
                gen.kill()
            await gen.wait()
    per = (after - before) / max(1, ok)
    return [kind, str(count), str(tasks) if kind != "floor" else "-", str(ok), f"{before / 2**20:.0f}",
            f"{after / 2**20:.0f}", f"{per / 1024:.1f}", f"{cpu:.1f}%"]  # fmt: skip


async def part_idle(nats: Proc, args: argparse.Namespace) -> None:
    rows = []
    for count in args.idle:
        cases = [("floor", count), ("baseline", count), ("sluice", count), ("sluice", max(1, count // 100))]
        for kind, tasks in cases:
            rows.append(await idle_rss(nats, kind, count, tasks))
            print("  " + " | ".join(rows[-1]), flush=True)
    print("\n(3) idle SSE streams (floor = a FastAPI route holding an idle response: uvicorn + FastAPI alone)")
    print(table(rows, ["edge", "streams", "tasks", "open", "RSS before MB", "RSS after MB", "KB / stream", "idle CPU"]))


# ---------------------------------------------------------------------- 4: replay


async def replay_once(edge: Proc, task_id: str, after: int) -> dict[str, Any]:
    gen = await loadgen("replay", edge.url, task_id, str(after))
    report = json.loads(await expect(gen, "REPORT", timeout_s=600))
    await gen.wait()
    return report


async def part_replay(args: argparse.Namespace) -> None:
    rows = []
    cases: list[tuple[str, int, bool]] = [("10k", 10_000, False), ("100k", 100_000, False)]
    if args.big:
        cases.append(("100k, stream holds 1M others", 100_000, True))
    for label, size, crowded in cases:
        with nats_server() as nats:
            bus = await _bus(nats.url)
            try:
                if crowded:
                    started = time.perf_counter()
                    others = [new_task_id() for _ in range(1000)]
                    for chunk in range(0, 1000, 50):
                        await asyncio.gather(*(fill(bus, t, 1000) for t in others[chunk : chunk + 50]))
                    print(f"  stored 1M other events in {time.perf_counter() - started:.0f} s", flush=True)
                task_id = new_task_id()
                first = await fill(bus, task_id, size)
                middle = first + size // 2 - 1
                for kind in KINDS:
                    with start_edge(kind, nats.url) as edge:
                        for where, after in (("from 0", 0), ("from middle", middle)):
                            report = await replay_once(edge, task_id, after)
                            rate = report["events"] / report["seconds"]
                            rows.append([kind, label, where, str(report["events"]), f"{report['seconds']:.2f}",
                                         f"{rate:.0f}", f"{report['first_byte_s'] * 1000:.0f}",
                                         f"{report['end_s']:.2f}", "yes" if report["ordered"] else "NO"])  # fmt: skip
                            print("  " + " | ".join(rows[-1]), flush=True)
            finally:
                await bus.close()
    print("\n(4) replay to a fresh client (follow=false)")
    header = [
        "edge",
        "history",
        "start",
        "events",
        "s to last event",
        "events/s",
        "first byte ms",
        "s to end",
        "in order",
    ]
    print(table(rows, header))


# ---------------------------------------------------------------------- 5: the NATS client's ceiling


async def part_ceiling(args: argparse.Namespace) -> None:
    size = 100_000
    with nats_server() as nats:
        bus = await _bus(nats.url)
        try:
            task_id = new_task_id()
            await fill(bus, task_id, size)
            count = 0
            done = asyncio.get_running_loop().create_future()

            async def counted(_: Any) -> None:
                nonlocal count
                count += 1
                if count == size and not done.done():
                    done.set_result(None)

            started = time.perf_counter()
            sub = await bus.js.subscribe(subjects.events_of_task(task_id), cb=counted, ordered_consumer=True)
            await done
            push_rate = size / (time.perf_counter() - started)
            await sub.unsubscribe()

            from stream_edge.streaming import natsfast

            natsfast.install(bus.nc)  # as StreamHub.start does
            direct_rate = await _drain_reader(bus, task_id, bulk=False)
            reader_rate = await _drain_reader(bus, task_id, bulk=True)
        finally:
            await bus.close()
    print("\n(5) the NATS client alone (nats-py, no HTTP), 100k stored events of one task")
    print(table([
        ["ordered push consumer (js.subscribe ordered_consumer=True), drained, stock nats-py", f"{push_rate:.0f}"],
        ["engine's catch-up reader, direct gets only (batched, one batch ahead)", f"{direct_rate:.0f}"],
        ["engine's catch-up reader as used (direct get, then a pull consumer)", f"{reader_rate:.0f}"],
    ], ["what", "events/s"]))  # fmt: skip


async def _drain_reader(bus: Bus, task_id: str, *, bulk: bool) -> float:
    from stream_edge.streaming import reader as reader_module
    from stream_edge.streaming.link import Link

    saved = reader_module.BULK_AFTER
    reader_module.BULK_AFTER = saved if bulk else 1 << 62
    link = Link(bus)
    await link.start()
    try:
        wake = asyncio.Event()
        reader = reader_module.LogReader(link, task_id, wake.set)
        reader.start(0)
        got = 0
        started = time.perf_counter()
        while True:
            batch = reader.take()
            if batch is None:
                if reader.exhausted or reader.error is not None:
                    break
                wake.clear()
                await reader.request()
                if not reader.has_batch and not reader.exhausted:
                    await wake.wait()
                continue
            await reader.request()
            got += len(batch)
        return got / (time.perf_counter() - started)
    finally:
        reader_module.BULK_AFTER = saved
        await link.stop()


# ---------------------------------------------------------------------- main


async def _bus(url: str) -> Bus:
    config = CommonConfig(nats_urls=(url,))
    bus = await connect(config, name="sluice-bench")
    await provision(bus.js, config)
    # nats-server 2.15 allows 1000 consumers per stream unless the stream says otherwise; the idle test needs more
    # (one feed consumer per task on our side, one consumer per client on the baseline's).
    stream = (await bus.js.stream_info(subjects.EVENTS_STREAM)).config
    stream.max_consumers = MAX_CONSUMERS
    await bus.js.update_stream(stream)
    return bus


async def run(args: argparse.Namespace) -> None:
    # uvicorn's "auto" takes httptools and uvloop when they are installed (they are Sluice dependencies).
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}; uvicorn {http}, {loop} loop", flush=True)
    if "fanout" in args.parts or "capacity" in args.parts or "idle" in args.parts:
        with nats_server() as nats:
            bus = await _bus(nats.url)
            try:
                if "fanout" in args.parts:
                    await part_fanout(bus, nats, args)
                if "capacity" in args.parts:
                    await part_capacity(bus, nats, args)
                if "idle" in args.parts:
                    await part_idle(nats, args)
            finally:
                await bus.close()
    if "replay" in args.parts:
        await part_replay(args)
    if "ceiling" in args.parts:
        await part_ceiling(args)


def _shapes(text: str) -> list[tuple[int, int, float]]:
    out = []
    for item in text.split(","):
        t, c, r = item.split("x")
        out.append((int(t), int(c), float(r)))
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench edge", description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="fanout,capacity,idle,replay,ceiling")
    parser.add_argument("--fanout", type=_shapes, default=_shapes("10x10x1000,10x10x5000"),
                        help="TxCxR,... (tasks x clients per task x published events/s)")  # fmt: skip
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per fan-out run")
    parser.add_argument("--step", type=float, default=2.0, help="seconds per capacity step")
    parser.add_argument("--start-rate", type=float, default=500.0)
    parser.add_argument("--max-rate", type=float, default=64_000.0)
    parser.add_argument("--idle", type=lambda s: [int(x) for x in s.split(",")], default=[1000])
    parser.add_argument("--big", action="store_true", help="also replay 100k in a stream of ~1M other events")
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    args = parser.parse_args(argv)
    args.parts = set(args.parts.split(","))
    if args.quick:
        args.duration, args.step, args.idle = 2.0, 2.0, [300]
        args.fanout = _shapes("10x10x1000")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(run(args))
