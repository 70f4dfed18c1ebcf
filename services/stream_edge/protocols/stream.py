"""Serving a task's log in a web protocol's encoding (the adapter between the protocol mappings and the engine).

A `Protocol` is a pure mapping — `encode(seq, event, facts)` → the SSE bytes of one event, its id on the last
frame — plus the response headers the protocol names. `open_stream` checks what can be checked before the first
byte (shutting down → 503, a cursor from the future → 400), then follows the log from the cursor with
`sluice.eventlog.follow_log` (what is stored, then live, each event once), sends a keep-alive comment while idle,
and ends right after the terminal event.

Each stream reads the log itself; the mapping is what the shared engine's encoder registry takes, one encoding
per protocol, when the native streams' engine serves these formats too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import msgspec
from starlette.responses import Response, StreamingResponse

from sluice.errors import Unavailable
from sluice.eventlog import LogEntry, follow_log
from sluice.events import TERMINAL_TYPES, Event, TaskRecord
from stream_edge.protocols.facts import TaskFacts
from stream_edge.routes_events import check_not_future
from stream_edge.runtime import EdgeRuntime
from stream_edge.streaming import frames

__all__ = ["Protocol", "open_stream"]

log = logging.getLogger(__name__)

_RETRY_MS = 2000  # as the native streams: how long an EventSource waits before reconnecting
_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}


@dataclass(frozen=True, slots=True)
class Protocol:
    name: str
    encode: Callable[[int, Event, TaskFacts], bytes]
    headers: tuple[tuple[str, str], ...] = ()


async def open_stream(
    edge: EdgeRuntime, record: TaskRecord, *, after: int, protocol: Protocol, status: int = 200
) -> Response:
    """The task's events after `after` in `protocol`'s encoding, live until the terminal event."""
    if edge.draining:
        raise Unavailable("shutting_down", "this edge is shutting down; reconnect with Last-Event-ID", retry_after_s=1)
    await check_not_future(edge, record, after)
    ended = record.terminal and record.last_event_id is not None and after >= int(record.last_event_id)
    body = _frames(edge, record.id, after, protocol, TaskFacts.of(record), ended=ended)
    headers = {**_HEADERS, **dict(protocol.headers), "X-Sluice-Task-Id": record.id}
    return StreamingResponse(body, status_code=status, media_type=frames.SSE_CONTENT_TYPE, headers=headers)


async def _frames(
    edge: EdgeRuntime, task_id: str, after: int, protocol: Protocol, facts: TaskFacts, *, ended: bool
) -> AsyncIterator[bytes]:
    yield frames.sse_retry(_RETRY_MS)
    if ended:
        return  # at or past the terminal event: nothing of this task can follow
    entries = follow_log(edge.bus, task_id, after=after)
    pending: asyncio.Future[LogEntry] | None = None
    try:
        while not edge.draining:
            if pending is None:
                pending = asyncio.ensure_future(anext(entries))
            done, _ = await asyncio.wait({pending}, timeout=edge.settings.heartbeat_s)
            if not done:
                yield frames.SSE_KEEPALIVE
                continue
            try:
                entry = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            body = _encoded(protocol, entry, facts)
            if body:
                yield body
            if entry.type in TERMINAL_TYPES:
                return
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        await aclose(entries)


async def aclose(entries: AsyncIterator[LogEntry]) -> None:
    close = getattr(entries, "aclose", None)  # an async generator: end its NATS subscription now
    if close is not None:
        await close()


def _encoded(protocol: Protocol, entry: LogEntry, facts: TaskFacts) -> bytes:
    try:
        event = entry.decode()
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        log.warning("leaving out an event %s cannot read: %s", protocol.name, exc, extra={"seq": entry.seq})
        return b""
    return protocol.encode(entry.seq, event, facts)
