"""Sluice services as real subprocesses (`sluice <service>`), for tests that kill, restart and trace them.

Every service logs one JSON line per record to stderr and a record with `"msg": "ready"` once it serves; a test
waits for that line (or for an HTTP probe) instead of sleeping.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

__all__ = ["SLUICE", "START_DEADLINE_S", "ServiceProcess", "base_env", "sluice_provision"]

SLUICE = str(Path(sys.executable).with_name("sluice"))
# How long a service may take to say it is ready: a deadline against a hang, not a latency goal — on a loaded
# two-core machine importing a service alone has taken over a minute.
START_DEADLINE_S = 90.0


def base_env(**overrides: str) -> dict[str, str]:
    """The test process's environment without Sluice/OTel/OpenAI settings (the tenant limits off), plus
    `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "OTEL_", "OPENAI_"))}
    env.update({"SLUICE_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"})
    # One NATS server serves many tests of a session, and the tasks they leave unfinished would count against the
    # next test's tenant: the per-tenant limits are off unless a test turns them on.
    env.update({"SLUICE_TENANT_MAX_ACTIVE": "0", "SLUICE_TENANT_RATE": "0", "SLUICE_TENANT_MAX_STREAMS": "0"})
    env.update(overrides)
    return env


def sluice_provision(env: dict[str, str], *, wait_s: float = 60.0) -> str:
    """Runs `sluice provision` — the one way streams, consumers and buckets are made, in tests as in production —
    and returns its output; a refusal fails the caller with that output."""
    done = subprocess.run(
        [SLUICE, "provision", "--wait", str(wait_s)], env=env, capture_output=True, text=True, timeout=wait_s + 30
    )
    if done.returncode != 0:
        raise RuntimeError(f"sluice provision exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


@dataclass
class ServiceProcess:
    command: str
    env: dict[str, str]
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def start(
        self, *, ready_url: str | None = None, ready_log: str = '"msg":"ready"', timeout_s: float = START_DEADLINE_S
    ) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [SLUICE, self.command, *self.extra_args], env=self.env, stdout=log_file, stderr=subprocess.STDOUT
        )
        log_file.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sluice {self.command} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if ready_url is not None:
                try:
                    if httpx.get(ready_url, timeout=1.0).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            elif ready_log in self.log_text(offset):
                return self
            time.sleep(0.05)
        raise TimeoutError(f"sluice {self.command} not ready after {timeout_s}s:\n{self.log_tail()}")

    def log_text(self, offset: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def log_records(self, offset: int = 0) -> list[dict[str, Any]]:
        """The JSON log records (SLUICE_LOG_FORMAT=json) from `offset`; other lines are skipped."""
        records = []
        for line in self.log_text(offset).splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue  # a line cut short by a kill
        return records

    def log_seconds(self, first_msg: str, last_msg: str) -> float:
        """Seconds between the first record saying `first_msg` and the last saying `last_msg`, on the process's
        own timestamps: how long the service took, untouched by the test process's scheduling."""
        records = self.log_records()
        start = next(r["ts"] for r in records if r.get("msg") == first_msg)
        end = [r["ts"] for r in records if r.get("msg") == last_msg][-1]
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def terminate(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and wait: the graceful path. Returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return int(self.proc.returncode)
