"""Timestamps on the wire: RFC 3339 UTC with milliseconds, e.g. 2026-11-21T10:00:00.123Z."""

from __future__ import annotations

import time

__all__ = ["now_iso"]


def now_iso() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
