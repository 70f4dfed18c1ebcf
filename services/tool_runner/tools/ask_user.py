"""`ask_user`: the model's way to ask the human a question.

It is offered to the model like any tool, but it is `interactive`: the agent-runner intercepts the call and
pauses the task for input (`task.input_required`); the tool-runner never runs it. If it is ever invoked
anyway, it fails loudly rather than inventing an answer.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from .errors import ToolError

__all__ = ["ask_user"]


def ask_user(
    question: Annotated[str, Meta(min_length=1, max_length=2000, description="the question for the user")],
) -> str:
    """Ask the user a question and wait for their answer. Use it when you need information only they have."""
    raise ToolError("ask_user is handled by the agent-runner")
