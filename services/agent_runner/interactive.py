"""The tools the agent-runner answers itself, never sent to a tool-runner: `ask_user` pauses the task for a human.

The loop intercepts a call to an interactive tool and publishes `task.input_required`; the answer (`POST /input`)
becomes the call's `tool.completed`. Approvals (an agent's `approval_tools`) are decided here too, before a call is
dispatched. These descriptors join the catalog's tools in the model's tool list.
"""

from __future__ import annotations

from types import MappingProxyType

from agent_runner.ports import ToolDescriptor

__all__ = ["ASK_USER", "INTERACTIVE_TOOLS"]

ASK_USER = ToolDescriptor(
    name="ask_user",
    spec={
        "type": "function",
        "function": {
            "name": "ask_user",
            "description": (
                "Ask the user a question and wait for their answer. Use it when you need information only they have."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "question": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 2000,
                        "description": "the question for the user",
                    }
                },
                "required": ["question"],
            },
        },
    },
    interactive=True,
    timeout_s=0.0,
)

INTERACTIVE_TOOLS = MappingProxyType({ASK_USER.name: ASK_USER})
