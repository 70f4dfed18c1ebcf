"""The NATS messages that are not events: work (`sluice.run.*`), tool calls (`sluice.tool.*`), control."""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import Struct

__all__ = [
    "ControlMessage",
    "ToolCallMessage",
    "WorkMessage",
    "decode_control",
    "decode_tool_call",
    "decode_work",
]


class WorkMessage(Struct, kw_only=True, tag="work"):
    """Run (or continue) a task. Everything else the runner needs is in the task's log."""

    task_id: str
    reason: Literal["submitted", "resumed", "cancel"] = "submitted"


class ToolCallMessage(Struct, kw_only=True, tag="tool_call"):
    task_id: str
    call_id: str
    name: str
    arguments: str
    deadline_s: float = 30.0


class ControlMessage(Struct, kw_only=True, tag="control"):
    task_id: str
    action: Literal["cancel"]
    reason: str = ""


_work = msgspec.json.Decoder(WorkMessage)
_tool = msgspec.json.Decoder(ToolCallMessage)
_ctl = msgspec.json.Decoder(ControlMessage)


def decode_work(payload: bytes) -> WorkMessage:
    return _work.decode(payload)


def decode_tool_call(payload: bytes) -> ToolCallMessage:
    return _tool.decode(payload)


def decode_control(payload: bytes) -> ControlMessage:
    return _ctl.decode(payload)
