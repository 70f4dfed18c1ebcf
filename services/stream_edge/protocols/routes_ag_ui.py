"""`POST /v1/ag-ui` and `GET /v1/ag-ui/runs/{run_id}/events`: AG-UI's `HttpAgent`, served unchanged (§10).

A `RunAgentInput` is one task: `threadId` is the Sluice context, the last message (the user's) the input,
`forwardedProps.agent` the agent. The earlier turns come from the context's logs (as for every task), so the
messages the client sends back are not replayed into the model; the client's `tools` and `state` are not used
(Sluice's tools run in its tool-runners). The `runId` is the idempotency key: the same run posted again is the
same task, and `GET /v1/ag-ui/runs/{run_id}/events` (with `Last-Event-ID`) finds it to resume. A task created
elsewhere (`POST /v1/tasks`) is a run too, its task id as run id.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from ag_ui.core import RunAgentInput, UserMessage
from fastapi import APIRouter, Depends, Header, Path, Request
from starlette.responses import Response

from sluice.errors import InvalidInput, NotFound, Unavailable
from sluice.events import TaskRecord, TaskSubmittedData
from sluice.ids import TASK_ID_PATTERN, is_task_id, parse_context_id
from stream_edge.auth.deps import CallerDep
from stream_edge.commands import validate_submission
from stream_edge.deps import edge_of, json_body, only_query
from stream_edge.openapi import error_responses
from stream_edge.protocols import ag_ui
from stream_edge.protocols.facts import AG_UI_METADATA, TaskFacts
from stream_edge.protocols.stream import open_stream
from stream_edge.routes_events import start_position
from stream_edge.runtime import EdgeRuntime

__all__ = ["router"]

router = APIRouter(prefix="/v1/ag-ui", tags=["ag-ui"])
Edge = Annotated[EdgeRuntime, Depends(edge_of)]

MAX_MESSAGES = 1000

_STREAM = {
    "description": "The run as AG-UI events over SSE",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


def _run_id(value: str) -> str:
    if not is_task_id(value):
        raise InvalidInput("invalid_run_id", f"runId must match {TASK_ID_PATTERN}")
    return value


def _run_key(run_id: str) -> str:
    return "ag-ui-run-" + hashlib.sha256(run_id.encode()).hexdigest()[:48]


def _user_text(run: RunAgentInput) -> str:
    if not run.messages:
        raise InvalidInput("invalid_input", "messages must hold the user's message")
    if len(run.messages) > MAX_MESSAGES:
        raise InvalidInput("too_many_messages", f"at most {MAX_MESSAGES} messages")
    last = run.messages[-1]
    if not isinstance(last, UserMessage):
        raise InvalidInput("last_message_not_user", f"the last message must be the user's, not {last.role!r}")
    if isinstance(last.content, str):
        text = last.content
    else:
        text = "\n".join(part.text for part in last.content if getattr(part, "type", None) == "text")  # type: ignore[union-attr]
    if not text.strip():
        raise InvalidInput("invalid_input", "the last user message has no text")
    return text


def _agent(run: RunAgentInput) -> str:
    props: Any = run.forwarded_props
    agent = props.get("agent", "assistant") if isinstance(props, dict) else "assistant"
    if not isinstance(agent, str):
        raise InvalidInput("invalid_agent", "forwardedProps.agent must be a string")
    return agent


@router.post(
    "",
    summary="Run an agent (AG-UI)",
    response_class=Response,
    dependencies=[Depends(only_query()), Depends(json_body)],
    responses={200: _STREAM, **error_responses(400, 401, 413, 415, 422, 429, 503)},
)
async def run_agent(run: RunAgentInput, request: Request, edge: Edge, caller: CallerDep) -> Response:
    run_id = _run_id(run.run_id)
    context_id = parse_context_id(run.thread_id, field="threadId")
    submission = TaskSubmittedData(
        input=_user_text(run),
        agent=_agent(run),
        history=[],
        metadata={AG_UI_METADATA: {"run_id": run_id, "thread_id": context_id}},
        context_id=context_id,
    )
    validate_submission(submission)
    if edge.draining:
        raise Unavailable("shutting_down", "this edge is shutting down; retry on another", retry_after_s=1)
    hold = edge.hold_stream(caller.tenant)  # a tenant at its limit of open streams creates no task (429)
    try:
        record = await edge.tasks.submit(submission, idempotency_key=_run_key(run_id), tenant=caller.tenant)
    except BaseException:
        hold.release()
        raise
    encoding = ag_ui.encoding_for(TaskFacts.of(record))
    return await open_stream(edge, request, record, encoding, after=0, hold=hold)


async def _run_record(edge: EdgeRuntime, run_id: str, tenant: str) -> TaskRecord:
    """The run's task, if it is the tenant's (run ids, like idempotency keys, are per tenant)."""
    owner = await edge.store.idempotency_owner(_run_key(run_id), tenant)
    record = await edge.tasks.find(owner or run_id, tenant=tenant)
    if record is None:
        raise NotFound("run_not_found", f"no run {run_id}")
    return record


@router.get(
    "/runs/{run_id}/events",
    summary="Resume a run's AG-UI events",
    response_class=Response,
    dependencies=[Depends(only_query())],
    responses={200: _STREAM, **error_responses(400, 401, 404, 429, 503)},
)
async def run_events(
    run_id: Annotated[str, Path(description="The AG-UI run id.", json_schema_extra={"pattern": TASK_ID_PATTERN})],
    request: Request,
    edge: Edge,
    caller: CallerDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", description="Resume after this event.")] = None,
) -> Response:
    after = start_position(last_event_id, None)
    record = await _run_record(edge, _run_id(run_id), caller.tenant)
    return await open_stream(edge, request, record, ag_ui.encoding_for(TaskFacts.of(record)), after=after)
