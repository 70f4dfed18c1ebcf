"""The live catalog over NATS (CONTRACT §9): runners advertise what they serve, everyone else watches.

- `adverts`: the wire types of the `sluice-catalog` bucket.
- `Advertiser`: a runner's own advertisement, refreshed while it lives and removed when it stops.
- `CatalogView`: a watcher's live picture — tools and agents with how many runners serve each, conflicts refused.
"""

from __future__ import annotations

from sluice.catalog.advertiser import Advertiser
from sluice.catalog.adverts import AgentAdvert, KnownAgent, RunnerAdvert, RunnerKind, ToolAdvert
from sluice.catalog.view import AgentEntry, CatalogView, ToolEntry

__all__ = [
    "Advertiser",
    "AgentAdvert",
    "AgentEntry",
    "CatalogView",
    "KnownAgent",
    "RunnerAdvert",
    "RunnerKind",
    "ToolAdvert",
    "ToolEntry",
]
