"""Waiting on a `CatalogView` for a condition, woken by its change events (no sleeping)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from sluice.catalog import CatalogView

__all__ = ["until_catalog"]

T = TypeVar("T")


async def until_catalog(view: CatalogView, check: Callable[[], T | None], *, timeout_s: float = 15.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        view.changed.clear()
        result = check()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"the catalog never got there: tools {view.tools()}, agents {view.agents()}")
        try:
            await asyncio.wait_for(view.changed.wait(), remaining)
        except TimeoutError:
            continue
