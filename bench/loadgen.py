"""The load generator: a separate process of raw asyncio sockets, the same for both edges.

    python -m bench.loadgen fanout URL TASKS C [PATH]
                                                   C SSE clients per task (TASKS comma-separated) on PATH (default
                                                   `/t/{task}`), with the header `Authorization: $BENCH_AUTHORIZATION`
                                                   if that is set; prints READY when all are streaming; on
                                                   `STOP {"task": last_n, ...}` on stdin waits for the tails and
                                                   prints a JSON report
    python -m bench.loadgen idle URL N PREFIX [K]  N idle SSE clients of tasks PREFIX0..N-1 (or of K tasks,
                                                   round robin); READY, then STOP
    python -m bench.loadgen idle-file URL FILE         idle SSE clients of the paths in FILE (one per line); READY,
                                                   then STOP
    python -m bench.loadgen replay URL TASK AFTER  one client, follow=false: events, seconds, ids in order

Events carry `"text":"<n>:<publish time>"`: the client checks n (no gap, no duplicate) and measures latency from
the publish time (same host clock). Parsing is one regex pass per received chunk (HTTP chunk framing is skipped,
not decoded: the edges send whole events per chunk).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import sys
import time

from bench.sequence import Tally

_EVENT_RE = re.compile(rb'"text": ?"(\d+):([0-9.]+)')
_ID_RE = re.compile(rb"(?:^|\n)id: (\d+)\r?\n")


def _response_ended(buf: bytes) -> bool:
    """The last chunk of a chunked response has arrived (an event line is never just `0`)."""
    return buf == b"0\r\n\r\n" or buf.endswith(b"\n0\r\n\r\n")


def _last_boundary(buf: bytes) -> int:
    """The end of the last complete SSE event in `buf` (sse-starlette separates lines with \\r\\n), or -1."""
    lf, crlf = buf.rfind(b"\n\n"), buf.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else -1, crlf + 4 if crlf >= 0 else -1)


class Client(asyncio.Protocol, Tally):
    def __init__(self, host: str, path: str, measure: bool, authorization: str | None = None) -> None:
        auth = f"Authorization: {authorization}\r\n" if authorization else ""
        self.request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n{auth}\r\n".encode()
        self.measure = measure
        self.buf = b""
        self.started = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.head_done = False
        Tally.__init__(self)
        self.transport: asyncio.Transport | None = None
        self.ended = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buf + data
        if not self.head_done:
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if not sep:
                self.buf = buf
                return
            self.head_done = True
            if not self.started.done():
                self.started.set_result(head.split(b"\r\n", 1)[0])
            buf = rest
        if _response_ended(buf):
            self.ended = True
        cut = _last_boundary(buf)
        if cut < 0:
            self.buf = buf
            return
        block, self.buf = buf[:cut], buf[cut:]
        if not self.measure:
            return
        for match in _EVENT_RE.finditer(block):
            self.see(int(match.group(1)), now - float(match.group(2)))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.started.done():
            self.started.set_result(b"closed")
        if not self.closed.done():
            self.closed.set_result(None)


async def _connect(url: str, path: str, measure: bool, authorization: str | None = None) -> Client:
    host, port = url.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: Client(host, path, measure, authorization), host, int(port))
    return client


async def _stdin_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def fanout(url: str, tasks: list[str], per_task: int, path: str = "/t/{task}") -> None:
    clients: dict[str, list[Client]] = {t: [] for t in tasks}
    authorization = os.environ.get("BENCH_AUTHORIZATION")
    for task in tasks:
        for _ in range(per_task):
            clients[task].append(await _connect(url, path.format(task=task), True, authorization))
    await asyncio.gather(*(c.started for cs in clients.values() for c in cs))
    print("READY", flush=True)
    stop = json.loads((await _stdin_line()).split(" ", 1)[1])
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if all(c.expected > stop[t] for t, cs in clients.items() for c in cs):
            break
        await asyncio.sleep(0.02)
    all_clients = [c for cs in clients.values() for c in cs]
    latencies = [x for c in all_clients for x in c.latencies]
    latencies.sort()
    missing = sum(max(0, stop[t] + 1 - c.expected) for t, cs in clients.items() for c in cs)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")

    report = {
        "received": sum(c.received for c in all_clients),
        "gaps": sum(c.gaps for c in all_clients),
        "dups": sum(c.dups for c in all_clients),
        "missing": missing,
        "p50_ms": pct(0.50) * 1000,
        "p99_ms": pct(0.99) * 1000,
        "max_ms": (latencies[-1] * 1000) if latencies else float("nan"),
        "closed": sum(c.closed.done() for c in all_clients),
    }
    print("REPORT " + json.dumps(report), flush=True)
    for c in all_clients:
        if c.transport is not None:
            c.transport.close()


async def idle(url: str, count: int, prefix: str, tasks: int) -> None:
    await idle_paths(url, [f"/t/{prefix}{i % tasks:06d}" for i in range(count)])


async def idle_paths(url: str, paths: list[str]) -> None:
    clients = []
    for i, path in enumerate(paths):
        clients.append(await _connect(url, path, False))
        if i % 200 == 199:
            await asyncio.gather(*(c.started for c in clients))
    statuses = await asyncio.gather(*(c.started for c in clients))
    ok = sum(s.startswith(b"HTTP/1.1 200") for s in statuses)
    print(f"READY {ok}", flush=True)
    await _stdin_line()
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    print("REPORT {}", flush=True)


async def replay(url: str, task: str, after: int) -> None:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 22)
    started = time.perf_counter()
    writer.write(f"GET /t/{task}?after={after}&follow=false HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    first_at = None
    count = 0
    last_id = after
    ordered = True
    last_event_at = started
    tail = b""
    while True:
        data = await reader.read(1 << 20)
        if not data:
            break
        if first_at is None:
            first_at = time.perf_counter()
        block = tail + data
        finished = _response_ended(block)
        cut = _last_boundary(block)
        tail = block[cut:] if cut >= 0 else block
        for match in _ID_RE.finditer(block[:cut] if cut >= 0 else b""):
            seq = int(match.group(1))
            ordered = ordered and seq > last_id
            last_id = seq
            count += 1
            last_event_at = time.perf_counter()
        if finished:
            break
    elapsed = time.perf_counter() - started
    writer.close()
    report = {
        "events": count,
        "seconds": last_event_at - started,  # to the last event
        "end_s": elapsed,  # to the end of the response
        "ordered": ordered,
        "first_byte_s": (first_at or started) - started,
    }
    print("REPORT " + json.dumps(report), flush=True)


def main() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    mode, url, *rest = sys.argv[1:]
    if mode == "fanout":
        asyncio.run(fanout(url, rest[0].split(","), int(rest[1]), *rest[2:3]))
    elif mode == "idle":
        asyncio.run(idle(url, int(rest[0]), rest[1], int(rest[2]) if len(rest) > 2 else int(rest[0])))
    elif mode == "idle-file":
        with open(rest[0]) as f:
            asyncio.run(idle_paths(url, [line.strip() for line in f if line.strip()]))
    elif mode == "replay":
        asyncio.run(replay(url, rest[0], int(rest[1])))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
