"""The part of the OpenAI chat-completions request the demo model reads, as msgspec Structs.

Unknown fields are ignored (clients send many the demo model has no use for); the fields read here are
validated, so a malformed body becomes one :class:`RequestError` and, at the edge, a 400.
"""

from __future__ import annotations

from typing import Any

import msgspec

from sluice.errors import InvalidInput

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "ContentPart",
    "FunctionCallIn",
    "FunctionSpec",
    "NamedFunction",
    "NamedToolChoice",
    "RequestError",
    "StreamOptions",
    "ToolCallIn",
    "ToolSpec",
    "decode_chat_request",
    "message_text",
]


class RequestError(InvalidInput):
    """The request body is not a chat-completions request the demo model can answer."""

    code = "invalid_request"


class ContentPart(msgspec.Struct):
    """One part of a multi-part message content; only ``text`` parts carry words for the demo model."""

    type: str
    text: str | None = None


class FunctionCallIn(msgspec.Struct):
    name: str = ""
    arguments: str = ""


class ToolCallIn(msgspec.Struct):
    """A tool call the assistant made earlier in the conversation."""

    id: str = ""
    type: str = "function"
    function: FunctionCallIn = msgspec.field(default_factory=FunctionCallIn)


class ChatMessage(msgspec.Struct):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class FunctionSpec(msgspec.Struct):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSpec(msgspec.Struct):
    type: str = "function"
    function: FunctionSpec | None = None


class NamedFunction(msgspec.Struct):
    name: str


class NamedToolChoice(msgspec.Struct):
    """``tool_choice: {"type": "function", "function": {"name": ...}}``."""

    function: NamedFunction
    type: str = "function"


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class ChatRequest(msgspec.Struct):
    model: str
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: str | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def tool_names(self) -> frozenset[str]:
        """Names of the function tools offered, narrowed by ``tool_choice`` (``"none"`` offers none)."""
        if self.tool_choice == "none" or not self.tools:
            return frozenset()
        names = frozenset(t.function.name for t in self.tools if t.type == "function" and t.function)
        if isinstance(self.tool_choice, NamedToolChoice):
            return names & {self.tool_choice.function.name}
        return names


_decoder = msgspec.json.Decoder(ChatRequest)


def decode_chat_request(body: bytes) -> ChatRequest:
    """Decode and validate a request body; raises :class:`RequestError` with a client-facing message."""
    try:
        request = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise RequestError(message=f"Invalid chat completions request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise RequestError(message=f"Request body is not valid JSON: {exc}") from None
    if not request.messages:
        raise RequestError(message="Invalid chat completions request: `messages` must not be empty")
    return request


def message_text(message: ChatMessage) -> str:
    """The words of a message: its string content, or its text parts joined by newlines."""
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    return "\n".join(part.text for part in message.content if part.type == "text" and part.text)
