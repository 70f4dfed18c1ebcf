"""`POST /v1/chat` and `GET /v1/chat/{id}/stream`: the AI SDK's `DefaultChatTransport`, served unchanged (§10).

The chat `id` is the Sluice context and the last message (the user's) is the task's input; the earlier turns come
from the context's logs, not from the messages the client sends back (the log is the truth, and a client cannot
rewrite what the assistant said). The answer is the task's log as a UI message stream (`ai_sdk.py`).

`GET /v1/chat/{id}/stream` is the transport's `reconnectToStream`: the context's latest task replayed from its
start (the transport expects a replay: `resumeStreamIsReplay`), or from after `Last-Event-ID`; `204` when the
context has no task running (and the client names no position to finish from).
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response

from sluice.errors import InvalidInput, Unavailable
from sluice.events import TaskSubmittedData
from sluice.ids import CONTEXT_ID_PATTERN, parse_context_id
from stream_edge.auth.deps import CallerDep
from stream_edge.commands import AGENT_PATTERN
from stream_edge.deps import edge_of, json_body, only_query
from stream_edge.openapi import error_responses
from stream_edge.protocols import ai_sdk
from stream_edge.protocols.stream import open_stream
from stream_edge.routes_events import start_position
from stream_edge.runtime import EdgeRuntime

__all__ = ["ChatBody", "router"]

router = APIRouter(prefix="/v1/chat", tags=["ai-sdk"])
Edge = Annotated[EdgeRuntime, Depends(edge_of)]

MAX_MESSAGES = 1000
MAX_PARTS = 100
# UI message part types (ai@6); `tool-<name>` and `data-<name>` are families.
_PART_TYPES = frozenset(
    {"text", "reasoning", "file", "source-url", "source-document", "step-start", "dynamic-tool"}
)  # fmt: skip
_PART_FAMILY = re.compile(r"^(tool|data)-[A-Za-z0-9_-]{1,64}$")

_STREAM = {
    "description": "The answer as an AI SDK UI message stream (SSE, `x-vercel-ai-ui-message-stream: v1`)",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


class UIPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = Field(max_length=80)
    text: str | None = None

    @field_validator("type")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in _PART_TYPES and not _PART_FAMILY.fullmatch(value):
            raise ValueError(f"unknown UI message part type {value[:40]!r}")
        return value


class UIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(max_length=200)
    role: Literal["system", "user", "assistant"]
    parts: list[UIPart] = Field(max_length=MAX_PARTS)


class ChatBody(BaseModel):
    """What `DefaultChatTransport.sendMessages` posts; more fields (the app's own `body`) are ignored, but `agent`."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(pattern=CONTEXT_ID_PATTERN, description="The chat id: the Sluice context id.")
    messages: list[UIMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    message_id: str | None = Field(default=None, alias="messageId", max_length=200)
    agent: str = Field(default="assistant", pattern=AGENT_PATTERN)

    def user_text(self) -> str:
        last = self.messages[-1]
        if last.role != "user":
            raise InvalidInput("last_message_not_user", f"the last message must be the user's, not {last.role!r}")
        text = "\n".join(part.text for part in last.parts if part.type == "text" and part.text)
        if not text.strip():
            raise InvalidInput("invalid_input", "the last user message has no text")
        return text

    def metadata(self) -> dict[str, Any]:
        return {"ai_sdk": {"chat_id": self.id, "message_id": self.messages[-1].id, "trigger": self.trigger}}

    def idempotency_key(self) -> str | None:
        """A resent message (a retry after a lost response) is the same task; a regeneration is a new one."""
        if self.trigger != "submit-message":
            return None
        return "ai-sdk-" + hashlib.sha256(f"{self.id}\n{self.messages[-1].id}".encode()).hexdigest()[:48]


@router.post(
    "",
    summary="Send a chat message (AI SDK UI message stream)",
    response_class=Response,
    dependencies=[Depends(only_query()), Depends(json_body)],
    responses={200: _STREAM, **error_responses(400, 401, 413, 415, 422, 429, 503)},
)
async def send_message(body: ChatBody, request: Request, edge: Edge, caller: CallerDep) -> Response:
    text = body.user_text()
    if edge.draining:
        raise Unavailable("shutting_down", "this edge is shutting down; retry on another", retry_after_s=1)
    submission = TaskSubmittedData(
        input=text, agent=body.agent, history=[], metadata=body.metadata(), context_id=parse_context_id(body.id)
    )
    hold = edge.hold_stream(caller.tenant)  # a tenant at its limit of open streams creates no task (429)
    try:
        record = await edge.tasks.submit(submission, idempotency_key=body.idempotency_key(), tenant=caller.tenant)
    except BaseException:
        hold.release()
        raise
    return await open_stream(edge, request, record, ai_sdk.ENCODING, after=0, hold=hold)


@router.get(
    "/{chat_id}/stream",
    summary="Resume a chat's answer (the transport's reconnectToStream)",
    response_class=Response,
    dependencies=[Depends(only_query())],
    responses={
        200: _STREAM,
        204: {"description": "No answer of this chat is running"},
        **error_responses(400, 401, 404, 429, 503),
    },
)
async def resume_stream(
    chat_id: Annotated[
        str, Path(description="The chat (context) id.", json_schema_extra={"pattern": CONTEXT_ID_PATTERN})
    ],
    request: Request,
    edge: Edge,
    caller: CallerDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", description="Resume after this event.")] = None,
) -> Response:
    after = start_position(last_event_id, None)
    conversations = edge.tasks.conversations
    assert conversations is not None, "the edge app always builds its conversations"
    record = await conversations.latest(parse_context_id(chat_id), caller.tenant)
    if record is None or (record.terminal and after == 0):
        return Response(status_code=204)
    return await open_stream(edge, request, record, ai_sdk.ENCODING, after=after)
