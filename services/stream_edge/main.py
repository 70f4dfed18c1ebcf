"""`sluice edge`: stream-edge under uvicorn, configured by the environment (see `settings.py`).

SIGTERM / SIGINT → uvicorn stops accepting, the hub ends open streams within SLUICE_SHUTDOWN_GRACE_S, the
lifespan closes the NATS connection, the process exits 0.
"""

from __future__ import annotations

import logging
import resource
import signal
import sys
from types import FrameType

import uvicorn

from sluice.errors import InvalidInput
from sluice.logs import setup_logging
from sluice.telemetry import setup_telemetry
from stream_edge.app import create_app
from stream_edge.server import EdgeServer
from stream_edge.settings import EdgeSettings

__all__ = ["main"]

log = logging.getLogger(__name__)

SERVICE = "stream-edge"


def _already_handled(sig: int, frame: FrameType | None) -> None:
    """uvicorn re-raises the signal that stopped it once it has shut down gracefully; by then there is nothing
    left to do, and the exit should be a clean 0 rather than death by signal."""


def _raise_open_files_limit() -> None:
    """Every open stream is a socket: the soft descriptor limit (often 1,024) goes up to the hard one, which is
    what the operator allows (`ulimit -Hn`, a container's `nofile`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, hard, exc)


def main() -> None:
    try:
        settings = EdgeSettings.from_env()
    except InvalidInput as exc:
        sys.stderr.write(f"sluice edge: {exc.message}\n")
        sys.exit(2)
    setup_logging(SERVICE, settings.common.log_level, settings.common.log_format)
    _raise_open_files_limit()
    try:
        app = create_app(settings)  # reads the API keys file: one it cannot use stops the edge here
    except InvalidInput as exc:
        sys.stderr.write(f"sluice edge: {exc.message}\n")
        sys.exit(2)
    telemetry = setup_telemetry(SERVICE)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws="none",
        http="httptools",
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 2,
    )
    server = EdgeServer(config, app)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _already_handled)
    try:
        server.run()
    finally:
        telemetry.shutdown()
    if not server.started or app.state.startup_error is not None:
        sys.exit(1)
