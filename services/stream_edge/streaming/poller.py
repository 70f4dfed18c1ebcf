"""A feed's degraded mode, while JetStream allows it no consumer: read the task's log every `interval_s`.

The poller reads by direct get from the feed's next seq and hands each event to the feed, which keeps only the
next ones (a poll that overlaps a consumer's deliveries adds nothing twice). It stops when the feed gets a
consumer again, closes, or has the terminal event.
"""

from __future__ import annotations

import asyncio
import logging

from stream_edge.streaming.consumer import ConsumerOwner, Spawn
from stream_edge.streaming.link import Link
from stream_edge.streaming.reader import LogReader

__all__ = ["Poller"]

log = logging.getLogger(__name__)


class Poller:
    __slots__ = ("_owner", "_spawn", "active", "interval_s", "link", "task_id")

    def __init__(self, link: Link, task_id: str, owner: ConsumerOwner, spawn: Spawn, interval_s: float) -> None:
        self.link = link
        self.task_id = task_id
        self.interval_s = interval_s
        self.active = False
        self._owner = owner
        self._spawn = spawn

    def start(self, reason: str) -> None:
        if self.active:
            return
        log.warning("feed of task %s polls: %s", self.task_id, reason)
        self.active = True
        self._spawn(self._poll())

    def stop(self) -> None:
        self.active = False

    async def _poll(self) -> None:
        owner = self._owner
        wake = asyncio.Event()
        reader = LogReader(self.link, self.task_id, wake.set)
        try:
            while self.active and owner.wanted:
                reader.start(owner.next_seq - 1)
                while self.active and not reader.exhausted and reader.error is None:
                    batch = reader.take()
                    if batch is None:
                        wake.clear()
                        await reader.request()
                        if not reader.has_batch and not reader.exhausted and reader.error is None:
                            await wake.wait()
                        continue
                    for seq, type_b, payload in zip(batch.seqs, batch.types, batch.payloads, strict=True):
                        owner.deliver(seq, type_b, payload)
                await asyncio.sleep(self.interval_s)
        finally:
            reader.close()
