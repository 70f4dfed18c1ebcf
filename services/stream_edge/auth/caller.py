"""Who is calling: the identity one request was authenticated as, and the tenant it acts in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["CALLER_STATE_KEY", "Caller", "Method"]

# Where the guard leaves the caller in the ASGI scope's `state` (FastAPI's `request.state`).
CALLER_STATE_KEY = "sluice_caller"

Method = Literal["none", "key", "jwt", "stream_token"]


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    method: Method
    # The key id, the token's `sub`, or the task of a stream token: for logs, never a credential.
    subject: str = ""
    # A stream token's caller may read this one task's events and do nothing else.
    stream_task: str | None = None

    def may_touch(self, task_id: str) -> bool:
        return self.stream_task is None or self.stream_task == task_id
