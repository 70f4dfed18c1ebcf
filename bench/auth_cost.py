"""What authentication costs on the hot path: the production edge (`sluice edge`) with `SLUICE_AUTH=keys` against
the same edge with `none`, in the same run on the same nats-server, and a second `none` edge as the control (what
two identical processes differ by on this machine).

    create-and-stream   `POST /v1/tasks` (`Accept: text/event-stream`) until its first event, `task.submitted`:
                        p50 / p99 over `--requests` each, the edges' requests taking turns so that whatever
                        else the machine does hits all alike
    fan-out             10 tasks × 10 clients on `GET /v1/tasks/{id}/events` (the key as a bearer header on the
                        keys edge) at `--rate` published events/s, the edges taking turns over `--rounds`: delivered
                        events/s, p99, and the edge's CPU µs per delivered event (what bounds a CPU-bound edge)
    capacity            10⁶ / that µs per event: the deliveries per second one core of edge CPU carries
    front door          the edge's `EdgeGuard` alone, in this process: µs per request with and without a key

No agent-runner: the tasks stay `submitted`, so what is measured is the edge's own work (authentication, the
record, `task.submitted`, the stream). Ratios are against the first open edge; the key check is one SHA-256 and
a dict lookup.
`python -m bench auth [-- --requests 300]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench.edge_fanout import FanoutResult, StreamTarget, _bus, edge_us_per_event, fanout, fanout_row
from bench.procs import Proc, nats_server, percentile, start_edge, table
from sluice import subjects
from sluice.apikeys import add_key
from sluice.bus import Bus
from sluice.catalog import KnownAgent
from sluice.catalog.adverts import encode_advert

__all__ = ["main"]

T = TypeVar("T")

AGENT = "assistant"
MODES = ("none", "none²", "keys")
TENANT = "bench"
EVENTS_PATH = "/v1/tasks/{task}/events"


class Edge:
    """One edge process of the comparison, and how a client authenticates to it."""

    def __init__(self, mode: str, proc: Proc, key: str | None) -> None:
        self.mode, self.proc = mode, proc
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    async def new_tasks(self, count: int) -> list[str]:
        async with httpx.AsyncClient(base_url=self.proc.url, timeout=30, headers=self.headers) as client:
            answers = [await client.post("/v1/tasks", json={"input": "bench", "agent": AGENT}) for _ in range(count)]
        for answer in answers:
            answer.raise_for_status()
        return [answer.json()["id"] for answer in answers]

    def target(self) -> StreamTarget:
        return StreamTarget(EVENTS_PATH, self.headers.get("Authorization"), self.new_tasks)


async def create_and_stream(client: httpx.AsyncClient) -> float:
    """Seconds from the request to the `task.submitted` event of the task it creates."""
    started = time.perf_counter()
    body = {"input": "bench", "agent": AGENT}
    async with client.stream("POST", "/v1/tasks", json=body, headers={"Accept": "text/event-stream"}) as response:
        response.raise_for_status()
        async for chunk in response.aiter_bytes():
            if b"event: task.submitted" in chunk:
                return time.perf_counter() - started
    raise RuntimeError("the stream ended before task.submitted")


def rotated(items: list[T], i: int) -> list[T]:
    """`items` starting at the i-th: round by round, each edge goes first as often as the others."""
    k = i % len(items)
    return items[k:] + items[:k]


async def latencies(edges: list[Edge], requests: int) -> dict[str, list[float]]:
    clients = [httpx.AsyncClient(base_url=e.proc.url, timeout=30, headers=e.headers) for e in edges]
    out: dict[str, list[float]] = {e.mode: [] for e in edges}
    try:
        for client in clients:  # warm-up: imports, connections, the catalog read
            for _ in range(10):
                await create_and_stream(client)
        pairs = list(zip(edges, clients, strict=True))
        for i in range(requests):
            for edge, client in rotated(pairs, i):
                out[edge.mode].append(await create_and_stream(client))
    finally:
        for client in clients:
            await client.aclose()
    return out


async def guard_cost(keys_file: Path, key: str, requests: int = 20_000) -> dict[str, float]:
    """µs per request of the edge's front door alone (`EdgeGuard`: Host check, credentials), in this process, on a
    create request's scope: the auth cost without the noise of whole requests on a shared machine."""
    from stream_edge.auth import Authenticator, AuthSettings
    from stream_edge.auth.guard import EdgeGuard

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    settings = {"none": AuthSettings(), "keys": AuthSettings(methods=frozenset({"keys"}), keys_file=keys_file)}
    head = [(b"host", b"127.0.0.1:8080"), (b"accept", b"text/event-stream"), (b"content-type", b"application/json")]
    best: dict[str, float] = {"none": float("inf"), "keys": float("inf")}
    for mode in ("none", "keys") * 5:  # taking turns; the fastest of each counts (the least disturbed)
        auth = Authenticator(settings[mode])
        guard = EdgeGuard(app, auth=auth, cors_origins=(), allowed_hosts=(), bind_host="127.0.0.1")
        headers = [*head, (b"authorization", f"Bearer {key}".encode())] if mode == "keys" else head
        scope = {"type": "http", "method": "POST", "path": "/v1/tasks", "headers": headers, "query_string": b""}
        started = time.perf_counter()
        for _ in range(requests):
            await guard(dict(scope), None, None)  # type: ignore[arg-type]
        best[mode] = min(best[mode], (time.perf_counter() - started) / requests * 1e6)
    return best


