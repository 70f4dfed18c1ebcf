"""The engine's figures: plain counters the metrics collector reads at scrape time (no per-event metric calls)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Counters"]


@dataclass
class Counters:
    events_delivered: int = 0
    catchup_replays: int = 0
    catchup_lag_events: int = 0  # events the last caught-up stream replayed from JetStream
    catchup_lag_events_sum: int = 0
    catchup_lag_events_count: int = 0
    catchup_lag_events_max: int = 0
    catchup_bulk: int = 0  # catch-ups long enough to read through a pull consumer
    slow_clients_cut: int = 0
    gaps_served: int = 0
    streams_opened: int = 0
    feeds_created: int = 0

    def record_catchup(self, events: int, *, bulk: bool = False) -> None:
        self.catchup_bulk += bulk
        self.catchup_lag_events = events
        self.catchup_lag_events_sum += events
        self.catchup_lag_events_count += 1
        self.catchup_lag_events_max = max(self.catchup_lag_events_max, events)
