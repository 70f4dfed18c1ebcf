"""`clock`: the current time, because a model has no idea what time it is."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from msgspec import Meta

from .errors import ToolError

__all__ = ["clock"]


def clock(
    timezone: Annotated[str, Meta(max_length=64, description="IANA time zone, e.g. Europe/Berlin")] = "UTC",
) -> str:
    """Return the current date and time as ISO-8601 in the given IANA time zone (default UTC)."""
    try:
        zone = ZoneInfo(timezone)
    # NotFound for unknown names; ValueError for keys that are not relative zone paths (or not TZif files).
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ToolError(f"unknown time zone {timezone!r}; use an IANA name such as 'Europe/Berlin'") from None
    return datetime.now(zone).isoformat(timespec="seconds")
