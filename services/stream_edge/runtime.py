"""What one edge process holds while it serves: the bus, the task service, the stream hub — and its readiness.

Built by the app's lifespan, reachable from routes through `deps.runtime`. `drain()` ends the open streams (within
the shutdown grace) and is safe to call twice: the server calls it as soon as SIGTERM arrives, the lifespan again
at the end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import msgspec
import nats.errors
import nats.js.errors
from starlette.responses import Response

from sluice.bus import Bus
from sluice.catalog import CatalogView
from sluice.events import TaskRecord
from sluice.permissions import needs_of
from sluice.records import TaskStore
from stream_edge.auth.stream_tokens import StreamTokens
from stream_edge.commands import TaskService
from stream_edge.limits import OpenStreams, StreamHold
from stream_edge.settings import EdgeSettings
from stream_edge.streaming.request import StreamRequest

__all__ = ["EdgeRuntime", "StreamFormat", "StreamHubLike"]

log = logging.getLogger(__name__)

StreamFormat = Literal["sse", "ndjson"]
_READY_TIMEOUT_S = 2.0
_STREAMS = needs_of("edge").streams  # what the edge uses, as its NATS identity may ask about it


class StreamHubLike(Protocol):
    """What the edge needs of `stream_edge.streaming.StreamHub`."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def open(self, request: StreamRequest, *, on_end: Callable[[], None] | None = None) -> Response: ...

    @property
    def stats(self) -> Mapping[str, int | float]: ...


@dataclass
class EdgeRuntime:
    settings: EdgeSettings
    bus: Bus
    store: TaskStore
    tasks: TaskService
    hub: StreamHubLike
    catalog: CatalogView
    # Signs the stream tokens handed out with records (CONTRACT §8); the app passes the one its guard verifies with.
    tokens: StreamTokens = field(default_factory=lambda: StreamTokens(None, 3600))
    # The tenants' open streams across replicas (CONTRACT §8); the app passes the one it started.
    streams: OpenStreams | None = None
    draining: bool = False
    _hub_stopped: bool = False
    _stop_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def hold_stream(self, tenant: str) -> StreamHold:
        """Counts one more open stream of `tenant` (429 `tenant_limit` at its limit); release it when it ends."""
        return self.streams.hold(tenant) if self.streams is not None else StreamHold(None, tenant)

    def try_hold_stream(self, tenant: str) -> StreamHold | None:
        """As `hold_stream`, None instead of the refusal."""
        return self.streams.try_hold(tenant) if self.streams is not None else StreamHold(None, tenant)

    def served(self, record: TaskRecord) -> TaskRecord:
        """The record as its tenant is answered it: with a fresh stream token for its event stream."""
        return msgspec.structs.replace(record, stream_token=self.tokens.issue(record.id, record.tenant))

    async def readiness(self) -> str | None:
        """None when ready to serve; otherwise why not."""
        if self.draining:
            return "shutting down"
        if not self.bus.state.connected:
            return "not connected to NATS"
        try:
            async with asyncio.timeout(_READY_TIMEOUT_S):
                for name in _STREAMS:
                    await self.bus.js.stream_info(name)
        except nats.js.errors.NotFoundError:
            return "a JetStream stream is missing"
        except (nats.errors.Error, TimeoutError) as exc:
            return f"JetStream does not answer ({type(exc).__name__})"
        return None

    async def drain(self) -> None:
        """Stop taking streams and end the open ones (the hub honours the shutdown grace)."""
        self.draining = True
        async with self._stop_lock:
            if self._hub_stopped:
                return
            self._hub_stopped = True
            log.info("draining event streams", extra={"streams": self.hub.stats.get("active_streams", 0)})
            await self.hub.stop()
