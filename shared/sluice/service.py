"""The lifecycle every Sluice service shares: configure, connect, check provisioning, run until a signal, drain.

A service supplies an async `run(bus, stopping)` that returns when `stopping` is set; this module owns logging
and telemetry setup, the NATS connection as the service's own identity, the wait until what it needs is
provisioned (it never provisions: that is `sluice provision`), signal handling and the flush at exit.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sluice.bus import Bus, connect
from sluice.config import CommonConfig
from sluice.errors import SluiceError
from sluice.logs import setup_logging
from sluice.permissions import IDENTITIES, Needs, needs_of
from sluice.provisioned import wait_provisioned
from sluice.telemetry import setup_telemetry

__all__ = ["run_service", "serve_until_signal"]

log = logging.getLogger(__name__)

ServiceMain = Callable[[Bus, asyncio.Event], Awaitable[None]]
R = TypeVar("R")


def install_signal_handlers(stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)


async def unless_stopped(waiting: Awaitable[R], stopping: asyncio.Event) -> tuple[bool, R | None]:
    """Waits for `waiting` (NATS, provisioning), but a signal during the wait ends it — (False, None) — instead of
    being ignored. An error of `waiting` (NATS unreachable for good) is raised as itself, not in a group."""

    async def wait() -> R:
        return await waiting

    try:
        async with asyncio.TaskGroup() as group:
            work = group.create_task(wait())
            stop = group.create_task(stopping.wait())
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                work.cancel()
                return False, None
            stop.cancel()
    except BaseExceptionGroup as group_error:
        if len(group_error.exceptions) == 1:
            raise group_error.exceptions[0] from None
        raise
    return True, work.result()


async def serve_until_signal(name: str, common: CommonConfig, main: ServiceMain) -> None:
    stopping = asyncio.Event()
    install_signal_handlers(stopping)
    _, bus = await unless_stopped(connect(common, name=f"sluice-{name}", identity=name), stopping)
    if bus is None:
        log.info("%s stopped before NATS was reachable", name)
        return
    try:
        needs = needs_of(name) if name in IDENTITIES else Needs()  # a process that is no Sluice identity checks nothing
        provisioned, _ = await unless_stopped(wait_provisioned(bus.js, common, needs, service=name), stopping)
        if not provisioned:
            log.info("%s stopped before what it needs was provisioned", name)
            return
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
    except SluiceError as exc:  # NATS unreachable or refusing this identity, a bad seed, ...: one line, exit 1
        log.error("%s stopped: %s", name, exc.message, extra={"code": exc.code})
        raise SystemExit(1) from None
    finally:
        telemetry.shutdown()
