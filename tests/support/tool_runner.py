"""Driving the tool-runner in tests: an in-process worker on a bus, tool calls as the agent-runner sends them, and
reads of what the log says about a call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import msgspec

from sluice import events as ev
from sluice import subjects
from sluice.bus import Bus
from sluice.clock import now_iso
from sluice.eventlog import read_events
from sluice.handbacks import HandBacks
from sluice.messages import ToolCallMessage
from sluice.records import TaskStore
from support.waiting import eventually
from tool_runner.handler import ToolCallHandler
from tool_runner.metrics import ToolMetrics
from tool_runner.settings import ToolRunnerSettings
from tool_runner.worker import ToolWorker

__all__ = [
    "RunningWorker",
    "call_events",
    "completed_event",
    "create_task",
    "names_of",
    "publish_call",
    "running_worker",
    "task_store",
]

_call_ids = iter(range(1, 1 << 62))


@dataclass
class RunningWorker:
    worker: ToolWorker
    metrics: ToolMetrics
    stopping: asyncio.Event
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.stopping.set()
        await self.task


async def task_store(bus: Bus) -> TaskStore:
    return TaskStore(await bus.js.key_value(subjects.TASKS_BUCKET))


async def create_task(bus: Bus, task_id: str, state: ev.TaskState = "working") -> None:
    """A task record as the edge and the runner would have left it."""
    now = now_iso()
    record = ev.TaskRecord(id=task_id, state=state, agent="assistant", input="test", created_at=now, updated_at=now)
    await (await task_store(bus)).create(record)


async def publish_call(
    bus: Bus,
    task_id: str,
    name: str,
    arguments: str | dict[str, object],
    *,
    call_id: str | None = None,
    deadline_s: float = 30.0,
    headers: dict[str, str] | None = None,
) -> str:
    """Publishes a tool call the way the agent-runner does (msg id `{task}:call:{call_id}`); returns the call id."""
    call_id = call_id or f"call_{next(_call_ids)}"
    if not isinstance(arguments, str):
        arguments = msgspec.json.encode(arguments).decode()
    message = ToolCallMessage(task_id=task_id, call_id=call_id, name=name, arguments=arguments, deadline_s=deadline_s)
    await bus.publish(
        subjects.tool_call(name, task_id),
        msgspec.json.encode(message),
        msg_id=f"{task_id}:call:{call_id}",
        headers=headers,
    )
    return call_id


async def call_events(bus: Bus, task_id: str, call_id: str) -> list[ev.Event]:
    """The task's tool.started / tool.completed events for one call, in log order."""
    return [
        e
        for e in await read_events(bus, task_id)
        if isinstance(e, ev.ToolStarted | ev.ToolCompleted) and e.data.call_id == call_id
    ]


async def completed_event(bus: Bus, task_id: str, call_id: str, *, timeout_s: float = 10.0) -> ev.ToolCompleted:
    async def probe() -> ev.ToolCompleted | None:
        done = [e for e in await call_events(bus, task_id, call_id) if isinstance(e, ev.ToolCompleted)]
        return done[0] if done else None

    return await eventually(probe, timeout_s=timeout_s, what=f"tool.completed of {call_id}")


@contextlib.asynccontextmanager
async def running_worker(
    bus: Bus, *, max_deliver: int = 5, settings: ToolRunnerSettings | None = None, **overrides: object
) -> AsyncIterator[RunningWorker]:
    """An in-process tool-runner on `bus` (metrics in their own registry, no HTTP), stopped gracefully on exit."""
    settings = settings or ToolRunnerSettings(metrics_port=0, fetch_timeout_s=0.5, **overrides)  # type: ignore[arg-type]
    metrics = ToolMetrics()
    handbacks = HandBacks(await bus.js.key_value(subjects.HANDBACKS_BUCKET))
    handler = ToolCallHandler(
        bus,
        await task_store(bus),
        metrics,
        max_deliver=max_deliver,
        max_output_bytes=settings.max_output_bytes,
        handbacks=handbacks,
    )
    worker = ToolWorker(bus, handler, metrics, settings)
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    ready = asyncio.create_task(worker.ready.wait())
    await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if not worker.ready.is_set():
        ready.cancel()
        stopping.set()
        await task  # raises what stopped it from starting
        raise TimeoutError("tool worker did not become ready")
    running = RunningWorker(worker, metrics, stopping, task)
    try:
        yield running
    finally:
        await running.stop()


def names_of(events: Sequence[ev.Event]) -> list[str]:
    return [ev.event_type(type(e)) for e in events]
