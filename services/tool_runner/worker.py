"""The tool-runner's consumer loop: pull tool calls from the shared durable consumer, run them, settle them.

Flow control: the worker never holds more messages than it runs. It fetches at most as many as it has free
slots (`concurrency`), so a message it holds is a message being worked on; what it cannot take stays in the
stream for other tool-runners. While a call runs, the message's ack deadline is extended with `in_progress()`
every quarter of the consumer's `ack_wait` (read from the consumer itself, so it matches whatever was
provisioned), and a runner that dies stops extending it: JetStream then redelivers the call to another one.

Ack policy (the `Disposition` the handler returns): `ack` when done, a hand-back (noted in `sluice-handbacks`,
then `nak(retry_delay)`: not a crash) on a transient failure, `term` for a message that can never succeed. An
unexpected error in the handler is logged with its traceback and the message is nak'ed (a crash: it counts), so a
bug costs a retry, not the runner.

Shutdown (`stopping` set, e.g. by SIGTERM): stop fetching (within `fetch_timeout_s`), give running calls
`grace_s` to finish and settle as usual, then cancel the rest and hand their messages back at once, so another
tool-runner takes them without waiting for the ack deadline, and the restart never counts toward the poison limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from sluice import subjects
from sluice.bus import Bus
from sluice.records import patiently
from sluice.signals import first_of

from .handler import Disposition, ToolCallHandler
from .metrics import ToolMetrics
from .settings import ToolRunnerSettings

__all__ = ["ToolWorker"]

log = logging.getLogger(__name__)
# A call passed on to the tool-runner that serves its tool comes back a moment later, to any runner.
_PASS_ON_DELAY_S = 0.2
_START_DEADLINE_S = 60.0


class ToolWorker:
    def __init__(self, bus: Bus, handler: ToolCallHandler, metrics: ToolMetrics, settings: ToolRunnerSettings) -> None:
        self.bus = bus
        self.handler = handler
        self.metrics = metrics
        self.settings = settings
        self.ready = asyncio.Event()
        self._calls: set[asyncio.Task[None]] = set()
        self._unsettled: dict[int, Msg] = {}  # by id(): a Msg is not hashable
        self._slot_freed = asyncio.Event()
        self._heartbeat_s = 10.0

    @property
    def running(self) -> int:
        return len(self._calls)

    async def run(self, stopping: asyncio.Event, *, on_ready: Callable[[], None] | None = None) -> None:
        """Serves until `stopping` is set, then drains as described above and returns."""
        sub = await self.bus.js.pull_subscribe_bind(durable=subjects.TOOL_CONSUMER, stream=subjects.TOOLS_STREAM)
        try:
            # Asked again while JetStream cannot answer: a tool-runner that starts during an election waits it out.
            info = await patiently("reading the tool-runners consumer", sub.consumer_info, _START_DEADLINE_S)
            self._heartbeat_s = max(0.1, (info.config.ack_wait or 3.0) / 4)
            self.ready.set()
            if on_ready is not None:
                on_ready()
            await self._fetch_until(stopping, sub)
            await self._drain()
        finally:
            for task in self._calls:  # only if `run` itself was cancelled: leave no call behind
                task.cancel()
            await asyncio.gather(*self._calls, return_exceptions=True)
            await sub.unsubscribe()
            await self.bus.nc.flush(timeout=5)

    async def _fetch_until(self, stopping: asyncio.Event, sub: JetStreamContext.PullSubscription) -> None:
        while not stopping.is_set():
            free = self.settings.concurrency - len(self._calls)
            if free <= 0:
                self._slot_freed.clear()
                await first_of(self._slot_freed, stopping)
                continue
            try:
                msgs = await sub.fetch(batch=free, timeout=self.settings.fetch_timeout_s)
            except TimeoutError:  # nothing to do (nats' FetchTimeoutError is one too)
                continue
            except nats.errors.Error as exc:  # reconnecting, or the consumer is being recreated: try again soon
                log.warning("fetching tool calls failed: %s", exc)
                await first_of(stopping, timeout_s=self.settings.retry_delay_s)
                continue
            for msg in msgs:
                if stopping.is_set():  # arrived after the stop: hand it straight back
                    await self._hand_back(msg)
                else:
                    self._start(msg)

    def _start(self, msg: Msg) -> None:
        task = asyncio.create_task(self._run_call(msg), name=f"tool-call-{msg.metadata.sequence.stream}")
        self._calls.add(task)
        self._unsettled[id(msg)] = msg
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._calls.discard(task)
        self._slot_freed.set()

    async def _run_call(self, msg: Msg) -> None:
        self.metrics.in_flight.inc()
        try:
            async with asyncio.TaskGroup() as tg:
                heartbeat = tg.create_task(self._keep_alive(msg))
                try:
                    disposition = await self.handler.handle(msg)
                except Exception:
                    log.exception("handling a tool call failed unexpectedly; it will be retried")
                    disposition = Disposition.NAK
                heartbeat.cancel()
            await self._settle(msg, disposition)
        finally:
            self.metrics.in_flight.dec()

    async def _keep_alive(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                await msg.in_progress()
            except nats.errors.Error as exc:  # the connection is down: the ack deadline may pass, redelivery copes
                log.warning("could not extend the ack deadline: %s", exc)

    async def _settle(self, msg: Msg, disposition: Disposition) -> None:
        try:
            if disposition is Disposition.ACK:
                await msg.ack()
            elif disposition is Disposition.TERM:
                await msg.term()
            elif disposition is Disposition.HAND_BACK:
                await self._hand_back(msg, delay_s=self.settings.retry_delay_s)
            elif disposition is Disposition.PASS_ON:
                await self._hand_back(msg, delay_s=_PASS_ON_DELAY_S)
            else:
                await msg.nak(delay=self.settings.retry_delay_s)
        except nats.errors.Error as exc:  # not settled: JetStream redelivers after the ack deadline
            log.warning("could not %s a tool call message: %s", disposition, exc)
        self._unsettled.pop(id(msg), None)

    async def _hand_back(self, msg: Msg, *, delay_s: float = 0.0) -> None:
        """Back to the stream without counting a crash: the hand-back noted under the message, then nak."""
        if self.handler.handbacks is not None:
            await self.handler.handbacks.note(msg)
        try:
            await msg.nak(delay=delay_s or None)
        except nats.errors.Error as exc:  # not settled: JetStream redelivers after the ack deadline
            log.warning("could not hand back a tool call: %s", exc)

    async def _drain(self) -> None:
        if not self._calls:
            return
        log.info("stopping: waiting up to %gs for %d running tool calls", self.settings.grace_s, len(self._calls))
        _, late = await asyncio.wait(set(self._calls), timeout=self.settings.grace_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        for msg in list(self._unsettled.values()):
            await self._hand_back(msg)
            self._unsettled.pop(id(msg), None)
        if late:
            log.info("handed %d unfinished tool calls back to the stream", len(late))
