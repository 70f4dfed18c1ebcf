"""Request bodies of the HTTP API as pydantic models: FastAPI validates with them and documents them in /openapi.json.

They live at the HTTP boundary only; each converts itself into the msgspec wire type the domain takes
(`TaskSubmittedData`). Responses are the msgspec wire types themselves (see `openapi.py` for their schemas).
Models are strict (no "5" for 5) and forbid unknown fields, so every bad body is a 422 naming the field.
"""

from __future__ import annotations

from typing import Any, Literal, Self

import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sluice.events import Budget, HistoryMessage, TaskSubmittedData
from sluice.ids import CONTEXT_ID_PATTERN
from stream_edge.commands import AGENT_PATTERN

__all__ = ["BudgetBody", "CancelBody", "ErrorBody", "ErrorDetail", "HistoryItem", "InputBody", "TaskCreateBody"]

# Largest integer a budget can name: JSON numbers beyond 2^53 lose precision in browsers.
_MAX_INT = 2**53


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class HistoryItem(_Body):
    role: Literal["user", "assistant", "system"]
    content: str


class BudgetBody(_Body):
    """Limits of one task; each is optional and positive. The runner warns at 80% and stops at 100%."""

    max_output_tokens: int | None = Field(default=None, gt=0, le=_MAX_INT)
    max_cost_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_steps: int | None = Field(default=None, gt=0, le=_MAX_INT)
    timeout_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class TaskCreateBody(_Body):
    """`POST /v1/tasks`. Any agent name of the right shape is accepted here; the runner fails the task with
    `unknown_agent` if it has no such agent (the edge does not know the runners' agent list)."""

    input: str = Field(min_length=1, description="The user's message; not empty or only whitespace.")
    agent: str = Field(default="assistant", pattern=AGENT_PATTERN, description="Which agent (or crew) runs the task.")
    context_id: str | None = Field(
        default=None,
        pattern=CONTEXT_ID_PATTERN,
        description="Continue this conversation: the context's earlier turns become the task's history. "
        "Without one, the task starts a new context (its id is in the record).",
    )
    history: list[HistoryItem] = Field(default_factory=list, description="Earlier turns of the conversation.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form, stored with the task.")
    budget: BudgetBody = Field(default_factory=lambda: BudgetBody())

    @field_validator("input")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty or only whitespace")
        return value

    @field_validator("metadata")
    @classmethod
    def _encodable(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            msgspec.json.encode(value)
        except (TypeError, OverflowError, msgspec.EncodeError) as exc:
            raise ValueError(f"cannot be stored as JSON: {exc}") from None
        return value

    def to_wire(self) -> TaskSubmittedData:
        return TaskSubmittedData(
            input=self.input,
            agent=self.agent,
            history=[HistoryMessage(role=h.role, content=h.content) for h in self.history],
            metadata=self.metadata,
            budget=Budget(**self.budget.model_dump(exclude_none=True)),
            context_id=self.context_id,
        )


class InputBody(_Body):
    """`POST /v1/tasks/{id}/input`: exactly one of `input` (an answer) and `approve` (a decision)."""

    input: str | None = Field(default=None, min_length=1, description="The answer to the task's question.")
    approve: bool | None = Field(default=None, description="The decision on a tool call that asked for approval.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.input is None) == (self.approve is None):
            raise ValueError("give exactly one of `input` and `approve`")
        if self.input is not None and not self.input.strip():
            raise ValueError("`input` must not be empty or only whitespace")
        return self


class CancelBody(_Body):
    """`POST /v1/tasks/{id}/cancel` (the body is optional)."""

    reason: str = Field(default="", max_length=1000, description="Recorded in the task.canceled event.")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable, e.g. `task_not_found`.")
    message: str = Field(description="For humans.")


class ErrorBody(BaseModel):
    """Every error response: `{"error": {"code", "message"}}`."""

    error: ErrorDetail
