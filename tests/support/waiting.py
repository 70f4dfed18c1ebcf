"""Waiting for a condition with a deadline — never sleep-and-hope."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["eventually", "wait_until"]

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], *, timeout_s: float = 10.0, what: str = "") -> T:
    """Polls an async probe until it returns something truthy. For conditions no event announces (a process
    being gone, a port opening); where an event exists, wait on the event instead."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what or probe}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


def wait_until(check: Callable[[], T | None], *, timeout_s: float = 10.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what or check}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
