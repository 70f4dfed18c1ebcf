"""The per-tenant abuse limits of the edge (CONTRACT §8), counted in NATS so that every replica sees the same counts:
unfinished tasks (`sluice.active_tasks`), creations per minute (`rate.py`), open streams (`streams.py`).
`creations.py` is the check of a task creation."""

from stream_edge.limits.creations import CreationLimits
from stream_edge.limits.rate import CreationRate
from stream_edge.limits.streams import OpenStreams, StreamHold

__all__ = ["CreationLimits", "CreationRate", "OpenStreams", "StreamHold"]
