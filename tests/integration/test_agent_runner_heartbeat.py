"""An attempt ends, and its task with it, even when the cancellation of its heartbeat is lost.

Under Python 3.11, nats-py waits for a request's answer with `asyncio.wait_for`, and `wait_for` returns the answer
and drops a cancellation that comes as the answer arrives (CPython gh-86296, fixed in 3.12). The heartbeat reads the
task's record every third beat; when the attempt's run ended during such a read, the heartbeat was cancelled, lost
the cancel and beat on: the finished attempt kept its work message in progress for ever, and the task stayed
`working` after its last llm.completed with nobody working on it (the nemesis suite found approval tasks stuck so).

Here the runner's own code (`handle_work`) holds a real work message on a real nats-server with the demo model; the
record store is the real one, except that the heartbeat's reads are slow and lose a cancel exactly as `wait_for`
does — as the race tests' stalling bus stands for a descheduled writer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent_runner.agents import load_catalog
from agent_runner.handler import RunnerContext, handle_work
from agent_runner.model import OpenAIModel
from demo_llm.main import running_server as running_demo
from demo_llm.settings import DemoLLMSettings
from sluice import subjects
from sluice.admin import provision_as_admin
from sluice.bus import connect
from sluice.config import CommonConfig
from sluice.events import TaskRecord
from sluice.handbacks import HandBacks
from sluice.records import TaskStore
from support.catalog import static_tools
from support.nats_server import running_server
from support.runners import events_of, submit, types_of
from support.runners import test_settings as runner_settings

pytestmark = pytest.mark.timeout(120)

ACK_WAIT_S = 0.4  # a beat every 0.1 s, a record read every 0.3 s
STALL_S = 3.0  # a heartbeat's record read takes this long: the story (about 1.5 s) ends during it
HANG_S = 20.0  # far past the end of the story and the stall: an attempt still running by then never ends


class HeartbeatLosesCancels:
    """The real record store; the heartbeat's reads stall, and the first cancel that comes during one is lost (the
    answer is returned), as nats-py's `wait_for` loses one that comes with the answer. Later ones pass: the test's
    own clean-up cancels what is left."""

    def __init__(self, store: TaskStore) -> None:
        self._store = store
        self.lost = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def find(self, task_id: str) -> TaskRecord | None:
        task = asyncio.current_task()
        if self.lost == 0 and task is not None and task.get_coro().__qualname__ == "_Attempt._heartbeat":  # type: ignore[union-attr]
            try:
                await asyncio.sleep(STALL_S)
            except asyncio.CancelledError:
                self.lost += 1  # the answer is in: it is returned, and the cancel is gone
        return await self._store.find(task_id)


async def test_an_attempt_ends_although_its_heartbeat_lost_its_cancel(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        common = CommonConfig(nats_urls=(server.url,), ack_wait_s=ACK_WAIT_S)
        await provision_as_admin(common)
        bus = await connect(common, name="sluice-heartbeat-test")
        try:
            async with running_demo(DemoLLMSettings(port=0), log_level="warning") as demo:
                settings = runner_settings(common, demo.base_url)
                model = OpenAIModel(base_url=demo.base_url, api_key="demo", timeout_s=10.0)
                store = HeartbeatLosesCancels(TaskStore(await bus.js.key_value(subjects.TASKS_BUCKET)))
                ctx = RunnerContext(
                    bus=bus,
                    store=store,  # type: ignore[arg-type]
                    handbacks=HandBacks(await bus.js.key_value(subjects.HANDBACKS_BUCKET)),
                    settings=settings,
                    catalog=load_catalog(None, default_model=settings.model),
                    tools=static_tools(),
                    model=model,
                    draining=lambda: False,
                    hard_stop=asyncio.Event(),
                )
                task_id = await submit(bus, "tell me a story [fault:slow:40]")
                work = await bus.js.pull_subscribe_bind(durable=subjects.WORK_CONSUMER, stream=subjects.WORK_STREAM)
                (msg,) = await work.fetch(1, timeout=10)
                try:
                    async with asyncio.timeout(HANG_S):
                        await handle_work(ctx, msg)
                finally:
                    await model.close()
                assert store.lost >= 1, "the run did not end during a heartbeat's read: nothing was raced"
                assert types_of(await events_of(bus, task_id))[-1] == "task.completed"
                assert (await store.get(task_id)).state == "completed"
        finally:
            await bus.close()
