"""The two ways a tool call fails, as members of Sluice's one error hierarchy.

    SluiceError (sluice.errors)
    └── ToolError               the tool ran and failed; the message is written for the model to read
        └── ToolArgumentError   the model's arguments did not decode into the tool's parameters

Both end as `tool.completed` with ok=false and `message` as the error, so the model can correct itself;
the subclass lets the runtime count "the model sent bad arguments" apart from "the tool failed".
"""

from __future__ import annotations

from sluice.errors import SluiceError

__all__ = ["ToolArgumentError", "ToolError"]


class ToolError(SluiceError):
    """A tool's own failure. `message` is shown to the model, so it says what to change."""

    code = "tool_failed"

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class ToolArgumentError(ToolError):
    """The arguments JSON was malformed, had a wrong type, or missed or added a field (named in `message`)."""

    code = "invalid_tool_arguments"
