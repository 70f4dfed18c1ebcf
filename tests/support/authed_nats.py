"""A real nats-server that enforces `sluice nats-auth`'s authorization, and a connection as each identity.

    with running_authed_server(tmp_path) as authed:
        bus = await connect(authed.config("tool-runner"), name="t", identity="tool-runner")

The server includes the generated `auth.conf` (nothing else is allowed in: no anonymous user), and is provisioned
once by the `admin` identity through `sluice provision`'s own code path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from sluice.bus import Bus
from sluice.config import CommonConfig
from sluice.nats_auth import AuthFiles, write_auth
from support.nats_server import NatsServer

__all__ = ["AuthedNats", "refused", "running_authed_server"]


@dataclass
class AuthedNats:
    server: NatsServer
    auth: AuthFiles
    base: CommonConfig

    def config(self, identity: str) -> CommonConfig:
        """The CommonConfig of a process that is `identity` (its seed file, this server)."""
        return replace(self.base, nats_nkey_file=str(self.auth.seeds[identity]))

    def env(self, identity: str) -> dict[str, str]:
        """The environment of a `sluice <service>` process that is `identity`."""
        return {"SLUICE_NATS_URL": self.server.url, "SLUICE_NATS_NKEY_FILE": str(self.auth.seeds[identity])}


def server_config(auth: AuthFiles, directory: Path) -> Path:
    path = directory / "nats-server.conf"
    # nats-server resolves an include relative to the including file.
    path.write_text(f'include "{os.path.relpath(auth.auth_conf, directory)}"\n')
    return path


@contextlib.contextmanager
def running_authed_server(root: Path, **common: object) -> Iterator[AuthedNats]:
    auth = write_auth(root / "nats-auth")
    server = NatsServer(store_dir=root / "nats", config_file=server_config(auth, root)).start()
    try:
        yield AuthedNats(server=server, auth=auth, base=CommonConfig(nats_urls=(server.url,), **common))  # type: ignore[arg-type]
    finally:
        server.stop()


async def refused(bus: Bus, subject: str, what: str = "publish", *, within_s: float = 5.0) -> bool:
    """Whether the server refused `bus`'s identity `what` ("publish" / "subscription") on `subject`: waits for the
    -ERR (sent before the answer to our next ping, though nats-py may hand it to the callback a moment later)."""
    changed = asyncio.Event()
    bus.state.listeners.append(lambda event: changed.set() if event == "refused" else None)
    await bus.nc.flush(timeout=5)
    try:
        async with asyncio.timeout(within_s):
            while bus.state.refused.get(subject.lower()) != what:
                changed.clear()
                await changed.wait()
    except TimeoutError:
        return False
    return True
