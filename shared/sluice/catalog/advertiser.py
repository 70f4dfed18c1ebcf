"""A runner's own entry in the catalog: written at start, refreshed every third of its TTL, removed at stop.

The entry is one KV message under `runners.<kind>.<runner_id>` with a per-message TTL (`Nats-TTL`): if the runner
dies, the server removes it when the TTL ends and leaves a delete marker, so every watcher learns of the death
without polling. Before the first write, the runner registers each of its agents under `known.<agent>` (a KV
create: an existing key, including an operator's withdrawal, is left alone).

`replace()` swaps in a new advertisement (an MCP server's tool list changed) and writes it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats.errors
import nats.js.errors

from sluice import jsapi, subjects
from sluice.bus import Bus
from sluice.catalog.adverts import KnownAgent, RunnerAdvert, encode_advert
from sluice.clock import now_iso
from sluice.signals import first_of

__all__ = ["Advertiser"]

log = logging.getLogger(__name__)
_DEADLINE_S = 5.0
_MIN_TTL_S = 1.0  # the server counts per-message TTLs in whole seconds


class Advertiser:
    def __init__(self, bus: Bus, advert: RunnerAdvert) -> None:
        self.bus = bus
        self.advert = advert
        self.key = subjects.catalog_runner_key(advert.kind, advert.runner)
        self.written = asyncio.Event()  # set after each successful write (tests and start-up logs wait on it)
        self._changed = asyncio.Event()
        self._known: set[str] = set()

    @property
    def ttl_s(self) -> float:
        return max(_MIN_TTL_S, self.advert.ttl_s)

    def replace(self, advert: RunnerAdvert) -> None:
        """Advertise `advert` from now on (written at once by `run`)."""
        self.advert = advert
        self._changed.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Advertises until `stopping` is set, then removes the entry (a clean stop leaves the catalog at once)."""
        try:
            while not stopping.is_set():
                self._changed.clear()
                await self._write()
                await first_of(stopping, self._changed, timeout_s=self.ttl_s / 3)
        finally:
            await self._withdraw()

    async def _write(self) -> None:
        try:
            async with asyncio.timeout(_DEADLINE_S):
                await self._register_agents()
                await self.bus.js.publish(
                    jsapi.kv_key(subjects.CATALOG_BUCKET, self.key), encode_advert(self.advert), msg_ttl=self.ttl_s
                )
        except (nats.errors.Error, TimeoutError) as exc:  # NATS is away: the next refresh tries again
            log.warning("catalog advertisement not written: %s", exc or type(exc).__name__, extra={"key": self.key})
            return
        self.written.set()

    async def _register_agents(self) -> None:
        new = [agent.name for agent in self.advert.agents if agent.name not in self._known]
        if not new:
            return
        kv = await self.bus.js.key_value(subjects.CATALOG_BUCKET)
        for name in new:
            value = encode_advert(KnownAgent(name=name, first_seen=now_iso()))
            with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):  # known already, or withdrawn
                await kv.create(subjects.catalog_known_key(name), value)
            self._known.add(name)

    async def _withdraw(self) -> None:
        try:
            async with asyncio.timeout(_DEADLINE_S):
                kv = await self.bus.js.key_value(subjects.CATALOG_BUCKET)
                await kv.delete(self.key)
        except (nats.errors.Error, TimeoutError) as exc:  # the TTL removes it soon anyway
            log.warning("catalog advertisement not removed: %s", exc or type(exc).__name__, extra={"key": self.key})
