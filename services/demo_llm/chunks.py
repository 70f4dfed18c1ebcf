"""OpenAI response bodies: ``chat.completion.chunk`` JSON for streams, ``chat.completion`` otherwise.

Built from one :class:`Answer`, so a streamed and a non-streamed reply say the same thing. A stream is:

1. a role chunk (``{"role": "assistant", "content": ""}``; ``content`` is ``null`` before tool calls);
2. text, one chunk per word; or, per tool call, a header chunk carrying ``index``, ``id``, ``type``,
   ``function.name`` and empty ``arguments``, then the arguments in fragments under the same ``index``;
3. the finish chunk: empty delta and ``finish_reason`` (``stop`` or ``tool_calls``);
4. with ``stream_options.include_usage``, a usage chunk with ``choices: []`` (other chunks carry
   ``usage: null``, as OpenAI's do).

This module builds JSON only; SSE framing is :mod:`demo_llm.sse`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

from demo_llm.tokens import argument_fragments, text_pieces

__all__ = [
    "Answer",
    "ChunkStream",
    "IssuedCall",
    "Usage",
    "encode_chunks",
    "encode_completion",
    "encode_model_list",
]


class Usage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _FunctionDelta(msgspec.Struct, kw_only=True):
    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET


class _ToolCallDelta(msgspec.Struct, kw_only=True):
    index: int
    id: str | UnsetType = UNSET
    type: Literal["function"] | UnsetType = UNSET
    function: _FunctionDelta


class _Delta(msgspec.Struct, kw_only=True):
    role: Literal["assistant"] | UnsetType = UNSET
    content: str | UnsetType | None = UNSET
    tool_calls: list[_ToolCallDelta] | UnsetType = UNSET


class _ChunkChoice(msgspec.Struct, kw_only=True):
    index: int = 0
    delta: _Delta
    logprobs: None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[_ChunkChoice]
    usage: Usage | UnsetType | None = UNSET


class _FunctionCall(msgspec.Struct, kw_only=True):
    name: str
    arguments: str


class _ToolCall(msgspec.Struct, kw_only=True):
    id: str
    type: Literal["function"] = "function"
    function: _FunctionCall


class _Message(msgspec.Struct, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None
    tool_calls: list[_ToolCall] | UnsetType = UNSET


class _CompletionChoice(msgspec.Struct, kw_only=True):
    index: int = 0
    message: _Message
    logprobs: None = None
    finish_reason: str


class _Completion(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[_CompletionChoice]
    usage: Usage


class _ModelCard(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "sluice"


class _ModelList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[_ModelCard]


@dataclass(frozen=True, slots=True)
class IssuedCall:
    """A tool call as sent: with its id, and arguments as JSON text (possibly malformed on purpose)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Answer:
    """Everything one response says, however it is sent."""

    completion_id: str
    model: str
    created: int
    text: str | None
    tool_calls: tuple[IssuedCall, ...]
    usage: Usage

    @property
    def finish_reason(self) -> Literal["stop", "tool_calls"]:
        return "tool_calls" if self.tool_calls else "stop"


@dataclass(frozen=True, slots=True)
class ChunkStream:
    """The JSON of each chunk in order; ``finish_index`` is the position of the finish chunk."""

    chunks: list[bytes]
    finish_index: int


_encoder = msgspec.json.Encoder()


def encode_chunks(answer: Answer, *, include_usage: bool) -> ChunkStream:
    """The ``chat.completion.chunk`` JSON documents that stream ``answer``."""
    usage_field: UnsetType | None = None if include_usage else UNSET

    def envelope(choices: list[_ChunkChoice], usage: Usage | UnsetType | None) -> bytes:
        return _encoder.encode(
            _Chunk(id=answer.completion_id, created=answer.created, model=answer.model, choices=choices, usage=usage)
        )

    def chunk(delta: _Delta, finish_reason: str | None = None) -> bytes:
        return envelope([_ChunkChoice(delta=delta, finish_reason=finish_reason)], usage_field)

    chunks = [chunk(_Delta(role="assistant", content=None if answer.tool_calls else ""))]
    chunks += [chunk(_Delta(content=piece)) for piece in text_pieces(answer.text or "")]
    for index, call in enumerate(answer.tool_calls):
        opening = _FunctionDelta(name=call.name, arguments="")
        header = _ToolCallDelta(index=index, id=call.id, type="function", function=opening)
        chunks.append(chunk(_Delta(tool_calls=[header])))
        for fragment in argument_fragments(call.arguments):
            part = _ToolCallDelta(index=index, function=_FunctionDelta(arguments=fragment))
            chunks.append(chunk(_Delta(tool_calls=[part])))
    finish_index = len(chunks)
    chunks.append(chunk(_Delta(), answer.finish_reason))
    if include_usage:
        chunks.append(envelope([], answer.usage))
    return ChunkStream(chunks=chunks, finish_index=finish_index)


def encode_completion(answer: Answer) -> bytes:
    """The ``chat.completion`` JSON for ``answer``."""
    calls = [_ToolCall(id=c.id, function=_FunctionCall(name=c.name, arguments=c.arguments)) for c in answer.tool_calls]
    message = _Message(content=answer.text, tool_calls=calls or UNSET)
    completion = _Completion(
        id=answer.completion_id,
        created=answer.created,
        model=answer.model,
        choices=[_CompletionChoice(message=message, finish_reason=answer.finish_reason)],
        usage=answer.usage,
    )
    return _encoder.encode(completion)


def encode_model_list(model_ids: list[str]) -> bytes:
    """The ``GET /v1/models`` body."""
    return _encoder.encode(_ModelList(data=[_ModelCard(id=model_id) for model_id in model_ids]))
