"""How a stream opens, decided before the response exists (so that a failure here is an HTTP error, not a broken
stream): where its events come from (the task's feed at once, or a catch-up read of the log first), the first
catch-up batch, what it says before its first logged event (`task.snapshot`, `stream.gap`), and whether the
client's position is already the task's terminal event."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sluice import subjects
from sluice.clock import now_iso
from sluice.errors import Unavailable
from sluice.events import TERMINAL_TYPES, StreamGap, StreamGapData, TaskRecord, TaskSnapshot, encode
from sluice.ids import parse_event_id
from stream_edge.streaming.context import StreamContext
from stream_edge.streaming.encodings import Encoding
from stream_edge.streaming.feed import Feed
from stream_edge.streaming.link import Link
from stream_edge.streaming.reader import REQUEST_TIMEOUT_S, Batch, LogReader
from stream_edge.streaming.ring import Subscriber

__all__ = ["SOURCE", "Opening", "first_batch", "gap_frame", "open_stream", "past_terminal", "snapshot_frame"]

SOURCE = "stream-edge"
_SUBMITTED = b"task.submitted"


@dataclass(slots=True)
class Opening:
    """How a stream starts. Exactly one of `feed` (near the head: follow it at once; `sub` is attached) and
    `reader` (catch up from the log first, its first batch in) is set, unless `past_end`."""

    frames: list[bytes] = field(default_factory=list)  # sent before the first logged event
    feed: Feed | None = None
    reader: LogReader | None = None
    past_end: bool = False  # the client's position is the terminal event: send the frames, then end


async def open_stream(
    ctx: StreamContext,
    sub: Subscriber,
    task_id: str,
    follow: bool,
    snapshot: TaskRecord | None,
    first_seq: int | None,
    wait: Callable[[], Awaitable[None]],
) -> Opening:
    """Opens `sub`'s stream from its position (`sub.last_seq`, moved to the snapshot's event if there is one).
    `first_seq`: the task's first event, for a stream opened with the task's creation."""
    enc = sub.encoding
    if follow and snapshot is None and first_seq is not None and sub.last_seq < first_seq:
        sub.last_seq = first_seq - 1  # the same position: nothing of the task lies before first_seq
        fresh = ctx.feeds.feed_for(task_id, first_seq - 1)
        if fresh.covers(first_seq - 1):
            fresh.attach(sub)
            return Opening(feed=fresh)
    opened = Opening()
    if snapshot is not None:
        opened.frames.append(snapshot_frame(enc, snapshot))
        sub.last_seq = parse_event_id(snapshot.last_event_id or "0")
    after = sub.last_seq
    feed = ctx.feeds.live(task_id)
    if follow and feed is not None and feed.covers(after):
        feed.attach(sub)  # near the head: the feed's ring has everything after `after`
        opened.feed = feed
        return opened
    reader = opened.reader = LogReader(ctx.link, task_id, sub.wake)
    reader.start(after)
    first = await first_batch(reader, task_id, wait)
    ctx.counters.catchup_replays += 1
    if first is not None:
        gap = await gap_frame(ctx.link, enc, task_id, after, first)
        if gap is not None:
            opened.frames.append(gap)
            ctx.counters.gaps_served += 1
    elif after > 0:
        opened.past_end = await past_terminal(ctx.link, task_id, after)
    return opened


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
