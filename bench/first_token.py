"""First-token latency of create-and-stream: what Sluice adds between the model's first token and the client.

Real processes: nats-server, `sluice demo-llm`, `sluice agent-runner`, `sluice edge`. Each run is one
`POST /v1/tasks` with `Accept: text/event-stream` (create-and-stream) read until the first `llm.delta`, against
the openai SDK reading the demo model directly (time to its first content chunk), alternating, same prompt.

    TTFT           request start → first text at the client (median of `--runs`)
    added          Sluice's TTFT − the SDK's (the task's creation, the runner picking it up, NATS, the edge)
    delta transit  the first `llm.delta`'s `ts` (stamped by the runner as it publishes) → its arrival at the client:
                   the event path alone (NATS → edge → client), same host clock; this is what Sluice adds after
                   the model sent the token (the runner never holds the first text of a burst back)
    stages         when `task.submitted`, `task.started`, `llm.started` and the first `llm.delta` were stamped

`python -m bench first-token [-- --runs 20]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from bench.procs import free_port
from bench.runner_pipeline import PROMPT, base_env, direct_sdk, nats_server, percentile, service, table

__all__ = ["main"]


STAGES = ("task.submitted", "task.started", "llm.started", "llm.delta")


async def first_delta(client: httpx.AsyncClient, text: str) -> tuple[float, float, dict[str, float]]:
    """(request start → first llm.delta at the client, that delta's ts → its arrival, each stage's `ts` − request
    start), in seconds; the stages are the events before the first delta, stamped by their producers."""
    headers = {"Accept": "text/event-stream"}
    started, started_wall = time.perf_counter(), time.time()
    stages: dict[str, float] = {}
    async with client.stream("POST", "/v1/tasks", json={"input": text}, headers=headers) as response:
        buf = ""
        async for chunk in response.aiter_text():
            buf += chunk
            while "\n\n" in buf:
                frame, buf = buf.split("\n\n", 1)
                kind = next((k for k in STAGES if f"event: {k}\n" in frame), None)
                if kind is None:
                    continue
                arrived, wall = time.perf_counter(), time.time()
                data = json.loads(frame.split("data: ", 1)[1])
                stamped = datetime.fromisoformat(data["ts"].replace("Z", "+00:00")).timestamp()
                stages.setdefault(kind, stamped - started_wall)
                if kind == "llm.delta":
                    return arrived - started, wall - stamped, stages
    raise RuntimeError("the stream ended without an llm.delta")


async def through_edge(url: str, runs: int) -> tuple[float, float, dict[str, float]]:
    firsts, transits, stages = [], [], []
    # One client for every run, as the SDK side keeps one: building a client (its SSL context) is not Sluice's cost.
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        for i in range(runs):
            first, transit, stage = await first_delta(client, f"{PROMPT} ({i})")
            firsts.append(first)
            transits.append(transit)
            stages.append(stage)
    medians = {k: percentile([s[k] for s in stages if k in s], 0.5) for k in STAGES}
    return percentile(firsts, 0.5), percentile(transits, 0.5), medians


def measure(runs: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="sluice-bench-ttft-") as tmp, nats_server() as nats:
        logs = Path(tmp)
        demo_port, edge_port = free_port(), free_port()
        env = base_env(nats.url, demo_port, SLUICE_HTTP_PORT=str(edge_port))
        with (
            service("demo-llm", env, logs, "demo-llm", port=demo_port),
            service("agent-runner", env, logs, "runner"),
            service("edge", env, logs, "edge", port=edge_port),
        ):
            url = f"http://127.0.0.1:{edge_port}"
            asyncio.run(through_edge(url, 3))  # warm-up: connections, consumers, the model's first answer
            _, sdk_first, _ = asyncio.run(direct_sdk(f"http://127.0.0.1:{demo_port}/v1", runs, 0.0))
            sluice_first, transit, stages = asyncio.run(through_edge(url, runs))
    print("\nwhere the time goes: each event's producer stamp after the request started (medians)")
    print(table([[k, f"{v * 1000:.1f}"] for k, v in stages.items()], ["event", "stamped at ms"]))
    return [f"{runs}", f"{sdk_first * 1000:.1f}", f"{sluice_first * 1000:.1f}",
            f"{(sluice_first - sdk_first) * 1000:.1f}", f"{transit * 1000:.1f}"]  # fmt: skip


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench first-token")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    row = measure(5 if args.quick else args.runs)
    print("\n(first token) create-and-stream through the edge vs. the openai SDK on the demo model (medians)")
    print(table([row], ["runs", "SDK TTFT ms", "Sluice TTFT ms", "added ms", "delta transit ms"]))
