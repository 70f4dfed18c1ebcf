"""A feed's received events, the bytes each encoding makes of them, and the clients' cursors into them.

Events are kept as parallel lists — sequence, type, stored payload, and per encoding in use the bytes made from
them on first use — and every client is handed the same bytes. A client is a `Subscriber`: a cursor (an absolute
position, stable across trims) and the seq it sent last. Nothing is copied per client: a client's "buffer" is the
stretch between its cursor and the head, measured by the cumulative byte counts, not stored.

The lists are trimmed behind the slowest client, keeping a small ring of recent events so that a client joining
near the head needs no trip to JetStream. How far behind a client may fall is the feed's rule (`lag_bytes`).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable

from stream_edge.streaming.encodings import Encoding

__all__ = ["MAX_CHUNK_BYTES", "EventRing", "Subscriber"]

# What a stored event costs a client besides its payload (id, event and data lines): for the buffer measure.
FRAME_OVERHEAD = 48
# Kept behind the slowest client for joiners near the head.
RING_EVENTS = 512
RING_BYTES = 512 * 1024
# One send never carries more than this; a client further behind gets several.
MAX_CHUNK_BYTES = 256 * 1024


class Subscriber:
    """One client's view of a feed. Its pump owns it; the ring moves `cursor`/`last_seq` only through `take`."""

    __slots__ = ("closed", "cursor", "encoding", "heartbeat_due", "in_send", "last_seq", "on_cut", "waiter", "waiting")

    def __init__(self, encoding: Encoding, last_seq: int, on_cut: Callable[[], None]) -> None:
        self.encoding = encoding
        self.last_seq = last_seq
        self.cursor = 0
        self.waiter: asyncio.Future[None] | None = None
        self.waiting = False  # on a feed's wait list
        self.in_send = False
        self.heartbeat_due = False
        self.closed: str | None = None  # why the stream must end: disconnect, cut, shutdown
        self.on_cut = on_cut

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class EventRing:
    __slots__ = ("_base", "_cum", "_cum_base", "_encoded", "_joined", "_payloads", "_seqs", "_types", "total",
                 "trimmed_through")  # fmt: skip

    def __init__(self) -> None:
        self._base = 0  # absolute position of index 0 of the lists
        self._seqs: list[int] = []
        self._types: list[bytes] = []
        self._payloads: list[bytes] = []
        self._encoded: dict[str, list[bytes | None]] = {}  # encoding name → bytes per event (None: not made yet)
        self._cum: list[int] = []  # cumulative measured bytes up to and including each event
        self._cum_base = 0  # cumulative bytes before index 0
        self._joined: tuple[str, int, int, bytes] | None = None  # the last chunk made: often wanted again at once
        self.total = 0  # measured bytes of every event ever appended
        self.trimmed_through = 0  # the highest seq dropped from the lists

    @property
    def head(self) -> int:
        return self._base + len(self._seqs)

    def __len__(self) -> int:
        return len(self._seqs)

    def append(self, seq: int, type_b: bytes, payload: bytes) -> None:
        self._seqs.append(seq)
        self._types.append(type_b)
        self._payloads.append(payload)
        for encoded in self._encoded.values():
            encoded.append(None)
        self.total += len(payload) + FRAME_OVERHEAD
        self._cum.append(self.total)

    def position_after(self, last_seq: int) -> int:
        """The absolute position of the first event after `last_seq`."""
        return self._base + bisect_left(self._seqs, last_seq + 1)

    def bytes_before(self, pos: int) -> int:
        """Measured bytes of everything before absolute position `pos`."""
        index = pos - self._base
        return self._cum[index - 1] if index > 0 else self._cum_base

    def lag_bytes(self, sub: Subscriber) -> int:
        return self.total - self.bytes_before(sub.cursor)

    def take(self, sub: Subscriber) -> tuple[bytes, int]:
        """The client's next bytes (up to MAX_CHUNK_BYTES) and how many events they cover; advances its cursor.
        The bytes may be empty with a count > 0 (an encoding that leaves those events out)."""
        start, head, base = sub.cursor, self.head, self._base
        seqs = self._seqs
        while start < head and seqs[start - base] <= sub.last_seq:
            start += 1
        if start >= head:
            sub.cursor = head
            return b"", 0
        end = head
        if self._cum[end - 1 - base] - self.bytes_before(start) > MAX_CHUNK_BYTES:
            end = max(start + 1, base + bisect_left(self._cum, self.bytes_before(start) + MAX_CHUNK_BYTES))
        chunk = self._join(sub.encoding, start, end)
        sub.cursor = end
        sub.last_seq = seqs[end - 1 - base]
        return chunk, end - start

    def type_at(self, pos: int) -> bytes:
        return self._types[pos - self._base]

    def _join(self, enc: Encoding, start: int, end: int) -> bytes:
        joined = self._joined
        if joined is not None and joined[0] == enc.name and joined[1] == start and joined[2] == end:
            return joined[3]
        base = self._base
        encoded = self._encoded.get(enc.name)
        if encoded is None:
            encoded = self._encoded[enc.name] = [None] * len(self._seqs)
        seqs, types, payloads, make = self._seqs, self._types, self._payloads, enc.event
        for i in range(start - base, end - base):
            if encoded[i] is None:
                encoded[i] = make(seqs[i], types[i], payloads[i])
        chunk = b"".join(encoded[start - base : end - base])  # type: ignore[arg-type]
        self._joined = (enc.name, start, end, chunk)
        return chunk

    def ring_start(self) -> int:
        """The oldest position the ring keeps for joiners (the last RING_EVENTS events, at most RING_BYTES)."""
        return max(self.head - RING_EVENTS, self._base + bisect_left(self._cum, self.total - RING_BYTES))

    def over_ring(self) -> bool:
        return len(self._seqs) > 2 * RING_EVENTS

    def trim(self, keep_from: int) -> None:
        """Drops everything before absolute position `keep_from` (the caller keeps every client's cursor)."""
        drop = keep_from - self._base
        if drop <= 0:
            return
        self.trimmed_through = self._seqs[drop - 1]
        self._cum_base = self._cum[drop - 1]
        del self._seqs[:drop], self._types[:drop], self._payloads[:drop], self._cum[:drop]
        for encoded in self._encoded.values():
            del encoded[:drop]
        self._base = keep_from
