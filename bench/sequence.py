"""Order checks for a benchmark reader: each event carries its publish number n and send time, and a reader counts
what it received, the gaps (numbers skipped) and the duplicates (numbers seen again), and the latency of each."""

from __future__ import annotations

__all__ = ["Tally"]


class Tally:
    def __init__(self, latencies: list[float] | None = None) -> None:
        self.expected = 0
        self.received = self.gaps = self.dups = 0
        self.latencies: list[float] = [] if latencies is None else latencies

    def see(self, n: int, latency_s: float) -> None:
        self.received += 1
        self.latencies.append(latency_s)
        if n == self.expected:
            self.expected = n + 1
        elif n > self.expected:
            self.gaps += n - self.expected
            self.expected = n + 1
        else:
            self.dups += 1
