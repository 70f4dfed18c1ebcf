"""Server-sent-event frames: the only place the demo model writes ``data:`` and the blank line."""

from __future__ import annotations

__all__ = ["DONE_FRAME", "data_frame"]

DONE_FRAME = b"data: [DONE]\n\n"


def data_frame(data: bytes) -> bytes:
    """One SSE event carrying ``data`` (single-line JSON) as its data field."""
    if b"\n" in data or b"\r" in data:
        raise ValueError("SSE data frames must be a single line")
    return b"data: " + data + b"\n\n"
