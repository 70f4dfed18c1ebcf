"""Waiting for the first of several `asyncio.Event`s, with an optional timeout — no polling, no orphan tasks."""

from __future__ import annotations

import asyncio

__all__ = ["first_of"]


async def first_of(*events: asyncio.Event, timeout_s: float | None = None) -> None:
    """Returns when any of `events` is set, or after `timeout_s` (None: no timeout)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
