"""MCP servers as tools (CONTRACT §9): the `SLUICE_MCP_SERVERS` file, one supervised connection per server."""

from __future__ import annotations

from .config import McpServerConfig, load_mcp_servers, parse_mcp_servers
from .connection import McpConnection, McpTool

__all__ = ["McpConnection", "McpServerConfig", "McpTool", "load_mcp_servers", "parse_mcp_servers"]
