"""`sluice tool-runner`: read the settings, serve tool calls until SIGTERM/SIGINT, drain, exit 0."""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from sluice import subjects
from sluice.bus import Bus
from sluice.config import CommonConfig
from sluice.errors import InvalidInput
from sluice.handbacks import HandBacks
from sluice.records import TaskStore
from sluice.service import run_service

from .handler import ToolCallHandler
from .metrics import ToolMetrics
from .settings import ToolRunnerSettings
from .worker import ToolWorker

__all__ = ["main", "serve"]

log = logging.getLogger(__name__)


async def serve(bus: Bus, stopping: asyncio.Event, *, settings: ToolRunnerSettings, common: CommonConfig) -> None:
    """The service body `run_service` calls with a connected, provisioned bus."""
    metrics = ToolMetrics()
    metrics.watch_connection(bus.state)
    stop_metrics = metrics.serve(settings.metrics_host, settings.metrics_port) if settings.metrics_port else None
    try:
        store = TaskStore(await bus.js.key_value(subjects.TASKS_BUCKET))
        handbacks = HandBacks(await bus.js.key_value(subjects.HANDBACKS_BUCKET))
        handler = ToolCallHandler(
            bus,
            store,
            metrics,
            max_deliver=common.max_deliver,
            max_output_bytes=settings.max_output_bytes,
            handbacks=handbacks,
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
                },
            )

        await worker.run(stopping, on_ready=ready)
    finally:
        if stop_metrics is not None:
            stop_metrics()


def main() -> None:
    try:
        common = CommonConfig.from_env()
        settings = ToolRunnerSettings.from_env()
    except InvalidInput as exc:
        raise SystemExit(f"tool-runner: {exc.message}") from None
    run_service("tool-runner", common, partial(serve, settings=settings, common=common))
