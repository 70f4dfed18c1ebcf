"""A2A test support: the official a2a-sdk client pointed at an edge, messages, and reading streams.

Tests talk to Sluice only through the SDK's `ClientFactory` (a client nobody here wrote), except where they must
send what no well-behaved client sends (malformed JSON-RPC, a wrong version header, a cut connection) — that is
`raw_rpc` and `sse_events`, plain httpx.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from a2a.client import A2ACardResolver, Client, ClientCallContext, ClientConfig, ClientFactory
from a2a.types import (
    AgentCard,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)
from google.protobuf import json_format, struct_pb2

__all__ = [
    "BINDINGS",
    "FINAL",
    "Collected",
    "a2a_client",
    "artifact_text",
    "card_of",
    "collect",
    "message",
    "raw_rpc",
    "send",
    "sse_events",
]

BINDINGS = ("JSONRPC", "HTTP+JSON")
FINAL = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_INPUT_REQUIRED,
    }
)
_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


async def card_of(base_url: str) -> AgentCard:
    async with httpx.AsyncClient(timeout=_TIMEOUT) as http:
        return await A2ACardResolver(http, base_url).get_agent_card()


@contextlib.asynccontextmanager
async def a2a_client(
    base_url: str,
    binding: str = "JSONRPC",
    *,
    streaming: bool = True,
    polling: bool = False,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Client]:
    """An SDK client for the edge at `base_url`, discovered from its card, speaking `binding`; `headers` go on
    every request (e.g. `Authorization`)."""
    async with httpx.AsyncClient(timeout=_TIMEOUT, headers=headers) as http:
        config = ClientConfig(
            streaming=streaming, polling=polling, httpx_client=http, supported_protocol_bindings=[binding]
        )
        client = await ClientFactory(config).create_from_url(base_url)
        try:
            yield client
        finally:
            await client.close()


def message(
    text: str | None = None,
    *,
    task_id: str = "",
    context_id: str = "",
    data: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Message:
    parts = []
    if text is not None:
        parts.append(Part(text=text))
    if data is not None:
        parts.append(Part(data=json_format.ParseDict(data, struct_pb2.Value())))
    msg = Message(
        role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=parts, task_id=task_id, context_id=context_id
    )
    if metadata:
        msg.metadata.update(metadata)
    return msg


def send(msg: Message, *, history_length: int | None = None) -> SendMessageRequest:
    request = SendMessageRequest(message=msg)
    if history_length is not None:
        request.configuration.CopyFrom(SendMessageConfiguration(history_length=history_length))
    return request


@dataclass
class Collected:
    """What a stream delivered, in order, and the task it adds up to."""

    responses: list[StreamResponse] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        return [str(r.WhichOneof("payload")) for r in self.responses]

    @property
    def states(self) -> list[int]:
        out = []
        for r in self.responses:
            if r.HasField("task"):
                out.append(r.task.status.state)
            elif r.HasField("status_update"):
                out.append(r.status_update.status.state)
        return out

    @property
    def task_id(self) -> str:
        first = self.responses[0]
        return first.task.id if first.HasField("task") else first.status_update.task_id

    @property
    def context_id(self) -> str:
        first = self.responses[0]
        return first.task.context_id if first.HasField("task") else first.status_update.context_id

    @property
    def text(self) -> str:
        """The artifact text the stream delivered, assembled as a client does (append / replace by artifact)."""
        artifacts: dict[str, str] = {}
        for r in self.responses:
            if r.HasField("task"):
                for a in r.task.artifacts:
                    artifacts[a.artifact_id] = "".join(p.text for p in a.parts)
            elif r.HasField("artifact_update"):
                update = r.artifact_update
                chunk = "".join(p.text for p in update.artifact.parts)
                key = update.artifact.artifact_id
                artifacts[key] = artifacts.get(key, "") + chunk if update.append else chunk
        return "".join(artifacts.values())


async def collect(stream: AsyncIterator[StreamResponse], *, limit: int = 10_000) -> Collected:
    out = Collected()
    async for response in stream:
        out.responses.append(response)
        if len(out.responses) >= limit:
            break
    return out


def artifact_text(task: Task) -> str:
    return "".join(p.text for a in task.artifacts for p in a.parts)


def call_context(**headers: str) -> ClientCallContext:
    """Extra HTTP headers for one SDK call (e.g. `Last-Event-ID`)."""
    return ClientCallContext(service_parameters=dict(headers))


# ---------------------------------------------------------------- below the SDK


async def raw_rpc(
    base_url: str, body: bytes | str | dict[str, Any], *, version: str | None = "1.0", path: str = "/a2a"
) -> httpx.Response:
    """POSTs anything to the JSON-RPC endpoint: the requests no SDK would send."""
    headers = {"Content-Type": "application/json"}
    if version is not None:
        headers["A2A-Version"] = version
    content = json.dumps(body) if isinstance(body, dict) else body
    async with httpx.AsyncClient(timeout=_TIMEOUT) as http:
        return await http.post(base_url + path, content=content, headers=headers)


@dataclass
class SseEvent:
    id: str | None
    event: str | None
    data: dict[str, Any]


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """The SSE events of a streaming response (comments skipped), with their `id:` lines."""
    fields: dict[str, str] = {}
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield SseEvent(fields.get("id"), fields.get("event"), json.loads("\n".join(data)))
            fields, data = {}, []
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "data":
                data.append(value)
            else:
                fields[key] = value
