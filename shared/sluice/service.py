"""The lifecycle every Sluice service shares: configure, connect, provision, run until a signal, drain.

A service supplies an async `run(bus, stopping)` that returns when `stopping` is set; this module owns logging
and telemetry setup, the NATS connection, provisioning, signal handling and the flush at exit.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from sluice.bus import Bus, connect
from sluice.config import CommonConfig
from sluice.errors import SluiceError
from sluice.logs import setup_logging
from sluice.provision import provision
from sluice.telemetry import setup_telemetry

__all__ = ["run_service", "serve_until_signal"]

log = logging.getLogger(__name__)

ServiceMain = Callable[[Bus, asyncio.Event], Awaitable[None]]


def install_signal_handlers(stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)


async def _connect_unless_stopped(name: str, common: CommonConfig, stopping: asyncio.Event) -> Bus | None:
    """Waits for NATS, but a signal during the wait ends it (returns None) instead of being ignored.

    NATS still unreachable when `connect` gives up: its `Unavailable` is raised as itself, not in a group."""
    try:
        async with asyncio.TaskGroup() as group:
            connecting = group.create_task(connect(common, name=f"sluice-{name}", identity=name))
            stop = group.create_task(stopping.wait())
            await asyncio.wait({connecting, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not connecting.done():
                connecting.cancel()
                return None
            stop.cancel()
    except BaseExceptionGroup as group_error:
        if len(group_error.exceptions) == 1:
            raise group_error.exceptions[0] from None
        raise
    return connecting.result()


async def serve_until_signal(name: str, common: CommonConfig, main: ServiceMain) -> None:
    stopping = asyncio.Event()
    install_signal_handlers(stopping)
    bus = await _connect_unless_stopped(name, common, stopping)
    if bus is None:
        log.info("%s stopped before NATS was reachable", name)
        return
    try:
        await provision(bus.js, common)
        log.info("%s started", name, extra={"config": common.describe()})
        await main(bus, stopping)
    finally:
        await bus.close()
        log.info("%s stopped", name)


def run_service(name: str, common: CommonConfig, main: ServiceMain) -> None:
    """Blocking entry point for `sluice <service>`."""
    setup_logging(name, common.log_level, common.log_format)
    telemetry = setup_telemetry(name)
    try:
        asyncio.run(serve_until_signal(name, common, main))
    except SluiceError as exc:  # NATS unreachable, streams that cannot be provisioned, ...: one line, exit 1
        log.error("%s stopped: %s", name, exc.message, extra={"code": exc.code})
        raise SystemExit(1) from None
    finally:
        telemetry.shutdown()
