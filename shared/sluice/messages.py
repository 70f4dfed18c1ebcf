"""The NATS messages that are not events: work (`sluice.run.*`), tool calls (`sluice.tool.*`), control."""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import Struct

__all__ = [
    "ControlMessage",
    "ToolCallMessage",
    "WorkMessage",
    "crashes_so_far",
    "decode_control",
    "decode_tool_call",
    "decode_work",
]


class WorkMessage(Struct, kw_only=True, tag="work"):
    """Run (or continue) a task. Everything else the runner needs is in the task's log."""

    task_id: str
    reason: Literal["submitted", "resumed", "cancel"] = "submitted"
    # A runner that hands the task back cleanly (SIGTERM, drain, a NATS outage) publishes a fresh message
    # carrying the crashes counted so far: only deliveries that ended in a crash count toward the poison limit.
    crashes: int = 0
    handbacks: int = 0


class ToolCallMessage(Struct, kw_only=True, tag="tool_call"):
    task_id: str
    call_id: str
    name: str
    arguments: str
    deadline_s: float = 30.0
    crashes: int = 0  # as in WorkMessage: deliveries of this call that ended in a crash before a clean hand-back
    handbacks: int = 0


class ControlMessage(Struct, kw_only=True, tag="control"):
    task_id: str
    action: Literal["cancel"]
    reason: str = ""


def crashes_so_far(crashes: int, delivered: int) -> int:
    """Crashes behind a delivery: those the message carries, and each earlier delivery of this message (a
    delivery that ends cleanly acks or hands back, so one that was delivered again ended in a crash)."""
    return crashes + max(0, delivered - 1)


_work = msgspec.json.Decoder(WorkMessage)
_tool = msgspec.json.Decoder(ToolCallMessage)
_ctl = msgspec.json.Decoder(ControlMessage)


def decode_work(payload: bytes) -> WorkMessage:
    return _work.decode(payload)


def decode_tool_call(payload: bytes) -> ToolCallMessage:
    return _tool.decode(payload)


def decode_control(payload: bytes) -> ControlMessage:
    return _ctl.decode(payload)
