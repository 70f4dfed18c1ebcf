"""What a client asked to stream, parsed once at the route: the engine takes it as given and never re-checks it."""

from __future__ import annotations

from dataclasses import dataclass

from sluice.events import TaskRecord
from stream_edge.streaming.encodings import Encoding

__all__ = ["StreamRequest"]


@dataclass(frozen=True, slots=True)
class StreamRequest:
    task_id: str  # a valid task id (`sluice.ids.parse_task_id`) of a task that exists
    encoding: Encoding  # the wire format, chosen by `encodings.choose`
    after: int = 0  # send the events after this event id (0: from the first)
    follow: bool = True  # False: what exists now, then end
    snapshot: TaskRecord | None = None  # start with a `task.snapshot` of this record, then events after it
    # The seq of the task's first event, for a task the same request created: nothing of the task lies before it,
    # so the stream follows the task's feed from there at once, without reading the log first (the first token
    # sooner). None: unknown (read the log from `after`).
    first_seq: int | None = None

    @property
    def fmt(self) -> str:
        return self.encoding.name
