"""Agent-runner pipeline benchmark: tokens/s through runner → NATS → client against the openai SDK reading the
demo model directly, tasks/s with 1 and 2 runner processes, and `llm.delta` messages per 1,000 tokens for a few
coalescing windows and token rates.

Everything runs as real processes on this machine: nats-server, `sluice demo-llm`, `sluice agent-runner` (×1 or
×2). The client is a core NATS subscription on the task's events, taken before the task is submitted; tasks are
submitted the way stream-edge submits them (record, task.submitted, work message).

    python -m bench runner                 # or: python -m bench.runner_pipeline [--tasks N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import openai

from agent_runner.settings import DEFAULT_DELTA_WINDOW_MS
from bench.procs import cpu_seconds, free_port
from sluice import msgids, subjects
from sluice.admin import provision_as_admin
from sluice.bus import Bus, connect
from sluice.clock import now_iso
from sluice.config import CommonConfig
from sluice.eventlog import EventWriter
from sluice.events import Budget, TaskRecord, TaskSubmitted, TaskSubmittedData, decode_event, encode
from sluice.ids import new_task_id
from sluice.messages import WorkMessage
from sluice.provision import provision
from sluice.records import TaskStore

__all__ = ["main"]

SLUICE = str(Path(sys.executable).with_name("sluice"))
# The demo model restates up to 400 characters of the request: the longest reply it gives (~110 tokens).
PROMPT = (
    "Describe, in as much detail as you can, how a durable event log lets a client that reconnects with the last "
    "id it saw receive every later event exactly once, in order, across restarts of every service involved, "
    "and why the runner coalesces the deltas of a streamed answer over a few milliseconds before publishing them"
)
WINDOWS_MS = (0.0, 5.0, 15.0, 25.0, 50.0)
# ms between chunks (one word each, ~1.6 demo tokens) → column label; 0 = as fast as the demo model streams.
PACES_MS = ((0.0, "unpaced"), (5.0, "chunk/5ms"), (10.0, "chunk/10ms"), (25.0, "chunk/25ms"))


# ---------------------------------------------------------------- processes (self-contained: NATS, services, /proc)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataclass
class Nats:
    url: str
    pid: int


@contextlib.contextmanager
def nats_server() -> Iterator[Nats]:
    port = free_port()
    binary = shutil.which("nats-server") or str(Path(sys.executable).with_name("nats-server"))
    with tempfile.TemporaryDirectory(prefix="sluice-bench-nats-") as store:
        popen = subprocess.Popen([binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while not _port_open(port):
                if popen.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("nats-server did not start")
                time.sleep(0.05)
            url = f"nats://127.0.0.1:{port}"
            asyncio.run(provision_as_admin(CommonConfig(nats_urls=(url,))))  # services only check the layout
            yield Nats(url, popen.pid)
        finally:
            popen.terminate()
            popen.wait(10)


@dataclass
class Service:
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@contextlib.contextmanager
def service(command: str, env: dict[str, str], log_dir: Path, name: str, port: int = 0) -> Iterator[Service]:
    """`sluice <command>`, ready once it logs `ready` (or, with `port`, once the port accepts connections)."""
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen([SLUICE, command], env=env, stdout=out, stderr=subprocess.STDOUT)
    proc = Service(popen, log)
    try:
        deadline = time.monotonic() + 30
        while not (_port_open(port) if port else b'"msg":"ready"' in log.read_bytes()):
            if popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sluice {command} did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield proc
    finally:
        proc.stop()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def base_env(nats_url: str, demo_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "OTEL_", "OPENAI_"))}
    env.update(
        SLUICE_NATS_URL=nats_url,
        SLUICE_DEMO_LLM_HOST="127.0.0.1",
        SLUICE_DEMO_LLM_PORT=str(demo_port),
        SLUICE_RUNNER_METRICS_PORT="0",
        SLUICE_DEMO_LLM_LOG_LEVEL="warning",
        PYTHONUNBUFFERED="1",
        # Every task of a bench is the default tenant's, made faster than a tenant may: no per-tenant limits.
        SLUICE_TENANT_MAX_ACTIVE="0",
        SLUICE_TENANT_RATE="0",
        SLUICE_TENANT_MAX_STREAMS="0",
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def runners(count: int, env: dict[str, str], log_dir: Path) -> Iterator[list[Service]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(service("agent-runner", env, log_dir, f"runner-{i}")) for i in range(count)]


# ---------------------------------------------------------------- the client side


@dataclass
class Watched:
    """One task as its client saw it: arrival times of its deltas and its end."""

    submitted: float = 0.0
    first_text: float = 0.0
    last_text: float = 0.0
    deltas: int = 0
    output_tokens: int = 0
    ended_at: float = 0.0
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: str = ""


async def submit(bus: Bus, store: TaskStore, writer: EventWriter, text: str) -> str:
    task_id = new_task_id()
    now = now_iso()
    await store.create(TaskRecord(id=task_id, state="submitted", agent="assistant", input=text, created_at=now,
                                  updated_at=now))  # fmt: skip
    data = TaskSubmittedData(input=text, agent="assistant", history=[], metadata={}, budget=Budget())
    await writer.emit(TaskSubmitted, task_id, data, msg_id=msgids.submitted(task_id))
    await bus.publish(
        subjects.work(task_id), encode(WorkMessage(task_id=task_id)), msg_id=msgids.run_submitted(task_id)
    )
    return task_id


class Client:
    """Watches every task's events on one subscription (as a client reading NATS would)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.tasks: dict[str, Watched] = {}
        self.sub: object = None

    async def __aenter__(self) -> Client:
        self.sub = await self.bus.nc.subscribe(subjects.events_all(), cb=self._on_event)
        await self.bus.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sub.unsubscribe()  # type: ignore[attr-defined]

    async def _on_event(self, msg: object) -> None:
        now = time.perf_counter()
        subject: str = msg.subject  # type: ignore[attr-defined]
        kind = subjects.event_type_of(subject)
        watched = self.tasks.get(subjects.task_id_of(subject))
        if watched is None:
            return
        if kind == "llm.delta":
            watched.deltas += 1
            watched.first_text = watched.first_text or now
            watched.last_text = now
        elif kind in ("task.completed", "task.failed", "task.canceled"):
            event = decode_event(msg.data)  # type: ignore[attr-defined]
            usage = getattr(event.data, "usage", None)  # type: ignore[attr-defined]
            watched.output_tokens = usage.output_tokens if usage is not None else 0
            watched.outcome = kind
            watched.ended_at = now
            watched.ended.set()

    async def run(self, store: TaskStore, writer: EventWriter, texts: Sequence[str]) -> list[Watched]:
        """Submits every text at once and waits for all of them to end."""
        watched = []
        for text in texts:
            w = Watched(submitted=time.perf_counter())
            task_id = await submit(self.bus, store, writer, text)
            self.tasks[task_id] = w
            watched.append(w)
        await asyncio.wait_for(asyncio.gather(*(w.ended.wait() for w in watched)), 600)
        failed = [w.outcome for w in watched if w.outcome != "task.completed"]
        if failed:
            raise RuntimeError(f"{len(failed)} tasks did not complete: {failed[:3]}")
        return watched


