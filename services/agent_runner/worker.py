"""The agent-runner's pull loop: work messages from the durable `agent-runners` consumer, N tasks at a time.

Ack policy (each delivery is decided in `handler.py`): ack when the task reached a terminal state or paused for
a human; `in_progress()` while it runs; a hand-back (shutdown, a NATS outage) is noted in `sluice-handbacks`
and nak'ed, so it never counts toward the poison limit; nak after an unexpected error (counted); term for poison.

Shutdown: `stopping` stops the pulling; tasks keep running their current step for up to the grace period and hand
themselves back at the next step boundary (another runner continues from the log); whatever still runs when
the grace period ends is stopped mid-step and handed back too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from agent_runner.agents import Catalog
from agent_runner.handler import RunnerContext, hand_back, handle_work
from agent_runner.ports import ModelClient, ToolDescriptor
from agent_runner.settings import RunnerSettings
from sluice import subjects
from sluice.active_tasks import ActiveTasks
from sluice.bus import Bus
from sluice.handbacks import HandBacks
from sluice.records import TaskStore, open_bucket

__all__ = ["Worker"]

log = logging.getLogger(__name__)
_FETCH_TIMEOUT_S = 1.0
_HARD_STOP_WAIT_S = 5.0


class Worker:
    def __init__(
        self,
        bus: Bus,
        settings: RunnerSettings,
        catalog: Catalog,
        tools: Mapping[str, ToolDescriptor],
        model: ModelClient,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.catalog = catalog
        self.tools = tools
        self.model = model
        self.draining = False
        self.hard_stop = asyncio.Event()
        self.ready = asyncio.Event()
        self._free = settings.concurrency
        self._slot_freed = asyncio.Event()

    @property
    def held(self) -> int:
        """Tasks this runner holds right now."""
        return self.settings.concurrency - self._free

    async def run(self, stopping: asyncio.Event) -> None:
        kv = await open_bucket(self.bus.js, subjects.TASKS_BUCKET)
        self.handbacks = HandBacks(await open_bucket(self.bus.js, subjects.HANDBACKS_BUCKET))
        ctx = RunnerContext(
            bus=self.bus,
            store=TaskStore(kv),
            handbacks=self.handbacks,
            settings=self.settings,
            catalog=self.catalog,
            tools=self.tools,
            model=self.model,
            draining=lambda: self.draining,
            hard_stop=self.hard_stop,
            active=ActiveTasks(await open_bucket(self.bus.js, subjects.LIMITS_BUCKET)),
        )
        sub = await self.bus.js.pull_subscribe_bind(durable=subjects.WORK_CONSUMER, stream=subjects.WORK_STREAM)
        log.info("ready", extra={"concurrency": self.settings.concurrency, "runner": self.settings.runner_id})
        self.ready.set()
        try:
            async with asyncio.TaskGroup() as group:
                try:
                    await self._pull(sub, ctx, group, stopping)
                finally:
                    await self._drain(group)
        finally:
            await sub.unsubscribe()

    async def _pull(
        self,
        sub: JetStreamContext.PullSubscription,
        ctx: RunnerContext,
        group: asyncio.TaskGroup,
        stopping: asyncio.Event,
    ) -> None:
        while not stopping.is_set():
            if self._free == 0:
                await self._wait_for_slot(stopping)
                continue
            try:
                msgs = await sub.fetch(self._free, timeout=_FETCH_TIMEOUT_S)
            except TimeoutError:  # nats.errors.TimeoutError, or the asyncio one some fetch paths raise
                continue
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                log.warning("fetching work failed: %s", exc)
                await _wait(stopping, 1.0)
                continue
            for msg in msgs:
                if stopping.is_set():  # fetched as the stop came: back to the queue, not counted as a crash
                    await hand_back(self.handbacks, msg)
                    continue
                self._free -= 1
                group.create_task(self._handle(ctx, msg))

    async def _handle(self, ctx: RunnerContext, msg: Msg) -> None:
        try:
            await handle_work(ctx, msg)
        finally:
            self._free += 1
            self._slot_freed.set()

    async def _wait_for_slot(self, stopping: asyncio.Event) -> None:
        self._slot_freed.clear()
        freed = asyncio.create_task(self._slot_freed.wait())
        stop = asyncio.create_task(stopping.wait())
        try:
            await asyncio.wait([freed, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            freed.cancel()
            stop.cancel()
            await asyncio.wait([freed, stop])

    async def _drain(self, group: asyncio.TaskGroup) -> None:
        """Lets held tasks reach a step boundary (they hand themselves back), then stops the rest."""
        self.draining = True
        if self.held == 0:
            return
        log.info("draining %d held tasks (grace %.1fs)", self.held, self.settings.grace_s)
        await self._until_idle(self.settings.grace_s)
        if self.held:
            log.warning("grace period over: handing back %d tasks mid-step", self.held)
            self.hard_stop.set()
            await self._until_idle(_HARD_STOP_WAIT_S)

    async def _until_idle(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.held and loop.time() < deadline:
            self._slot_freed.clear()
            try:
                await asyncio.wait_for(self._slot_freed.wait(), deadline - loop.time())
            except TimeoutError:
                break


async def _wait(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
