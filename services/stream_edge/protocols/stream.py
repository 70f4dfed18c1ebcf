"""Opening a web protocol's stream of a task: the native events route's checks, then the streaming engine.

The protocols are encodings in the engine (`ai_sdk.ENCODING`, `ag_ui.encoding_for`), so their streams share the
task's feed with every SSE and NDJSON client — each event read from JetStream once and encoded once per format in
use — and get the engine's catch-up, heartbeats, slow-client cut-off and shutdown. The checks are the native
route's (`admit_stream`: who may read this task; `open_stream`: a cursor from the future, past the end, draining).
"""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from sluice.events import TaskRecord
from stream_edge import routes_events
from stream_edge.limits import StreamHold
from stream_edge.runtime import EdgeRuntime
from stream_edge.streaming import Encoding, StreamRequest

__all__ = ["open_stream"]


async def open_stream(
    edge: EdgeRuntime,
    request: Request,
    record: TaskRecord,
    encoding: Encoding,
    *,
    after: int,
    hold: StreamHold | None = None,
) -> Response:
    """The task's events after `after` in `encoding`, live until the terminal event (`X-Sluice-Task-Id` names it).
    `hold`: the tenant's open-stream count, if the route took it already (before it created the task)."""
    try:
        await routes_events.admit_stream(edge, request, record)
    except BaseException:
        if hold is not None:
            hold.release()
        raise
    response = await routes_events.open_stream(edge, StreamRequest(record.id, encoding, after), record, hold)
    response.headers["X-Sluice-Task-Id"] = record.id
    return response