@contextlib.asynccontextmanager
async def client(nats_url: str) -> AsyncIterator[tuple[Client, TaskStore, EventWriter]]:
    bus = await connect(CommonConfig(nats_urls=(nats_url,)), name="sluice-bench-runner")
    try:
        await provision(bus.js, CommonConfig(nats_urls=(nats_url,)))
        store = TaskStore(await bus.js.key_value(subjects.TASKS_BUCKET))
        async with Client(bus) as c:
            yield c, store, EventWriter(bus, "bench")
    finally:
        await bus.close()


# ---------------------------------------------------------------- measurements


async def direct_sdk(base_url: str, runs: int, slow_ms: float) -> tuple[float, float, int]:
    """(tokens/s from request to last chunk, median time to first token, tokens per answer) via the SDK."""
    marker = f" [fault:slow:{slow_ms:g}]" if slow_ms else ""
    rates, firsts, tokens = [], [], 0
    async with openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0) as sdk:
        for i in range(runs):
            started = time.perf_counter()
            first = last = 0.0
            stream = await sdk.chat.completions.create(
                model="sluice-demo",
                messages=[{"role": "user", "content": f"{PROMPT} ({i}){marker}"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    first = first or time.perf_counter()
                    last = time.perf_counter()
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
            rates.append(tokens / (last - started))
            firsts.append(first - started)
    return sum(rates) / len(rates), percentile(firsts, 0.5), tokens


async def through_runner(nats_url: str, runs: int, slow_ms: float) -> tuple[float, float, float]:
    """(tokens/s from submit to the last delta at the client, median time to first delta, deltas per task)."""
    marker = f" [fault:slow:{slow_ms:g}]" if slow_ms else ""
    rates, firsts, deltas = [], [], []
    async with client(nats_url) as (c, store, writer):
        for i in range(runs):
            (w,) = await c.run(store, writer, [f"{PROMPT} ({new_task_id()}-{i}){marker}"])
            rates.append(w.output_tokens / (w.last_text - w.submitted))
            firsts.append(w.first_text - w.submitted)
            deltas.append(w.deltas)
    return sum(rates) / len(rates), percentile(firsts, 0.5), sum(deltas) / len(deltas)


async def task_rate(nats_url: str, count: int) -> tuple[float, float]:
    """(tasks/s for `count` tasks submitted at once, p50 latency submit → terminal)."""
    async with client(nats_url) as (c, store, writer):
        await c.run(store, writer, [f"warm-up {new_task_id()}"])
        started = time.perf_counter()
        watched = await c.run(store, writer, [f"task {i} {new_task_id()}" for i in range(count)])
        wall = time.perf_counter() - started
        ends = [w.ended_at - w.submitted for w in watched]
    return count / wall, percentile(ends, 0.5)


async def delta_rate(nats_url: str, tasks: int, slow_ms: float) -> tuple[float, float]:
    """(llm.delta messages per 1,000 output tokens, mean tokens per task) at the runner's configured window."""
    marker = f" [fault:slow:{slow_ms:g}]" if slow_ms else ""
    async with client(nats_url) as (c, store, writer):
        watched = await c.run(store, writer, [f"{PROMPT} ({new_task_id()}){marker}" for _ in range(tasks)])
    tokens = sum(w.output_tokens for w in watched)
    return 1000 * sum(w.deltas for w in watched) / tokens, tokens / len(watched)


# ---------------------------------------------------------------- the run


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200, help="tasks submitted at once for tasks/s")
    parser.add_argument("--runs", type=int, default=20, help="single tasks timed for tokens/s")
    parser.add_argument("--quick", action="store_true", help="fewer tasks and runs (a smoke test)")
    args = parser.parse_args(list(argv or []))
    if args.quick:
        args.tasks, args.runs = 40, 5
    with tempfile.TemporaryDirectory(prefix="sluice-bench-runner-") as tmp, nats_server() as nats:
        logs = Path(tmp)
        demo_port = free_port()
        env = base_env(nats.url, demo_port)
        with service("demo-llm", env, logs, "demo-llm", port=demo_port) as demo:
            base_url = f"http://127.0.0.1:{demo_port}/v1"
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"machine: {os.cpu_count()} CPUs, load average {load} at the start; every process of this benchmark")
            print("(NATS, demo model, runners, client) runs on it, next to whatever else the load says is running\n")
            _pipeline(nats.url, base_url, env, logs, args.runs)
            _throughput(nats.url, env, logs, args.tasks, {"demo": demo.popen.pid, "nats": nats.pid})
            _coalescing(nats.url, env, logs, 2 if args.quick else 4)


def _pipeline(nats_url: str, base_url: str, env: dict[str, str], logs: Path, runs: int) -> None:
    rows = []
    with runners(1, env, logs):
        for slow_ms, label in ((0.0, "unpaced"), (10.0, "chunk/10ms")):
            sdk_rate, sdk_first, tokens = asyncio.run(direct_sdk(base_url, runs, slow_ms))
            run_rate, run_first, deltas = asyncio.run(through_runner(nats_url, runs, slow_ms))
            rows.append([label, f"{tokens}", f"{sdk_rate:,.0f}", f"{run_rate:,.0f}", f"{run_rate / sdk_rate:.2f}",
                         f"{sdk_first * 1000:.1f}", f"{run_first * 1000:.1f}", f"{deltas:.1f}"])  # fmt: skip
    print("tokens/s of one answer: openai SDK reading the demo model vs. runner → NATS → client "
          f"(mean of {runs} tasks, default window {DEFAULT_DELTA_WINDOW_MS:g} ms)")  # fmt: skip
    header = ["demo rate", "tokens", "SDK tok/s", "runner tok/s", "ratio", "SDK TTFT ms", "runner TTFT ms",
              "deltas/answer"]  # fmt: skip
    print(table(rows, header) + "\n")


def _throughput(nats_url: str, env: dict[str, str], logs: Path, count: int, pids: dict[str, int]) -> None:
    rows = []
    for processes in (1, 2):
        with runners(processes, env, logs) as procs:
            watched = {**pids, "client": os.getpid()} | {f"runner{i}": p.popen.pid for i, p in enumerate(procs)}
            before = {name: cpu_seconds(pid) for name, pid in watched.items()}
            rate, p50 = asyncio.run(task_rate(nats_url, count))
            used = {name: cpu_seconds(pid) - before[name] for name, pid in watched.items()}
        runner_ms = sum(v for k, v in used.items() if k.startswith("runner")) * 1000 / (count + 1)
        rows.append([str(processes), "4", str(count), f"{rate:.1f}", f"{p50 * 1000:.0f}", f"{runner_ms:.1f}",
                     f"{used['demo'] * 1000 / (count + 1):.1f}", f"{used['nats'] * 1000 / (count + 1):.1f}",
                     f"{used['client'] * 1000 / (count + 1):.1f}"])  # fmt: skip
    print("tasks/s: tasks submitted at once, one model call each (unpaced demo model), default concurrency;")
    print("CPU ms per task by process (all share this machine's CPUs)")
    header = ["runner processes", "slots each", "tasks", "tasks/s", "p50 latency ms", "runner CPU ms", "demo CPU ms",
              "NATS CPU ms", "client CPU ms"]  # fmt: skip
    print(table(rows, header) + "\n")


def _coalescing(nats_url: str, env: dict[str, str], logs: Path, tasks: int) -> None:
    rows = []
    for window in WINDOWS_MS:
        with runners(1, {**env, "SLUICE_DELTA_WINDOW_MS": f"{window:g}"}, logs):
            row = [f"{window:g}"]
            for slow_ms, _ in PACES_MS:
                per_k, _tokens = asyncio.run(delta_rate(nats_url, tasks, slow_ms))
                row.append(f"{per_k:.0f}")
            rows.append(row)
    print(f"llm.delta messages per 1,000 output tokens ({tasks} concurrent answers per cell)")
    print(table(rows, ["window ms", *[label for _, label in PACES_MS]]))


if __name__ == "__main__":
    main(sys.argv[1:])
