"""Running one tool call under its limits and turning every way it can end into a `CallResult`.

No NATS here: this module takes a tool (or None for an unknown name) and the model's arguments, and returns
what `tool.completed` should say. The limits are enforced here, not by the tools:

- deadline: `min(tool.timeout_s, deadline_s)`. An async tool is cancelled when it passes; a sync tool runs in
  a worker thread that nothing can stop, so the call is answered at the deadline and the thread is left to
  finish on its own (the tools bound their own costs so that it does, quickly).
- output size: a result longer than the limit is **truncated**, not failed — the model usually learns more
  from the first 16 KiB than from an error — and ends with a marker saying so and how much was cut, so the
  model is never misled into thinking it saw everything. Error texts are truncated the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from enum import StrEnum

from .invocable import Invocable
from .tools import ToolArgumentError, ToolError

__all__ = ["CallResult", "Outcome", "effective_deadline", "execute", "truncate"]

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    """How a call ended; the `outcome` label of the metrics. Only `OK` means ok=true."""

    OK = "ok"
    TOOL_ERROR = "tool_error"  # the tool refused or failed, with a message for the model
    BAD_ARGUMENTS = "bad_arguments"  # the model's arguments JSON did not fit the tool's parameters
    UNKNOWN_TOOL = "unknown_tool"
    TIMEOUT = "timeout"
    CRASHED = "crashed"  # a bug in the tool: logged with its traceback, reported without it
    POISON = "poison"  # delivered too often without completing (the runner running it kept dying)


@dataclass(frozen=True, slots=True)
class CallResult:
    outcome: Outcome
    result: str | None = None
    error: str | None = None
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @classmethod
    def failed(cls, outcome: Outcome, error: str, duration_ms: float = 0.0) -> CallResult:
        return cls(outcome, error=error, duration_ms=duration_ms)


def effective_deadline(tool: Invocable, deadline_s: float) -> float:
    """The tool's own timeout, shortened by the caller's deadline when that is a positive number."""
    return min(tool.timeout_s, deadline_s) if deadline_s > 0 else tool.timeout_s


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes (never inside a character), marker included."""
    data = text.encode("utf-8", errors="surrogatepass")
    if len(data) <= limit:
        return text
    marker = f"\n…[output truncated by the tool-runner: {len(data)} bytes, limit {limit}]"
    room = max(0, limit - len(marker.encode()))
    return data[:room].decode("utf-8", errors="ignore") + marker


async def execute(
    tool: Invocable | None, name: str, arguments: str, *, deadline_s: float, max_output_bytes: int | None = None
) -> CallResult:
    """Runs the call and reports how it ended; raises nothing but cancellation."""
    if tool is None:
        return CallResult.failed(Outcome.UNKNOWN_TOOL, f"unknown tool {name!r}")
    limit = max_output_bytes or tool.max_output_bytes
    deadline = effective_deadline(tool, deadline_s)
    started = time.monotonic()

    def elapsed_ms() -> float:
        return round((time.monotonic() - started) * 1000, 3)

    try:
        async with asyncio.timeout(deadline) as scope:
            text = await tool.invoke(arguments)
    except ToolArgumentError as exc:
        return CallResult.failed(Outcome.BAD_ARGUMENTS, truncate(exc.message, limit), elapsed_ms())
    except ToolError as exc:
        return CallResult.failed(Outcome.TOOL_ERROR, truncate(exc.message, limit), elapsed_ms())
    except TimeoutError:
        if scope.expired():
            return CallResult.failed(Outcome.TIMEOUT, f"{name} timed out after {deadline:g}s", elapsed_ms())
        return _crashed(name, elapsed_ms())
    # The boundary between a tool's bug and the task: the traceback goes to our log, the model gets a
    # one-line error and can carry on, and the runner keeps serving other calls. Cancellation propagates.
    except Exception:
        return _crashed(name, elapsed_ms())
    return CallResult(Outcome.OK, result=truncate(text, limit), duration_ms=elapsed_ms())


def _crashed(name: str, duration_ms: float) -> CallResult:
    log.exception("tool %s raised an unexpected error", name, extra={"tool": name})
    return CallResult.failed(Outcome.CRASHED, f"{name} failed with an internal error", duration_ms)
