"""A bounded in-memory record of the requests the demo model received, for tests to read."""

from __future__ import annotations

import itertools
import time
from collections import deque
from typing import Any

import msgspec

__all__ = ["LoggedRequest", "RequestLog"]


class LoggedRequest(msgspec.Struct, kw_only=True):
    """One received request. ``fault`` is the fault that fired on it; ``faults`` every marker it carried."""

    seq: int
    time: float
    method: str
    path: str
    status: int
    model: str | None = None
    stream: bool = False
    messages: int = 0
    last_user: str | None = None
    fault: str | None = None
    faults: list[str] = msgspec.field(default_factory=list)
    reply: str | None = None
    # The function tools offered: name → parameters schema (what a test checks the runner sent).
    tools: dict[str, Any] = msgspec.field(default_factory=dict)


class RequestLog:
    """The last ``capacity`` requests, oldest first."""

    def __init__(self, capacity: int = 1000) -> None:
        self._entries: deque[LoggedRequest] = deque(maxlen=capacity)
        self._seq = itertools.count(1)
        self._encoder = msgspec.json.Encoder()

    def record(
        self,
        method: str,
        path: str,
        status: int,
        *,
        model: str | None = None,
        stream: bool = False,
        messages: int = 0,
        last_user: str | None = None,
        fault: str | None = None,
        faults: list[str] | None = None,
        reply: str | None = None,
        tools: dict[str, Any] | None = None,
    ) -> LoggedRequest:
        entry = LoggedRequest(
            seq=next(self._seq),
            time=time.time(),
            method=method,
            path=path,
            status=status,
            model=model,
            stream=stream,
            messages=messages,
            last_user=last_user,
            fault=fault,
            faults=list(faults or ()),
            reply=reply,
            tools=dict(tools or {}),
        )
        self._entries.append(entry)
        return entry

    def entries(self) -> list[LoggedRequest]:
        return list(self._entries)

    def encode(self) -> bytes:
        """The log as a JSON array."""
        return self._encoder.encode(self.entries())

    def clear(self) -> int:
        """Forget every entry; returns how many there were."""
        count = len(self._entries)
        self._entries.clear()
        return count
