"""`/v1/agents` and `/v1/tools`: the live catalog (CONTRACT §9), each entry with how many live runners serve it.

An agent whose runners are all down right now is listed with `runners: 0` (its tasks wait in the queue); a
withdrawn one is not listed, and is refused at submit.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.responses import JSONResponse

from stream_edge.deps import edge_of, only_query
from stream_edge.openapi import error_responses
from stream_edge.runtime import EdgeRuntime

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["catalog"])
Edge = Annotated[EdgeRuntime, Depends(edge_of)]

_AGENTS_EXAMPLE: dict[str, Any] = {
    "agents": [
        {"name": "assistant", "description": "A general assistant", "crew": False, "tools": ["calculator"],
         "stages": [], "approval_tools": [], "runners": 2},
    ]
}  # fmt: skip
_TOOLS_EXAMPLE: dict[str, Any] = {
    "tools": [
        {"name": "calculator", "description": "Evaluate an arithmetic expression.",
         "input_schema": {"type": "object", "properties": {"expression": {"type": "string"}}}, "timeout_s": 10.0,
         "runners": 1},
    ]
}  # fmt: skip


@router.get(
    "/agents",
    summary="The agents and crews that may be submitted",
    dependencies=[Depends(only_query())],
    responses={200: {"content": {"application/json": {"example": _AGENTS_EXAMPLE}}}, **error_responses(400, 503)},
)
async def list_agents(edge: Edge) -> JSONResponse:
    return JSONResponse({"agents": [entry.to_json() for entry in edge.catalog.agents()]})


@router.get(
    "/tools",
    summary="The tools live tool-runners serve",
    dependencies=[Depends(only_query())],
    responses={200: {"content": {"application/json": {"example": _TOOLS_EXAMPLE}}}, **error_responses(400, 503)},
)
async def list_tools(edge: Edge) -> JSONResponse:
    return JSONResponse({"tools": [entry.to_json() for entry in edge.catalog.tools()]})
