"""How a stream's events become bytes, one `Encoding` per wire format, and the one place a format is chosen.

An encoding is a pure mapping: the engine calls `event(seq, type, stored payload)` once per event and encoding in
use, however many clients read the result (a feed keeps one cached list of bytes per encoding its clients use).
A format for another protocol is one module that builds an `Encoding` and `register`s it; nothing in the engine
changes. An `event` that returns `b""` leaves that event out of the stream (the client's position still moves past
it, so a resume after any id it was sent is exact).

    preamble(retry_ms)   the first bytes of every stream (SSE: `retry:`)
    frame(id, type, json) a stream-only event that is not in the log (`stream.gap`, `task.snapshot`)
    heartbeat(ts)         what an idle stream sends (CONTRACT §5: at least every 15 s)
    trailer               sent right after the terminal event (for protocols that close with a marker)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stream_edge.negotiation import best_match
from stream_edge.streaming import frames

if TYPE_CHECKING:
    from stream_edge.streaming.reader import Batch

__all__ = ["NDJSON", "SSE", "STREAM_FORMATS", "Encoding", "choose", "encode_batch", "encoding", "register"]


def _no_preamble(retry_ms: int) -> bytes:
    return b""


@dataclass(frozen=True, slots=True, eq=False)
class Encoding:
    name: str
    media_type: str  # what `Accept` names and the Content-Type sent (it may carry parameters)
    event: Callable[[int, bytes, bytes], bytes]
    frame: Callable[[str | None, str, bytes], bytes]
    heartbeat: Callable[[str], bytes]
    preamble: Callable[[int], bytes] = _no_preamble
    trailer: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()  # more response headers (e.g. a protocol's version marker)

    @property
    def accept_type(self) -> str:
        """The media type without parameters, as `Accept` names it."""
        return self.media_type.split(";", 1)[0].strip()


def _sse_frame(id: str | None, type: str, body: bytes) -> bytes:
    return frames.sse_frame(id, type, body)


def _ndjson_frame(id: str | None, type: str, body: bytes) -> bytes:
    return frames.ndjson_line(body)


def _sse_heartbeat(ts: str) -> bytes:
    return frames.SSE_KEEPALIVE


SSE = Encoding(
    name="sse",
    media_type=frames.SSE_CONTENT_TYPE,
    event=frames.sse_event,
    frame=_sse_frame,
    heartbeat=_sse_heartbeat,
    preamble=frames.sse_retry,
)
NDJSON = Encoding(
    name="ndjson",
    media_type=frames.NDJSON_CONTENT_TYPE,
    event=lambda seq, type_b, payload: frames.ndjson_event(seq, payload),
    frame=_ndjson_frame,
    heartbeat=frames.ndjson_heartbeat,
)

_REGISTRY: dict[str, Encoding] = {}

# What the native events route offers, in order of preference (SSE for `*/*` or no `Accept`: CONTRACT §5).
STREAM_FORMATS: tuple[str, ...] = ("sse", "ndjson")


def register(enc: Encoding) -> Encoding:
    """Makes an encoding available by name (once: a second one of the same name is a programming error)."""
    existing = _REGISTRY.get(enc.name)
    if existing is not None and existing is not enc:
        raise ValueError(f"an encoding named {enc.name!r} is already registered")
    _REGISTRY[enc.name] = enc
    return enc


def encoding(name: str) -> Encoding:
    return _REGISTRY[name]


def choose(
    accept: str | None, names: Sequence[str] = STREAM_FORMATS, *, override: str | None = None, plain: str | None = None
) -> Encoding | str | None:
    """The encoding a request gets: `override` (a validated `?format=`) if given, else the one of `names` its
    `Accept` prefers. A route that can also answer with a plain body names its media type as `plain` (offered
    first: the default for no `Accept`), and gets that string back when `Accept` prefers it. None: nothing offered
    is acceptable (a 406)."""
    if override is not None:
        return _REGISTRY[override]
    offered = [_REGISTRY[name] for name in names]
    media = best_match(accept, [*([plain] if plain else []), *(enc.accept_type for enc in offered)])
    if media is not None and media == plain:
        return plain
    return next((enc for enc in offered if enc.accept_type == media), None)


def encode_batch(enc: Encoding, batch: Batch, after: int) -> tuple[bytes, int, bool, int]:
    """A catch-up batch's events after seq `after`, up to and including a terminal event: (bytes, how many events,
    terminal reached, the last seq covered)."""
    seqs, types, payloads, make = batch.seqs, batch.types, batch.payloads, enc.event
    terminal_types = frames.TERMINAL_TYPE_BYTES
    parts: list[bytes] = []
    count = 0
    for i in range(len(seqs)):
        seq = seqs[i]
        if seq <= after:
            continue
        event_type = types[i]
        parts.append(make(seq, event_type, payloads[i]))
        count += 1
        after = seq
        if event_type in terminal_types:
            return b"".join(parts), count, True, after
    return b"".join(parts), count, False, after


register(SSE)
register(NDJSON)
