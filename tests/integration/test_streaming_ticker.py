"""The hub's ticker (heartbeats, dead-feed checks for every stream) survives a tick that raises."""

from __future__ import annotations

import asyncio

import pytest

from sluice.bus import Bus
from stream_edge.streaming import StreamHub, StreamSettings


async def test_a_tick_that_raises_is_logged_and_ticking_goes_on(
    bus: Bus, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    hub = StreamHub(bus, StreamSettings(heartbeat_s=0.2))
    ticks: list[int] = []
    ticked_again = asyncio.Event()

    def tick() -> None:
        ticks.append(1)
        if len(ticks) == 1:
            raise RuntimeError("a bug in one stream")
        ticked_again.set()

    monkeypatch.setattr(hub, "_tick", tick)
    await hub.start()
    try:
        await asyncio.wait_for(ticked_again.wait(), timeout=10)
    finally:
        await hub.stop()
    assert any("tick failed" in r.getMessage() and r.exc_info for r in caplog.records)
