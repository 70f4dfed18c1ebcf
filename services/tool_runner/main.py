"""`sluice tool-runner`: read the settings, advertise the tools, serve tool calls until SIGTERM/SIGINT, drain, exit 0.

The advertisement runs beside the worker and is removed when the worker has drained (a clean stop leaves the
catalog at once; a crash leaves it when the advertisement's TTL ends)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from functools import partial

from sluice import subjects
from sluice.bus import Bus
from sluice.catalog import Advertiser, CatalogView
from sluice.clock import now_iso
from sluice.config import CommonConfig
from sluice.errors import InvalidInput
from sluice.handbacks import HandBacks
from sluice.records import TaskStore, open_bucket
from sluice.service import run_service

from .advert import runner_advert
from .handler import ToolCallHandler
from .mcp import McpServerConfig, load_mcp_servers
from .metrics import ToolMetrics
from .settings import ToolRunnerSettings
from .toolbox import Toolbox
from .tools import REGISTRY
from .worker import ToolWorker

__all__ = ["main", "serve"]

log = logging.getLogger(__name__)
_ADVERTISE_WAIT_S = 5.0


async def serve(
    bus: Bus,
    stopping: asyncio.Event,
    *,
    settings: ToolRunnerSettings,
    common: CommonConfig,
    servers: Sequence[McpServerConfig] = (),
) -> None:
    """The service body `run_service` calls with a connected, provisioned bus."""
    metrics = ToolMetrics()
    metrics.watch_connection(bus.state)
    stop_metrics = metrics.serve(settings.metrics_host, settings.metrics_port) if settings.metrics_port else None
    started_at = now_iso()
    toolbox = Toolbox(REGISTRY, servers, max_output_bytes=settings.max_output_bytes)
    advertiser = Advertiser(
        bus, runner_advert(settings.runner_id, toolbox.adverts(), ttl_s=common.catalog_ttl_s, started_at=started_at)
    )
    toolbox.on_change = lambda: advertiser.replace(
        runner_advert(settings.runner_id, toolbox.adverts(), ttl_s=common.catalog_ttl_s, started_at=started_at)
    )
    # The catalog, watched: a call for a tool only another tool-runner serves is passed on to it.
    view = CatalogView(bus)
    own_key = subjects.catalog_runner_key("tool-runner", settings.runner_id)
    try:
        await view.start()
        store = TaskStore(await open_bucket(bus.js, subjects.TASKS_BUCKET))
        handbacks = HandBacks(await open_bucket(bus.js, subjects.HANDBACKS_BUCKET))
        handler = ToolCallHandler(
            bus,
            store,
            metrics,
            max_deliver=common.max_deliver,
            max_output_bytes=settings.max_output_bytes,
            handbacks=handbacks,
            lookup=toolbox.get,
            served_elsewhere=lambda name: view.serves_elsewhere(name, own_key),
        )
        worker = ToolWorker(bus, handler, metrics, settings)

        def ready() -> None:
            log.info(
                "ready",
                extra={
                    "concurrency": settings.concurrency,
                    "metrics": f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
                    if settings.metrics_port
                    else None,
                    "grace_s": settings.grace_s,
                    "mcp_servers": [server.name for server in servers],
                },
            )

        advertising = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(advertiser.run(advertising))
            group.create_task(toolbox.run(advertising))
            # Ready means advertised: an agent-runner asked to use these tools a moment later finds them.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(advertiser.written.wait(), _ADVERTISE_WAIT_S)
            try:
                await worker.run(stopping, on_ready=ready)
            finally:
                advertising.set()
    finally:
        await view.stop()
        if stop_metrics is not None:
            stop_metrics()


def main() -> None:
    try:
        common = CommonConfig.from_env()
        settings = ToolRunnerSettings.from_env()
        servers = load_mcp_servers(settings.mcp_servers_file)
    except InvalidInput as exc:
        raise SystemExit(f"tool-runner: {exc.message}") from None
    run_service("tool-runner", common, partial(serve, settings=settings, common=common, servers=servers))
