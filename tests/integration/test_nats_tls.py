"""TLS between Sluice and NATS with the compose stack's own local CA (deploy/make-secrets.sh): a service that trusts
the CA connects as its identity over TLS; one that does not trust it, or speaks plain text, is refused in bounded
time with one error."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sluice import subjects
from sluice.admin import provision_as_admin
from sluice.bus import connect
from sluice.config import CommonConfig
from sluice.errors import Unavailable
from sluice.ids import new_task_id
from support.nats_server import NatsServer, nats_server_binary

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compose-secrets")
    sluice = str(Path(sys.executable).with_name("sluice"))
    subprocess.run(
        ["bash", str(ROOT / "deploy" / "make-secrets.sh"), str(out)],
        check=True, capture_output=True, timeout=60, env={"PATH": "/usr/bin:/bin", "SLUICE": sluice},
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def tls_server(secrets: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    root = tmp_path_factory.mktemp("tls-nats")
    (root / "auth.conf").write_text((secrets / "nats" / "auth.conf").read_text())
    conf = root / "nats-server.conf"
    conf.write_text(
        'include "auth.conf"\n'
        f'tls {{\n  cert_file: "{secrets}/tls/nats.pem"\n  key_file: "{secrets}/tls/nats-key.pem"\n  timeout: 2\n}}\n'
    )
    server = NatsServer(store_dir=root / "store", config_file=conf).start()
    try:
        yield server
    finally:
        server.stop()


def _config(server: NatsServer, secrets: Path, identity: str, **tls: str) -> CommonConfig:
    return CommonConfig(
        nats_urls=(f"tls://127.0.0.1:{server.port}",),
        nats_nkey_file=str(secrets / "nats" / f"{identity}.nk"),
        **tls,  # type: ignore[arg-type]
    )


async def test_a_service_that_trusts_the_local_ca_connects_over_tls_as_itself(
    tls_server: NatsServer, secrets: Path
) -> None:
    ca = str(secrets / "tls" / "ca.pem")
    await provision_as_admin(_config(tls_server, secrets, "admin", nats_tls_ca=ca))
    edge = await connect(_config(tls_server, secrets, "edge", nats_tls_ca=ca), name="sluice-edge", identity="edge")
    try:
        task_id = new_task_id()
        assert await edge.publish(subjects.event(task_id, "task.submitted"), b"{}", msg_id=f"{task_id}:s") > 0
        assert edge.nc.connected_url is not None and edge.nc.connected_url.scheme == "tls"
    finally:
        await edge.close()


async def test_a_client_that_does_not_trust_the_ca_is_refused_in_one_error(
    tls_server: NatsServer, secrets: Path
) -> None:
    with pytest.raises(Unavailable):
        await asyncio.wait_for(connect(_config(tls_server, secrets, "edge"), name="e", identity="edge", wait_s=3), 30)


async def test_plain_text_is_refused(tls_server: NatsServer, secrets: Path) -> None:
    plain = replace(_config(tls_server, secrets, "edge"), nats_urls=(tls_server.url,))
    with pytest.raises(Unavailable):
        await asyncio.wait_for(connect(plain, name="e", identity="edge", wait_s=3), 30)


@pytest.mark.parametrize("node", [1, 2, 3])
def test_the_compose_node_configs_are_valid_nats_server_configs(secrets: Path, tmp_path: Path, node: int) -> None:
    """deploy/nats/n*.conf as the containers see them (the secrets where compose mounts them): nats-server accepts
    them, include, TLS block, sync_interval and all."""
    text = (ROOT / "deploy" / "nats" / f"n{node}.conf").read_text()
    text = text.replace("/run/secrets/nats-cert", str(secrets / "tls" / "nats.pem"))
    text = text.replace("/run/secrets/nats-key", str(secrets / "tls" / "nats-key.pem"))
    text = text.replace("store_dir: /data", f"store_dir: {tmp_path / 'data'}")
    (tmp_path / "auth.conf").write_text((secrets / "nats" / "auth.conf").read_text())
    (tmp_path / "nats.conf").write_text(text)
    checked = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(tmp_path / "nats.conf")], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
