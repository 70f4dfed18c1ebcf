"""`sluice provision` as a function: connect as the `admin` identity, create or reconcile everything, disconnect.

The CLI, `sluice up` and the test fixtures all provision through `provision_as_admin`, so a deployment, a local run
and a test set up JetStream the same way.
"""

from __future__ import annotations

import logging

from sluice.bus import connect
from sluice.config import CommonConfig
from sluice.provision import Allow, provision

__all__ = ["provision_as_admin"]

log = logging.getLogger(__name__)


async def provision_as_admin(config: CommonConfig, *, allow: Allow | None = None, wait_s: float = 30.0) -> None:
    bus = await connect(config, name="sluice-provision", identity="admin", wait_s=wait_s)
    try:
        await provision(bus.js, config, wait_s=wait_s, allow=allow)
    finally:
        await bus.close()
    log.info("provisioned", extra={"replicas": config.replicas, "events_max_age_s": config.events_max_age_s})
