"""What the agent loop needs from the outside world, as types: a model client, an event sink, tool descriptions.

The loop (`loop.py`) is written against these; `model.py` implements `ModelClient` with the openai SDK and
`sink.py` implements `EventSink` over NATS, and tests can pass fakes.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sluice.errors import ModelError
from sluice.events import Event, ToolCall, ToolCompleted

__all__ = [
    "ChatRequest",
    "EventSink",
    "ModelCallError",
    "ModelClient",
    "ModelReply",
    "ToolDescriptor",
    "ToolDispatch",
]

E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ModelReply:
    """The end of one model call: the whole text, the tool calls, token usage, why it stopped."""

    content: str
    tool_calls: list[ToolCall]
    input_tokens: int
    output_tokens: int
    finish_reason: str
    model: str = ""


class ModelCallError(ModelError):
    """A model call that failed. `retryable`: worth another attempt (rate limit, 5xx, network, cut stream).

    `code` is what a task that gives up on it fails with (`model_unavailable`, `model_error`); `reason` says
    precisely what happened (`rate_limited`, `server_error`, `connection`, `timeout`, `stream_cut`, `rejected`).
    """

    def __init__(
        self, code: str, message: str, *, reason: str, retryable: bool, retry_after_s: float | None = None
    ) -> None:
        super().__init__(code, message)
        self.reason = reason
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class ModelClient(Protocol):
    def stream(self, request: ChatRequest) -> AsyncGenerator[str | ModelReply, None]:
        """Text deltas as they arrive, then one `ModelReply`; raises `ModelCallError`. Close it with aclosing."""
        ...


@dataclass(frozen=True)
class ToolDescriptor:
    """A tool as the runner sees it: the schema offered to the model, whether a human answers it, its deadline."""

    name: str
    spec: dict[str, Any]
    interactive: bool = False
    timeout_s: float = 10.0


@dataclass(frozen=True)
class ToolDispatch:
    call: ToolCall
    deadline_s: float


class EventSink(Protocol):
    """Publishes one task's events in order, and runs its tool calls through whatever executes them."""

    async def emit(self, cls: type[E], data: Any, *, msg_id: str) -> E:
        """Publishes an event (deduplicated by `msg_id`); returns it as stored, with `id` set."""
        ...

    async def run_tools(self, calls: Sequence[ToolDispatch], *, after_seq: int) -> list[ToolCompleted]:
        """Sends the calls and waits for each one's `tool.completed` (looking in the log from `after_seq` on);
        a call that gets no answer by its deadline (plus a margin) is reported as failed. In the calls' order."""
        ...
