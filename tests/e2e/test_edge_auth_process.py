"""`sluice edge` refuses to run open on an address others can reach, with a keys file it cannot read, or with JWT
signing keys from a source it cannot trust."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from support.nats_server import NatsServer, free_port
from support.procs import SLUICE, ServiceProcess, base_env
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(400)

UNKNOWN_TASK = "01JD3S5Q8V0C7W6X9Y2Z3A4B5C"


def run_edge(nats_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`sluice edge` that is expected to exit at once (killed after 120 s if it does not)."""
    full = base_env(SLUICE_NATS_URL=nats_url, SLUICE_HTTP_PORT=str(free_port()), **env)
    return subprocess.run([SLUICE, "edge"], env=full, capture_output=True, text=True, timeout=120, check=False)


def test_a_non_loopback_bind_without_authentication_refuses_to_start(nats_server: NatsServer) -> None:
    for host in ("0.0.0.0", "::"):
        done = run_edge(nats_server.url, SLUICE_HTTP_HOST=host)
        assert done.returncode == 2, done.stderr
        assert "refusing to serve" in done.stderr and "SLUICE_AUTH" in done.stderr
    explicit = run_edge(nats_server.url, SLUICE_HTTP_HOST="0.0.0.0", SLUICE_AUTH="none")
    assert explicit.returncode == 2 and "SLUICE_AUTH_ALLOW_NONE" in explicit.stderr


def test_an_open_public_edge_starts_only_when_that_is_said(nats_server: NatsServer, tmp_path: Path) -> None:
    port = free_port()
    env = base_env(
        SLUICE_NATS_URL=nats_server.url, SLUICE_HTTP_HOST="0.0.0.0", SLUICE_HTTP_PORT=str(port),
        SLUICE_AUTH_ALLOW_NONE="1",
    )  # fmt: skip
    process = ServiceProcess("edge", env, tmp_path / "edge.log").start(
        ready_url=f"http://127.0.0.1:{port}/readyz", timeout_s=120
    )
    try:
        assert process.running
    finally:
        assert process.terminate() == 0


def test_keys_mode_without_a_usable_keys_file_refuses_to_start(nats_server: NatsServer, tmp_path: Path) -> None:
    missing = run_edge(nats_server.url, SLUICE_AUTH="keys")
    assert missing.returncode == 2 and "SLUICE_API_KEYS_FILE" in missing.stderr
    bad = tmp_path / "keys"
    bad.write_text("alpha k1 sha256:nothex-secret-looking-line\n")
    broken = run_edge(nats_server.url, SLUICE_AUTH="keys", SLUICE_API_KEYS_FILE=str(bad))
    assert broken.returncode == 2
    assert "line 1" in broken.stderr and "nothex-secret" not in broken.stderr  # the line is named, not shown


def test_jwt_mode_refuses_to_start_with_jwks_over_plain_http_or_a_ca_it_cannot_read(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    jwt = {"SLUICE_AUTH": "jwt", "SLUICE_JWT_ISSUER": "https://login.example.test/", "SLUICE_JWT_AUDIENCE": "sluice"}
    plain = run_edge(nats_server.url, SLUICE_JWT_JWKS="http://login.example.test/jwks.json", **jwt)
    assert plain.returncode == 2 and "https" in plain.stderr, plain.stderr
    not_a_ca = tmp_path / "ca.pem"
    not_a_ca.write_text("not a certificate\n")
    bad_ca = run_edge(
        nats_server.url, SLUICE_JWT_JWKS="https://login.example.test/jwks.json", SLUICE_JWT_JWKS_CA=str(not_a_ca), **jwt
    )
    assert bad_ca.returncode == 2 and "SLUICE_JWT_JWKS_CA" in bad_ca.stderr, bad_ca.stderr


def started_edge(log_dir: Path, nats_url: str, **env: str) -> tuple[ServiceProcess, str]:
    """`sluice edge` on a free port, ready (a loaded machine may take long to import and connect)."""
    port = free_port()
    full = base_env(SLUICE_NATS_URL=nats_url, SLUICE_HTTP_HOST="127.0.0.1", SLUICE_HTTP_PORT=str(port), **env)
    process = ServiceProcess("edge", full, log_dir / f"edge-{port}.log")
    url = f"http://127.0.0.1:{port}"
    return process.start(ready_url=f"{url}/readyz", timeout_s=120), url


def keys_add(keys_file: Path, tenant: str) -> str:
    done = subprocess.run(
        [SLUICE, "keys", "add", "--tenant", tenant, "--file", str(keys_file)],
        env=base_env(), capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    key = done.stdout.strip()
    assert key.startswith("sluice_") and key not in keys_file.read_text()
    return key


def test_sluice_keys_add_then_rotation_and_revocation_on_a_running_edge_process(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys"
    first = keys_add(keys_file, "acme")
    assert keys_file.stat().st_mode & 0o777 == 0o600
    process, url = started_edge(tmp_path, nats_server.url, SLUICE_API_KEYS_FILE=str(keys_file))
    try:

        def status(key: str) -> int:
            """401 for a key the edge does not take; 404 (no such task) once past authentication."""
            headers = {"Authorization": f"Bearer {key}"}
            return httpx.get(f"{url}/v1/tasks/{UNKNOWN_TASK}", headers=headers, timeout=10).status_code

        assert status(first) == 404
        assert httpx.get(f"{url}/v1/tasks/{UNKNOWN_TASK}", timeout=10).status_code == 401
        # Rotation: a second key, taken up without a restart; then the first key's line goes (revocation).
        second = keys_add(keys_file, "acme")
        wait_until(lambda: status(second) == 404, timeout_s=60, what="the new key to be accepted")
        keys_file.write_text("".join(line + "\n" for line in keys_file.read_text().splitlines()[1:]))
        wait_until(lambda: status(first) == 401, timeout_s=60, what="the revoked key to be refused")
        assert status(second) == 404
        assert process.running
        assert first not in process.log_text() and second not in process.log_text()
    finally:
        assert process.terminate() == 0


def test_the_cli_sends_sluice_api_key_and_says_what_to_do_without_one(nats_server: NatsServer, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    key = keys_add(keys_file, "acme")
    process, url = started_edge(tmp_path, nats_server.url, SLUICE_API_KEYS_FILE=str(keys_file))
    try:
        task_id = UNKNOWN_TASK

        def status(**env: str) -> subprocess.CompletedProcess[str]:
            full = base_env(SLUICE_URL=url, **env)
            return subprocess.run(
                [SLUICE, "status", task_id, "--json"],
                env=full,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        without = status()
        assert without.returncode == 1 and "SLUICE_API_KEY" in without.stderr
        assert key not in without.stderr
        with_key = status(SLUICE_API_KEY=key)  # past authentication: the edge says it has no such task
        assert with_key.returncode == 1 and "no task" in with_key.stderr, with_key.stderr
        assert "SLUICE_API_KEY" not in with_key.stderr
    finally:
        assert process.terminate() == 0
