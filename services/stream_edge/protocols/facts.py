"""What a protocol's frames may name besides the event itself: a task's fixed facts, from its record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sluice.events import TaskRecord

__all__ = ["AG_UI_METADATA", "TaskFacts"]

AG_UI_METADATA = "ag_ui"  # the record's metadata key for what an AG-UI client named (`runId`, `threadId`)


@dataclass(frozen=True, slots=True)
class TaskFacts:
    """Fixed for the life of a task: the same on every replica, so frames built from them are too."""

    task_id: str
    context_id: str
    run_id: str  # the AG-UI run id: the client's `runId` when it gave one, else the task id

    @classmethod
    def of(cls, record: TaskRecord) -> TaskFacts:
        ag_ui: Any = record.metadata.get(AG_UI_METADATA)
        run_id = ag_ui.get("run_id") if isinstance(ag_ui, dict) else None
        return cls(
            task_id=record.id,
            context_id=record.context_id or record.id,
            run_id=run_id if isinstance(run_id, str) and run_id else record.id,
        )
