"""What this tool-runner advertises in the catalog: each registered tool's name, description, schema, deadline."""

from __future__ import annotations

from collections.abc import Iterable

from sluice.catalog import RunnerAdvert, ToolAdvert
from sluice.catalog.adverts import sluice_version
from sluice.clock import now_iso

from .tools import Tool

__all__ = ["runner_advert", "tool_advert"]


def tool_advert(tool: Tool) -> ToolAdvert:
    return ToolAdvert(
        name=tool.name, description=tool.description, input_schema=tool.input_schema, timeout_s=tool.timeout_s
    )


def runner_advert(runner_id: str, tools: Iterable[ToolAdvert], *, ttl_s: float, started_at: str = "") -> RunnerAdvert:
    return RunnerAdvert(
        runner=runner_id,
        kind="tool-runner",
        version=sluice_version(),
        started_at=started_at or now_iso(),
        ttl_s=ttl_s,
        tools=list(tools),
    )
