"""`GET /v1/contexts/{id}` (CONTRACT §10): a conversation and its tasks, oldest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from starlette.responses import Response

from sluice.events import encode
from sluice.ids import CONTEXT_ID_PATTERN, parse_context_id
from stream_edge.auth.deps import CallerDep
from stream_edge.contexts import ContextView
from stream_edge.deps import edge_of, only_query
from stream_edge.negotiation import JSON
from stream_edge.openapi import error_responses
from stream_edge.runtime import EdgeRuntime

__all__ = ["router"]

router = APIRouter(prefix="/v1/contexts", tags=["contexts"])

ContextIdPath = Annotated[
    str,
    Path(
        description="The context id (`^[A-Za-z0-9_-]{8,64}$`): a record's `context_id`, an A2A `contextId`, an AI SDK "
        "chat `id` or an AG-UI `threadId`.",
        json_schema_extra={"pattern": CONTEXT_ID_PATTERN},
    ),
]


@router.get(
    "/{context_id}",
    summary="Read a conversation",
    response_class=Response,
    dependencies=[Depends(only_query())],
    responses={
        200: {
            "description": "The context and its task records, oldest first",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ContextView"}}},
        },
        **error_responses(400, 401, 404, 503),
    },
)
async def get_context(
    context_id: ContextIdPath, edge: Annotated[EdgeRuntime, Depends(edge_of)], caller: CallerDep
) -> Response:
    """Another tenant's context is `404 context_not_found`, as one that does not exist."""
    conversations = edge.tasks.conversations
    assert conversations is not None, "the edge app always builds its conversations"
    context, records = await conversations.tasks(parse_context_id(context_id), caller.tenant)
    view = ContextView(id=context.id, created_at=context.created_at, updated_at=context.updated_at, tasks=records)
    return Response(encode(view), media_type=JSON)
