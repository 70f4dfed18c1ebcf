"""Helpers for benchmark processes: nats-server, edges on free ports, CPU and RSS from /proc, percentiles."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Proc", "cpu_seconds", "free_port", "nats_server", "percentile", "rss_bytes", "start_edge", "table"]

_TICK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _nats_binary() -> str:
    found = shutil.which("nats-server") or str(Path(sys.executable).with_name("nats-server"))
    return found


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    url: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} not open after {timeout_s}s")


@contextlib.contextmanager
def nats_server(config: str | None = None) -> Iterator[Proc]:
    """A JetStream server on a free port; `config`: nats-server config text (e.g. a `jetstream { ... }` block)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-nats-") as store:
        args = [_nats_binary(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store]
        if config is not None:
            conf = Path(store) / "nats-server.conf"
            conf.write_text(config)
            args += ["-c", str(conf)]
        popen = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc = Proc(popen, f"nats://127.0.0.1:{port}")
        try:
            _wait_port(port, popen)
            yield proc
        finally:
            proc.stop()


@contextlib.contextmanager
def start_edge(kind: str, nats_url: str, *extra: str, env: dict[str, str] | None = None) -> Iterator[Proc]:
    """`kind`: "sluice" (bench/sluice_edge.py), "baseline" (bench/baseline_edge.py), "floor"
    (bench/floor_edge.py), each under uvicorn, or "edge" (bench/real_edge.py: the production app and server).
    `env`: settings for this edge on top of this process's environment."""
    port = free_port()
    module = {
        "sluice": "bench.sluice_edge",
        "baseline": "bench.baseline_edge",
        "floor": "bench.floor_edge",
        "edge": "bench.real_edge",
    }[kind]
    full = {**os.environ, **(env or {})}
    full["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    popen = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(port), "--nats", nats_url, *extra], env=full, cwd=ROOT
    )
    proc = Proc(popen, f"http://127.0.0.1:{port}")
    try:
        _wait_port(port, popen)
        yield proc
    finally:
        proc.stop()


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)
