"""`sluice provision` as a function: connect as the `admin` identity, create or reconcile everything, disconnect.

The CLI, `sluice up` and the test fixtures all provision through `provision_as_admin`, so a deployment, a local run
and a test set up JetStream the same way.
"""

from __future__ import annotations

import asyncio
import logging

from sluice.bus import connect
from sluice.config import CommonConfig
from sluice.errors import Unavailable
from sluice.provision import Allow, provision

__all__ = ["provision_as_admin"]

log = logging.getLogger(__name__)


async def provision_as_admin(config: CommonConfig, *, allow: Allow | None = None, wait_s: float = 30.0) -> None:
    """Within `wait_s` for NATS to answer (nats-py itself would retry an unreachable server forever), then as long
    as provisioning takes (which waits up to `wait_s` more for JetStream)."""
    try:
        async with asyncio.timeout(wait_s):
            bus = await connect(config, name="sluice-provision", identity="admin", wait_s=wait_s)
    except TimeoutError:
        urls = ", ".join(config.nats_urls)
        raise Unavailable("nats_unavailable", f"cannot reach NATS at {urls} within {wait_s:.0f}s") from None
    try:
        await provision(bus.js, config, wait_s=wait_s, allow=allow)
    finally:
        await bus.close()
    log.info("provisioned", extra={"replicas": config.replicas, "events_max_age_s": config.events_max_age_s})
