"""What a stream says before its first logged event, decided before the response exists (so that a failure here
is an HTTP error, not a broken stream): the first catch-up batch, `stream.gap`, `task.snapshot`, and whether the
client's position is already past the task's terminal event."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sluice import subjects
from sluice.clock import now_iso
from sluice.errors import Unavailable
from sluice.events import TERMINAL_TYPES, StreamGap, StreamGapData, TaskRecord, TaskSnapshot, encode
from stream_edge.streaming.encodings import Encoding
from stream_edge.streaming.link import Link
from stream_edge.streaming.reader import REQUEST_TIMEOUT_S, Batch, LogReader

__all__ = ["SOURCE", "first_batch", "gap_frame", "past_terminal", "snapshot_frame"]

SOURCE = "stream-edge"
_SUBMITTED = b"task.submitted"


async def first_batch(reader: LogReader, task_id: str, wait: Callable[[], Awaitable[None]]) -> Batch | None:
    """Reads until the first batch is in (or the log has nothing after the reader's start); raises Unavailable."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2 * REQUEST_TIMEOUT_S
    while not reader.has_batch and not reader.exhausted:
        if reader.error is not None:
            raise reader.error
        if loop.time() > deadline:
            raise Unavailable("nats_timeout", f"reading the log of task {task_id} timed out")
        await reader.request()
        if not reader.has_batch and not reader.exhausted and reader.error is None:
            await wait()
    return reader.peek()


async def gap_frame(link: Link, enc: Encoding, task_id: str, after: int, first: Batch) -> bytes | None:
    """CONTRACT §5: if events before the client's position have expired, a `stream.gap` to send before the rest."""
    first_seq, first_type = first.seqs[0], first.types[0]
    if first_type == _SUBMITTED or first_seq == after + 1:
        return None
    if after == 0:
        oldest = first_seq
    else:
        found = await link.oldest_seq(task_id)
        if found is None or found[1] == "task.submitted":
            return None
        oldest = found[0]
    if after >= oldest - 1:
        return None
    data = StreamGapData(after=str(after), oldest=str(oldest))
    gap = StreamGap(task_id=task_id, ts=now_iso(), source=SOURCE, data=data)
    return enc.frame(None, "stream.gap", encode(gap))


async def past_terminal(link: Link, task_id: str, after: int) -> bool:
    """Nothing follows `after`: is `after` the task's terminal event (so nothing ever will)? Asked of the stream
    leader: a lagging replica could hide the terminal event and hold the stream open."""
    subject = await link.subject_at(after)
    return (
        subject is not None
        and subjects.task_id_of(subject) == task_id
        and subjects.event_type_of(subject) in TERMINAL_TYPES
    )


def snapshot_frame(enc: Encoding, record: TaskRecord) -> bytes:
    event_id = record.last_event_id or "0"
    body = encode(TaskSnapshot(task_id=record.id, ts=now_iso(), source=SOURCE, id=event_id, data=record))
    return enc.frame(event_id, "task.snapshot", body)
