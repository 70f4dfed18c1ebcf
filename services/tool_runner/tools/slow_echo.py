"""`slow_echo`: sleeps, then echoes — a tool whose duration a test chooses, for deadlines and cancellation."""

from __future__ import annotations

import asyncio
from typing import Annotated

from msgspec import Meta

__all__ = ["MAX_SECONDS", "slow_echo"]

MAX_SECONDS = 60.0


async def slow_echo(
    text: Annotated[str, Meta(max_length=4096)],
    seconds: Annotated[float, Meta(description=f"how long to wait; capped at {MAX_SECONDS:g}")] = 1.0,
) -> str:
    """Wait the given number of seconds, then return the text unchanged."""
    # Clamped rather than rejected; `not >= 0` also catches NaN from a direct call.
    await asyncio.sleep(min(seconds, MAX_SECONDS) if seconds >= 0 else 0.0)
    return text
