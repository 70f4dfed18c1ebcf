"""`sluice agent-runner`: configuration, the agents file, the model client, metrics, then the worker until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from prometheus_client import REGISTRY

from agent_runner.agents import Catalog, load_catalog
from agent_runner.metrics import serve_metrics
from agent_runner.model import OpenAIModel
from agent_runner.ports import ToolDescriptor
from agent_runner.settings import RunnerSettings
from agent_runner.worker import Worker
from sluice.bus import Bus
from sluice.service import run_service
from sluice.telemetry import NatsConnectionCollector

__all__ = ["main", "serve", "tool_descriptors"]

log = logging.getLogger(__name__)


def tool_descriptors() -> dict[str, ToolDescriptor]:
    """Every registered tool as the runner offers it to the model."""
    from tool_runner.tools import REGISTRY

    return {
        name: ToolDescriptor(name=name, spec=tool.openai_spec(), interactive=tool.interactive, timeout_s=tool.timeout_s)
        for name, tool in REGISTRY.items()
    }


async def serve(
    settings: RunnerSettings,
    catalog: Catalog,
    tools: Mapping[str, ToolDescriptor],
    bus: Bus,
    stopping: asyncio.Event,
) -> None:
    model = OpenAIModel(
        base_url=settings.openai_base_url, api_key=settings.openai_api_key, timeout_s=settings.model_timeout_s
    )
    log.info("agent-runner settings", extra={"settings": settings.describe(), "agents": catalog.names})
    try:
        await Worker(bus, settings, catalog, tools, model).run(stopping)
    finally:
        await model.close()


def main() -> None:
    settings = RunnerSettings.from_env()
    tools = tool_descriptors()
    # A broken agents file stops the runner before it connects to anything.
    catalog = load_catalog(settings.agents_file, default_model=settings.model, known_tools=tools.keys())

    async def run(bus: Bus, stopping: asyncio.Event) -> None:
        REGISTRY.register(NatsConnectionCollector(bus.state, prefix="sluice_runner"))
        serve_metrics(settings.metrics_port, settings.metrics_host)
        await serve(settings, catalog, tools, bus, stopping)

    run_service("agent-runner", settings.common, run)
