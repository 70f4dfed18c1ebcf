"""`sluice up` as a newcomer runs it: everything starts, a task streams, replay is exact, Ctrl-C leaves nothing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support.nats_server import free_port
from support.procs import base_env
from support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("sluice-up")]

SLUICE = str(Path(sys.executable).with_name("sluice"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (its parent has not reaped it yet).
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _sse_ids(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"^id: (\d+)$", text, flags=re.M)]


def _start_up(tmp_path: Path, **extra: str) -> tuple[subprocess.Popen[bytes], Path, str]:
    """`sluice up` on free ports with its own data dir; returns the process, its log and the edge's URL once the
    ready banner is printed."""
    http_port, demo_port = free_port(), free_port()
    env = base_env(
        SLUICE_HTTP_PORT=str(http_port),
        SLUICE_DEMO_LLM_PORT=str(demo_port),
        # Fast, but slow enough that the 25 ms coalescing window leaves several deltas, as with a real model.
        SLUICE_DEMO_LLM_TOKENS_PER_S="200",
        SLUICE_DATA_DIR=str(tmp_path / "data"),
        SLUICE_RUNNER_METRICS_PORT="0",
        SLUICE_TOOL_METRICS_PORT="0",
        **extra,
    )
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen([SLUICE, "up"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_until(lambda: "Sluice is up." in log_path.read_text(), timeout_s=60, what="the ready banner")
    except BaseException:
        _stop(up, log_path)
        raise
    return up, log_path, f"http://127.0.0.1:{http_port}"


def _stop(up: subprocess.Popen[bytes], log_path: Path) -> None:
    """Ctrl-C, and every child it started gone."""
    up.send_signal(signal.SIGINT)
    up.wait(timeout=30)
    pids = [int(p) for p in re.findall(r"started \(pid=(\d+)\)", log_path.read_text())]
    wait_until(lambda: not any(_alive(p) for p in pids), timeout_s=10, what="every child to exit")


def test_up_streams_a_task_replays_exactly_and_ctrl_c_leaves_no_process(tmp_path: Path) -> None:
    up, log_path, base = _start_up(tmp_path)
    try:
        # The banner says the edge asks for nothing, and how to make it ask for keys.
        banner = log_path.read_text()
        assert "auth         none" in banner
        assert f"sluice keys add --tenant T --file {tmp_path / 'data' / 'api-keys'}" in banner
        assert f"SLUICE_AUTH=keys SLUICE_API_KEYS_FILE={tmp_path / 'data' / 'api-keys'}" in banner
        # Exactly the README's curl: -d sends application/x-www-form-urlencoded, the body is JSON.
        created = httpx.post(
            f"{base}/v1/tasks",
            content=b'{"input":"hello"}',
            headers={"Accept": "text/event-stream", "Content-Type": "application/x-www-form-urlencoded"},
            timeout=30,
        )
        assert created.status_code == 201, created.text
        types = re.findall(r"^event: (\S+)$", created.text, flags=re.M)
        assert types[:3] == ["task.submitted", "task.started", "llm.started"]
        assert types.count("llm.delta") >= 3 and types[-2:] == ["llm.completed", "task.completed"]
        ids = _sse_ids(created.text)
        task_path = created.headers["location"]

        middle = ids[len(ids) // 2]
        rest = httpx.get(f"{base}{task_path}/events", headers={"Last-Event-ID": str(middle)}, timeout=30)
        assert _sse_ids(rest.text) == [i for i in ids if i > middle]
    finally:
        _stop(up, log_path)
    pids = re.findall(r"started \(pid=(\d+)\)", log_path.read_text())
    assert len(pids) == 5  # nats, demo-llm, edge, agent-runner, tool-runner


def test_up_with_the_keys_the_banner_suggests_asks_for_them(tmp_path: Path) -> None:
    keys_file = tmp_path / "data" / "api-keys"
    keys_file.parent.mkdir(parents=True)
    made = subprocess.run(
        [SLUICE, "keys", "add", "--tenant", "acme", "--file", str(keys_file)],
        env=base_env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    key = made.stdout.strip()
    up, log_path, base = _start_up(tmp_path, SLUICE_AUTH="keys", SLUICE_API_KEYS_FILE=str(keys_file))
    try:
        banner = log_path.read_text()
        assert "auth         on" in banner and "Authorization: Bearer <key>" in banner
        assert "auth         none" not in banner
        assert httpx.post(f"{base}/v1/tasks", json={"input": "hello"}, timeout=30).status_code == 401
        created = httpx.post(
            f"{base}/v1/tasks", json={"input": "hello"}, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert created.status_code == 201 and created.json()["tenant"] == "acme", created.text
    finally:
        _stop(up, log_path)