async def wait_ready(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} did not become ready")


async def make_agent_known(bus: Bus) -> None:
    """As an agent-runner does at start: without it, creating a task is `422 unknown_agent`."""
    kv = await bus.js.key_value(subjects.CATALOG_BUCKET)
    with contextlib.suppress(Exception):  # already known from an earlier run on this server
        await kv.create(subjects.catalog_known_key(AGENT), encode_advert(KnownAgent(name=AGENT)))


@contextlib.contextmanager
def three_edges(nats_url: str, keys_file: Path) -> Iterator[tuple[Proc, Proc, Proc]]:
    """Two open edges (the second one the control: what two identical processes differ by) and one with keys."""
    # No reconciler: one edge would hold its lease and sweep every record every few seconds (thousands of tasks
    # left `submitted` here, with no runner), which is CPU only that edge spends. No per-tenant limits: the tasks
    # never finish and are made faster than a tenant may make them (the limits are not what is measured).
    quiet = {
        "SLUICE_LOG_LEVEL": "warning",
        "SLUICE_RECONCILE_INTERVAL_S": "0",
        "SLUICE_TENANT_MAX_ACTIVE": "0",
        "SLUICE_TENANT_RATE": "0",
    }
    keyed = {**quiet, "SLUICE_AUTH": "keys", "SLUICE_API_KEYS_FILE": str(keys_file)}
    with (
        start_edge("edge", nats_url, env={**quiet, "SLUICE_AUTH": "none"}) as open_edge,
        start_edge("edge", nats_url, env=keyed) as keyed_edge,
        start_edge("edge", nats_url, env={**quiet, "SLUICE_AUTH": "none"}) as control,
    ):
        yield open_edge, control, keyed_edge


