"""Every tool this tool-runner serves: the registered Python tools and the tools of its MCP servers.

`get` is the handler's lookup; `adverts` is what the catalog advertisement lists. When an MCP server's tool list
changes (it started, died, or sent `tools/list_changed`) the toolbox calls `on_change`, and the tool-runner
re-advertises at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from sluice.catalog import ToolAdvert

from .advert import tool_advert
from .invocable import Invocable
from .mcp import McpServerConfig
from .tools import DEFAULT_MAX_OUTPUT_BYTES, Tool

if TYPE_CHECKING:
    from .mcp.connection import McpConnection

__all__ = ["Toolbox"]


class Toolbox:
    def __init__(
        self,
        registry: Mapping[str, Tool],
        servers: Sequence[McpServerConfig] = (),
        *,
        max_output_bytes: int | None = None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.on_change = on_change
        limit = max_output_bytes or DEFAULT_MAX_OUTPUT_BYTES
        self.connections: list[McpConnection] = []
        if servers:  # the MCP SDK is imported only by a tool-runner that has MCP servers
            from .mcp.connection import McpConnection

            self.connections = [
                McpConnection(config, max_output_bytes=limit, on_change=self._changed) for config in servers
            ]

    def _changed(self) -> None:
        self.on_change()

    def get(self, name: str) -> Invocable | None:
        tool = self.registry.get(name)
        if tool is not None:
            return tool
        for connection in self.connections:
            mcp_tool = connection.tools.get(name)
            if mcp_tool is not None:
                return mcp_tool
        return None

    def adverts(self) -> list[ToolAdvert]:
        out = [tool_advert(tool) for tool in self.registry.values()]
        for connection in self.connections:
            out.extend(tool.advert for tool in connection.tools.values())
        return out

    async def run(self, stopping: asyncio.Event) -> None:
        """Keeps every MCP server connected (each restarted with backoff) until `stopping` is set."""
        async with asyncio.TaskGroup() as group:
            for connection in self.connections:
                group.create_task(connection.run(stopping), name=f"mcp-{connection.name}")
