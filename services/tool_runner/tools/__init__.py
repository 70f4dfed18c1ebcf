"""The tools Sluice's tool-runner executes: typed functions registered in one place (`registry.py`).

The runtime looks a tool up with `get_tool`, runs it with `Tool.invoke` and enforces its `timeout_s` and
`max_output_bytes`; the tool-runner advertises them in the catalog, where the agent-runner finds them. This
package does no I/O at import and knows nothing of NATS.
"""

from __future__ import annotations

from .errors import ToolArgumentError, ToolError
from .registry import REGISTRY, all_specs, get_tool
from .tool import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_TIMEOUT_S, Tool

__all__ = [
    "DEFAULT_MAX_OUTPUT_BYTES",
    "DEFAULT_TIMEOUT_S",
    "REGISTRY",
    "Tool",
    "ToolArgumentError",
    "ToolError",
    "all_specs",
    "get_tool",
]