def ratio(keys: float, none: float) -> str:
    return f"{keys / none:.3f}" if none else "n/a"


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="sluice-bench-auth-") as tmp, nats_server() as nats:
        keys_file = Path(tmp) / "api-keys"
        key, _ = add_key(keys_file, TENANT)
        front_door = await guard_cost(keys_file, key)
        bus = await _bus(nats.url)
        try:
            await make_agent_known(bus)
            with three_edges(nats.url, keys_file) as (open_proc, control_proc, keyed_proc):
                edges = [
                    Edge("none", open_proc, None),
                    Edge("none²", control_proc, None),
                    Edge("keys", keyed_proc, key),
                ]
                for edge in edges:
                    await wait_ready(edge.proc.url)
                print(f"  create-and-stream: {args.requests} requests per edge, alternating", flush=True)
                measured = await latencies(edges, args.requests)
                print(f"  fan-out 10×10 at {args.rate:.0f} ev/s, {args.rounds} rounds, alternating", flush=True)
                steady: dict[str, list[FanoutResult]] = {e.mode: [] for e in edges}
                for i in range(args.rounds):
                    for edge in rotated(edges, i):
                        result = await fanout(bus, edge.proc, nats, 10, 10, args.rate, args.step, edge.target())
                        steady[edge.mode].append(result)
                        print(f"  {edge.mode:5} | " + " | ".join(fanout_row("", "10×10", result)[2:]), flush=True)
        finally:
            await bus.close()
    figures: dict[str, dict[str, float]] = {}
    rows = []
    for mode in MODES:
        values, runs = measured[mode], steady[mode]
        figures[mode] = {
            "p50": percentile(values, 0.5) * 1000,
            "p99": percentile(values, 0.99) * 1000,
            "delivered": statistics.median(r.delivered_per_s for r in runs),
            "us": statistics.median(edge_us_per_event(r) for r in runs),
            "fan_p99": statistics.median(r.p99_ms for r in runs),
        }
        # Deliveries one core of edge CPU carries at that cost: the fan-out capacity of a CPU-bound edge.
        figures[mode]["capacity"] = 1e6 / figures[mode]["us"] if figures[mode]["us"] else float("nan")
        f = figures[mode]
        rows.append([
            mode, f"{f['p50']:.2f}", f"{f['p99']:.2f}", f"{f['delivered']:.0f}", f"{f['fan_p99']:.1f}",
            f"{f['us']:.1f}", f"{f['capacity']:.0f}",
        ])  # fmt: skip
    print("\n(auth) the production edge, SLUICE_AUTH=keys vs none, same run")
    header = [
        "SLUICE_AUTH", "create→first event p50 ms", "p99 ms", "fan-out delivered ev/s", "fan-out p99 ms",
        "edge µs/event", "capacity ev/s per core",
    ]  # fmt: skip
    print(table(rows, header))
    n = figures["none"]
    for mode in ("keys", "none²"):
        k = figures[mode]
        print(f"  {mode} / none: create-and-stream p50 {ratio(k['p50'], n['p50'])}, p99 {ratio(k['p99'], n['p99'])}; "
              f"fan-out delivered {ratio(k['delivered'], n['delivered'])}, edge µs/event {ratio(k['us'], n['us'])}, "
              f"capacity {ratio(k['capacity'], n['capacity'])}")  # fmt: skip
    print("  (none² is a second, identical open edge: its ratios are how far two processes differ by chance here)")
    print(f"  the front door alone (EdgeGuard, in-process, per request): none {front_door['none']:.2f} µs, "
          f"keys {front_door['keys']:.2f} µs (fastest of 5 each); keys − none = "
          f"{front_door['keys'] - front_door['none']:.2f} µs, against a create-and-stream p50 of "
          f"{n['p50'] * 1000:.0f} µs")  # fmt: skip
    print("  (fan-out figures: medians of the alternating rounds; capacity = 10⁶ / edge µs per delivered event, the")
    print("   deliveries one core of edge CPU carries. A p99-bounded rate search, as in `bench edge`, moves in whole")
    print("   steps and on a shared machine follows the neighbours' load more than the edge's)")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench auth", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="create-and-stream requests per edge")
    parser.add_argument("--rate", type=float, default=1000.0, help="published events/s of the alternating rounds")
    parser.add_argument(
        "--rounds", type=int, default=3, help="fan-out rounds (in each, every edge once, in turn first)"
    )
    parser.add_argument("--step", type=float, default=1.5, help="seconds per fan-out round")
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rounds = 50, 1
    asyncio.run(run(args))
