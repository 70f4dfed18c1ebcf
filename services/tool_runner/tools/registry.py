"""The one place where tools are registered, and the lookups the runners use.

To add a tool: write a typed function with a docstring in its own module and add one line to `_TOOLS`.
Names must be unique; a duplicate fails at import, not at the first call.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from sluice.errors import InvalidInput

from .calculator import calculator
from .clock import clock
from .errors import ToolArgumentError, ToolError
from .search_docs import search_docs
from .slow_echo import MAX_SECONDS, slow_echo
from .tool import Tool
from .units import convert_units

__all__ = ["REGISTRY", "Tool", "ToolArgumentError", "ToolError", "all_specs", "get_tool"]

_TOOLS = [
    Tool.from_function(calculator),
    Tool.from_function(clock),
    Tool.from_function(convert_units),
    Tool.from_function(search_docs),
    # Its own cap as its timeout, so a test's deadline (not this default) decides when it is cut off.
    Tool.from_function(slow_echo, timeout_s=MAX_SECONDS),
]


def _index(tools: list[Tool]) -> Mapping[str, Tool]:
    by_name: dict[str, Tool] = {}
    for tool in tools:
        if tool.name in by_name:
            raise ValueError(f"tool {tool.name!r} is registered twice")
        by_name[tool.name] = tool
    return MappingProxyType(by_name)


REGISTRY: Mapping[str, Tool] = _index(_TOOLS)


def get_tool(name: str) -> Tool | None:
    """The tool called `name`, or None: an unknown name from the model is the caller's error to report."""
    return REGISTRY.get(name)


def all_specs(names: list[str]) -> list[dict[str, Any]]:
    """The OpenAI `tools` list for an agent's tool names, in the order given.

    An unknown name raises `InvalidInput("unknown_tool")`: an agent configured with a tool that does not
    exist is a mistake to surface, not to hide by offering the model fewer tools.
    """
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        raise InvalidInput("unknown_tool", f"unknown tools: {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    return [REGISTRY[name].openai_spec() for name in names]
