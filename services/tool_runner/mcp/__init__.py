"""MCP servers as tools (CONTRACT §9): the `SLUICE_MCP_SERVERS` file (`config`), one supervised connection per
server through the official SDK (`connection`, imported only when a server is configured: the SDK is large).
"""

from __future__ import annotations

from .config import McpServerConfig, load_mcp_servers, parse_mcp_servers

__all__ = ["McpServerConfig", "load_mcp_servers", "parse_mcp_servers"]
