"""`sluice agent-runner`: configuration, the agents file, the model client, metrics, the catalog, then the worker.

The runner meets the tool-runners only in the catalog (CONTRACT §9): it advertises its agents and crews, and
watches the tools the tool-runners advertise, which become the model's tool list (`LiveTools`). Both run beside the
worker until SIGTERM; the advertisement is removed once the worker has drained.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from prometheus_client import REGISTRY

from agent_runner.advert import runner_advert
from agent_runner.agents import Catalog, load_catalog
from agent_runner.live_tools import LiveTools
from agent_runner.metrics import serve_metrics
from agent_runner.model import OpenAIModel
from agent_runner.ports import ToolDescriptor
from agent_runner.settings import RunnerSettings
from agent_runner.worker import Worker
from sluice.bus import Bus
from sluice.catalog import Advertiser, CatalogView
from sluice.catalog.adverts import runner_id_token
from sluice.service import run_service
from sluice.telemetry import NatsConnectionCollector

__all__ = ["main", "serve"]

log = logging.getLogger(__name__)


async def serve(
    settings: RunnerSettings,
    catalog: Catalog,
    bus: Bus,
    stopping: asyncio.Event,
    *,
    tools: Mapping[str, ToolDescriptor] | None = None,
) -> None:
    """Runs the worker; `tools` replaces the catalog's live tools (tests)."""
    model = OpenAIModel(
        base_url=settings.openai_base_url, api_key=settings.openai_api_key, timeout_s=settings.model_timeout_s
    )
    log.info("agent-runner settings", extra={"settings": settings.describe(), "agents": catalog.names})
    view = CatalogView(bus)
    advert = runner_advert(catalog, runner_id_token(settings.runner_id), ttl_s=settings.common.catalog_ttl_s)
    advertising = asyncio.Event()
    try:
        await view.start()
        async with asyncio.TaskGroup() as group:
            group.create_task(Advertiser(bus, advert).run(advertising))
            try:
                await Worker(bus, settings, catalog, tools if tools is not None else LiveTools(view), model).run(
                    stopping
                )
            finally:
                advertising.set()
    finally:
        await view.stop()
        await model.close()


def main() -> None:
    settings = RunnerSettings.from_env()
    # A broken agents file stops the runner before it connects to anything.
    catalog = load_catalog(settings.agents_file, default_model=settings.model)

    async def run(bus: Bus, stopping: asyncio.Event) -> None:
        REGISTRY.register(NatsConnectionCollector(bus.state, prefix="sluice_runner"))
        serve_metrics(settings.metrics_port, settings.metrics_host)
        await serve(settings, catalog, bus, stopping)

    run_service("agent-runner", settings.common, run)
