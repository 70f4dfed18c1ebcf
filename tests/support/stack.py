"""The whole of Sluice as real processes, for end-to-end tests: its own nats-server, the demo model, a
tool-runner, an agent-runner and stream-edge, each on a free port, each startable, stoppable, killable and
restartable on its own.

    with running_stack(tmp_path) as stack:
        httpx.post(f"{stack.edge_url}/v1/tasks", json={"input": "What is 17*23?"})
        stack.restart("edge")            # SIGKILL and start again, same port
        stack.kill("agent-runner")       # a crash; stack.start_service("agent-runner") brings it back

The stack owns its nats-server, so its runners never take work from other tests' runners on the shared session
server (durable consumers are shared by name). `stack` below is a session fixture for test modules to import
(`from support.stack import stack`); a test that kills a service must leave it running again.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.nats_server import NatsServer, free_port
from support.procs import ServiceProcess, base_env, sluice_provision

__all__ = ["SERVICES", "Stack", "running_stack", "stack"]

# In start order: what a service needs is already up when it starts.
SERVICES = ("demo-llm", "tool-runner", "agent-runner", "edge")


@dataclass
class Stack:
    """Sluice on one machine. `env` adds settings for every service, `service_env` for one (by name)."""

    root: Path
    env: Mapping[str, str] = field(default_factory=dict)
    service_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    edge_port: int = field(default_factory=free_port)
    demo_port: int = field(default_factory=free_port)
    nats: NatsServer | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    # ------------------------------------------------------------------ addresses

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.edge_port}"

    @property
    def demo_url(self) -> str:
        """The demo model's OpenAI base URL."""
        return f"http://127.0.0.1:{self.demo_port}/v1"

    @property
    def nats_url(self) -> str:
        assert self.nats is not None, "the stack is not started"
        return self.nats.url

    def task_record(self, task_id: str) -> dict[str, Any]:
        """`GET /v1/tasks/{id}` on the edge: the task's record."""
        response = httpx.get(f"{self.edge_url}/v1/tasks/{task_id}", timeout=10)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def task_log(self, task_id: str) -> list[dict[str, Any]]:
        """The task's events as the edge serves them now (`follow=false`, NDJSON), one dict each."""
        response = httpx.get(
            f"{self.edge_url}/v1/tasks/{task_id}/events", params={"follow": "false", "format": "ndjson"}, timeout=10
        )
        response.raise_for_status()
        return [json.loads(line) for line in response.text.splitlines()]

    def client_env(self, **overrides: str) -> dict[str, str]:
        """An environment for a client process (`sluice run`, a script) pointed at this stack's edge."""
        return base_env(**{"SLUICE_URL": self.edge_url, **overrides})

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Stack:
        """Starts NATS, provisions it (`sluice provision`), then every service (in parallel: each waits for its own
        ready signal)."""
        if self.nats is None:
            self.nats = NatsServer(store_dir=self.root / "nats").start()
        self.provision()
        for name in SERVICES:
            self.services.setdefault(name, self._process(name))
        with ThreadPoolExecutor(len(SERVICES)) as pool:
            for future in [pool.submit(self.start_service, name) for name in SERVICES]:
                future.result()
        return self

    def stop(self) -> None:
        """SIGTERM every running service (edge first), then NATS."""
        for name in reversed(SERVICES):
            proc = self.services.get(name)
            if proc is not None and proc.running:
                with contextlib.suppress(Exception):
                    proc.terminate(timeout_s=15)
                proc.kill()
        if self.nats is not None:
            self.nats.stop()
            self.nats = None

    def provision(self) -> str:
        """`sluice provision` with the stack's settings (and `service_env["provision"]`, e.g. the admin seed)."""
        env = {"SLUICE_NATS_URL": self.nats_url, **self.env, **self.service_env.get("provision", {})}
        return sluice_provision(base_env(**env))

    def start_service(self, name: str) -> ServiceProcess:
        proc = self.service(name)
        if not proc.running:
            ready_url = f"{self.edge_url}/readyz" if name == "edge" else None
            proc.start(ready_url=ready_url)
        return proc

    def stop_service(self, name: str) -> int:
        """SIGTERM (the graceful path); returns the exit code."""
        return self.service(name).terminate()

    def kill(self, name: str) -> None:
        """SIGKILL: a crash, no cleanup."""
        self.service(name).kill()

    def restart(self, name: str, *, kill: bool = True) -> ServiceProcess:
        """Kills (or, with `kill=False`, stops gracefully) and starts the service again on the same port."""
        if kill:
            self.kill(name)
        else:
            self.stop_service(name)
        return self.start_service(name)

    def service(self, name: str) -> ServiceProcess:
        if name not in self.services:
            if name not in SERVICES:
                raise KeyError(f"no service {name!r}; the stack runs {', '.join(SERVICES)}")
            self.services[name] = self._process(name)
        return self.services[name]

    def logs(self, name: str) -> str:
        return self.service(name).log_text()

    def _process(self, name: str) -> ServiceProcess:
        env = {
            "SLUICE_NATS_URL": self.nats_url,
            "SLUICE_DEMO_LLM_HOST": "127.0.0.1",
            "SLUICE_DEMO_LLM_PORT": str(self.demo_port),
            "OPENAI_BASE_URL": self.demo_url,
            "OPENAI_API_KEY": "demo",
            "SLUICE_HTTP_HOST": "127.0.0.1",
            "SLUICE_HTTP_PORT": str(self.edge_port),
            "SLUICE_RUNNER_METRICS_PORT": "0",
            "SLUICE_TOOL_METRICS_PORT": "0",
            **self.env,
            **self.service_env.get(name, {}),
        }
        return ServiceProcess(name, base_env(**env), self.root / "logs" / f"{name}.log")


@contextlib.contextmanager
def running_stack(root: Path | None = None, **options: object) -> Iterator[Stack]:
    """A started stack in `root` (a temporary directory by default), stopped at the end."""
    with contextlib.ExitStack() as cleanup:
        if root is None:
            root = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="sluice-stack-")))
        started = Stack(root=root, **options)  # type: ignore[arg-type]
        cleanup.callback(started.stop)
        yield started.start()


_shared: list[Stack] = []  # the session's stack (one per xdist worker)
_users = 0


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack per test session (per xdist worker), shared by every module that imports this fixture.

    Each importing module registers its own copy of a fixture, so the copies share one Stack and the last to
    finish stops it."""
    global _users
    if not _shared:
        started = Stack(root=tmp_path_factory.mktemp("stack"))
        try:
            started.start()
        except BaseException:
            started.stop()
            raise
        _shared.append(started)
    _users += 1
    try:
        yield _shared[0]
    finally:
        _users -= 1
        if _users == 0:
            _shared.pop().stop()
