"""What a client stream may use of the engine: one instance shared by every stream of a process (the hub makes
it). Streams reach the rest of the engine through this and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stream_edge.streaming.counters import Counters
from stream_edge.streaming.feeds import FeedRegistry
from stream_edge.streaming.link import Link

if TYPE_CHECKING:
    from stream_edge.streaming.client import ClientStream

__all__ = ["StreamContext"]


@dataclass(frozen=True, slots=True)
class StreamContext:
    """What a client stream may use: one instance shared by every stream of a process."""

    link: Link
    feeds: FeedRegistry
    counters: Counters
    retry_ms: int
    release: Callable[[ClientStream], None]  # the stream is over: forget it
