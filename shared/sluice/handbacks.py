"""Which deliveries of a work or tool-call message ended in a clean hand-back: so that only crashes count.

JetStream counts deliveries, not why one ended. A runner that hands a message back cleanly — a SIGTERM or drain,
a NATS outage — notes it here before it naks, under the message's stream and sequence, in the KV bucket
`sluice-handbacks`. The crashes behind a delivery are then the earlier deliveries that left no note:

    crashes = (num_delivered - 1) - hand-backs noted for this message

and the poison limit (`SLUICE_MAX_DELIVER`) is a limit on crashes: five rolling restarts leave a long task running.
A note that cannot be written (NATS is gone for longer than the store's patience) leaves the delivery counted as a
crash, which errs on the side of the poison limit. Only first deliveries skip the look-up.
"""

from __future__ import annotations

import functools
import logging

import nats.js.errors
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from sluice import limits, subjects
from sluice.errors import Unavailable
from sluice.records import patiently

__all__ = ["HandBacks"]

log = logging.getLogger(__name__)
_STORE = limits.store_named(subjects.HANDBACKS_BUCKET)
_CAS_ATTEMPTS = 10


class HandBacks:
    def __init__(self, kv: KeyValue, *, deadline_s: float = 30.0) -> None:
        self.kv = kv
        self.deadline_s = deadline_s

    @staticmethod
    def _key(msg: Msg) -> str:
        meta = msg.metadata
        return f"{meta.stream}.{meta.sequence.stream}"

    async def crashes(self, msg: Msg) -> int:
        """Earlier deliveries of `msg` that ended in a crash (not in a noted hand-back)."""
        earlier = msg.metadata.num_delivered - 1
        if earlier <= 0:
            return 0
        return max(0, earlier - (await self._count(self._key(msg)))[0])

    async def note(self, msg: Msg) -> bool:
        """Notes that this delivery of `msg` is handed back cleanly; False if the note could not be written."""
        key = self._key(msg)
        try:
            for _ in range(_CAS_ATTEMPTS):
                if await self._increment(key):
                    return True
        except Unavailable as exc:
            log.warning("hand-back not noted (%s): the redelivery will count as a crash", exc.message)
        return False

    async def _increment(self, key: str) -> bool:
        """One compare-and-set of the count; False if another writer changed it first."""
        count, revision = await self._count(key)
        value = str(count + 1).encode()
        what = f"noting a hand-back of {key}"
        try:
            if revision is None:
                await patiently(what, functools.partial(self.kv.create, key, value), self.deadline_s, store=_STORE)
            else:
                update = functools.partial(self.kv.update, key, value, last=revision)
                await patiently(what, update, self.deadline_s, store=_STORE)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    async def _count(self, key: str) -> tuple[int, int | None]:
        try:
            entry = await patiently(f"reading hand-backs of {key}", lambda: self.kv.get(key), self.deadline_s)
        except nats.js.errors.KeyNotFoundError:
            return 0, None
        try:
            return int(entry.value or b"0"), entry.revision
        except ValueError:
            return 0, entry.revision
