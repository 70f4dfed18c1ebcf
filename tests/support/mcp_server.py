"""An MCP server written with the official SDK's server side (FastMCP), for the tool-runner's MCP tests.

Run over stdio (`python tests/support/mcp_server.py`) or Streamable HTTP (`streamable_app()` under uvicorn). Its
tools cover what the client must handle: a plain result, structured content, an error result, a result over the
output limit, a slow call, a crash of the server process, a tool list that changes at runtime, and two tools a
model API could not be offered (a name with a space, an input schema that is not JSON Schema).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from mcp.server.fastmcp import Context, FastMCP

__all__ = ["build_server", "streamable_app"]


def build_server() -> FastMCP:
    server = FastMCP("sluice-test-mcp", log_level="ERROR")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def weather(city: str) -> dict[str, Any]:
        """Today's weather in a city (made up)."""
        return {"city": city, "temp_c": 21, "sky": "clear"}

    @server.tool()
    def refuse(reason: str) -> str:
        """Always fails, with the reason given."""
        raise ValueError(f"refused: {reason}")

    @server.tool()
    def big(size: int) -> str:
        """Returns `size` characters."""
        return "x" * size

    @server.tool()
    async def slow(seconds: float) -> str:
        """Answers after `seconds`."""
        await asyncio.sleep(seconds)
        return "late"

    @server.tool()
    def crash() -> str:
        """Ends the server process at once (a crash)."""
        os._exit(3)

    @server.tool()
    async def grow(ctx: Context) -> str:  # type: ignore[type-arg]
        """Adds the tool `extra` and tells the client its tool list changed."""

        def extra(text: str) -> str:
            """Echoes text back, in capitals."""
            return text.upper()

        server.add_tool(extra)
        await ctx.session.send_tool_list_changed()
        return "grown"

    @server.tool(name="has space")
    def spaced() -> str:
        """A name no model API accepts."""
        return "unreachable"

    @server.tool()
    def broken_schema(value: str) -> str:
        """Its input schema is made invalid below."""
        return value

    # `properties` must be an object in JSON Schema: this tool must not be offered to a model.
    server._tool_manager.get_tool("broken_schema").parameters = {"type": "object", "properties": 7}  # type: ignore[union-attr]
    return server


def streamable_app() -> Any:
    """The server's Streamable HTTP app (at `/mcp`), for uvicorn."""
    return build_server().streamable_http_app()


if __name__ == "__main__":
    build_server().run("stdio")
