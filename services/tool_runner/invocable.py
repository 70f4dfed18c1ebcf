"""What the tool-runner can run: a registered Python tool or an MCP server's tool, behind one small shape."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Invocable"]


class Invocable(Protocol):
    """`invoke` returns the result text or raises `ToolError` / `ToolArgumentError`; the limits are enforced by
    `execution.execute`, not by the tool."""

    @property
    def name(self) -> str: ...

    @property
    def timeout_s(self) -> float: ...

    @property
    def max_output_bytes(self) -> int: ...

    async def invoke(self, arguments_json: str) -> str: ...
