"""Agent-runner test support: the edge's side of the protocol, a scriptable tool-runner, an in-process runner,
and waiting on a task's log without sleeping.

`submit`, `resume` and `cancel` publish exactly what stream-edge publishes (CONTRACT / the protocol in the brief),
so the runner can be tested without the edge. `FakeToolRunner` answers `ToolCallMessage`s with the real tool
implementations the way the tool-runner runtime does, and can hold chosen calls forever (to test waits and
cancellation). `LogWatch` follows a task's log: it subscribes to the task's subjects first and re-reads the log
on each wake-up, so it never misses an event and never polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
from nats.aio.msg import Msg

from agent_runner.advert import runner_advert
from agent_runner.agents import Catalog, load_catalog
from agent_runner.model import OpenAIModel
from agent_runner.ports import ToolDescriptor
from agent_runner.settings import RunnerSettings
from agent_runner.worker import Worker
from demo_llm.main import DemoServer
from demo_llm.main import running_server as running_demo
from demo_llm.settings import DemoLLMSettings
from sluice import subjects
from sluice.admin import provision_as_admin
from sluice.bus import Bus, connect
from sluice.catalog import Advertiser
from sluice.catalog.adverts import runner_id_token
from sluice.clock import now_iso
from sluice.config import CommonConfig
from sluice.eventlog import EventWriter, read_events, read_log
from sluice.events import (
    TERMINAL_TYPES,
    Budget,
    Event,
    HistoryMessage,
    TaskCanceled,
    TaskCanceledData,
    TaskInputRequired,
    TaskRecord,
    TaskResumed,
    TaskResumedData,
    TaskSubmitted,
    TaskSubmittedData,
    ToolCompleted,
    ToolCompletedData,
    ToolStarted,
    ToolStartedData,
    encode,
    event_type,
)
from sluice.ids import new_task_id
from sluice.messages import ControlMessage, WorkMessage, decode_tool_call
from sluice.records import TaskStore
from support.catalog import static_tools as tool_descriptors
from support.nats_server import NatsServer, running_server

__all__ = [
    "FakeToolRunner",
    "LogWatch",
    "RunnerStack",
    "as_mapping",
    "by_type",
    "cancel",
    "data_of",
    "demo_requests",
    "events_of",
    "publish_work",
    "record_of",
    "replace_record",
    "resume",
    "runner_stack",
    "running_worker",
    "submit",
    "test_settings",
    "types_of",
    "wait_for_end",
]

T = TypeVar("T")
log = logging.getLogger(__name__)


async def _store(bus: Bus) -> TaskStore:
    return TaskStore(await bus.js.key_value(subjects.TASKS_BUCKET))


# ---------------------------------------------------------------- the edge's side


async def submit(
    bus: Bus,
    text: str,
    *,
    agent: str = "assistant",
    budget: Budget | None = None,
    history: list[HistoryMessage] | None = None,
    task_id: str | None = None,
    work: bool = True,
) -> str:
    """Creates the record, publishes task.submitted and (unless `work=False`) the work message, as the edge does."""
    task_id = task_id or new_task_id()
    now = now_iso()
    store = await _store(bus)
    await store.create(TaskRecord(id=task_id, state="submitted", agent=agent, input=text, created_at=now,
                                  updated_at=now))  # fmt: skip
    data = TaskSubmittedData(input=text, agent=agent, history=history or [], metadata={}, budget=budget or Budget())
    await EventWriter(bus, "stream-edge").emit(TaskSubmitted, task_id, data, msg_id=f"{task_id}:submitted")
    if work:
        await publish_work(bus, task_id)
    return task_id


async def publish_work(bus: Bus, task_id: str, *, reason: str = "submitted", msg_id: str | None = None) -> None:
    message = WorkMessage(task_id=task_id, reason=reason)  # type: ignore[arg-type]
    await bus.publish(subjects.work(task_id), encode(message), msg_id=msg_id or f"{task_id}:run:{reason}")


async def resume(bus: Bus, task_id: str, text: str = "", *, approved: bool | None = None) -> None:
    """POST /input: task.resumed after the last task.input_required, CAS input-required → working, work message."""
    events = await events_of(bus, task_id)
    ir_seq = max(int(e.id or 0) for e in events if isinstance(e, TaskInputRequired))
    store = await _store(bus)
    assert (await store.get(task_id)).state == "input-required"
    data = TaskResumedData(input=text, approved=approved)
    seq = await EventWriter(bus, "stream-edge").emit(TaskResumed, task_id, data, msg_id=f"{task_id}:resumed:{ir_seq}")
    await store.update(task_id, lambda r: replace_record(r, state="working", last_event_id=str(seq)))
    await publish_work(bus, task_id, reason="resumed", msg_id=f"{task_id}:run:r{ir_seq}")


async def cancel(bus: Bus, task_id: str, reason: str = "test cancel") -> str:
    """POST /cancel: CAS → canceled, the ctl notice, and task.canceled when no runner held the task.
    Returns the state the cancel replaced."""
    store = await _store(bus)
    before, _ = await store.update(task_id, lambda r: None if r.terminal else replace_record(r, state="canceled"))
    assert not before.terminal, f"task {task_id} already {before.state}"
    await bus.notify(subjects.control(task_id), encode(ControlMessage(task_id=task_id, action="cancel", reason=reason)))
    if before.state in ("submitted", "input-required"):
        data = TaskCanceledData(reason=reason)
        seq = await EventWriter(bus, "stream-edge").emit(TaskCanceled, task_id, data, msg_id=f"{task_id}:end")
        await store.update(task_id, lambda r: replace_record(r, last_event_id=str(seq)))
    return before.state


def replace_record(record: TaskRecord, **changes: Any) -> TaskRecord:
    return msgspec.structs.replace(record, **changes)


async def record_of(bus: Bus, task_id: str) -> TaskRecord:
    return await (await _store(bus)).get(task_id)


# ---------------------------------------------------------------- reading and waiting


async def events_of(bus: Bus, task_id: str) -> list[Event]:
    return await read_events(bus, task_id)


def types_of(events: list[Event]) -> list[str]:
    return [event_type(type(e)) for e in events]


class LogWatch:
    """Follows one task's log; `until(predicate)` returns once the predicate holds for the events so far."""

    def __init__(self, bus: Bus, task_id: str) -> None:
        self.bus = bus
        self.task_id = task_id
        self.events: list[Event] = []
        self._cursor = 0
        self._wake = asyncio.Event()

    async def until(
        self, predicate: Callable[[list[Event]], T | None], *, timeout_s: float = 15.0, what: str = ""
    ) -> T:
        async def wake(_: Msg) -> None:
            self._wake.set()

        sub = await self.bus.nc.subscribe(subjects.events_of_task(self.task_id), cb=wake)
        try:
            await self.bus.nc.flush()
            deadline = time.monotonic() + timeout_s
            while True:
                self._wake.clear()
                async for entry in read_log(self.bus, self.task_id, after=self._cursor):
                    self._cursor = entry.seq
                    with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):  # not an event: skip
                        self.events.append(entry.decode())
                result = predicate(self.events)
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = ", ".join(types_of(self.events)[-12:])
                    raise TimeoutError(f"task {self.task_id}: no {what or predicate} after {timeout_s}s; last: {seen}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), remaining)
        finally:
            await sub.unsubscribe()

    async def first(
        self, type_: str, *, timeout_s: float = 15.0, where: Callable[[Event], bool] | None = None
    ) -> Event:
        def found(events: list[Event]) -> Event | None:
            return next((e for e in events if event_type(type(e)) == type_ and (where is None or where(e))), None)

        return await self.until(found, timeout_s=timeout_s, what=type_)


async def wait_for_end(bus: Bus, task_id: str, *, timeout_s: float = 20.0) -> list[Event]:
    """The task's whole log once it holds a terminal event."""

    def ended(events: list[Event]) -> list[Event] | None:
        return events if any(event_type(type(e)) in TERMINAL_TYPES for e in events) else None

    return await LogWatch(bus, task_id).until(ended, timeout_s=timeout_s, what="terminal event")


# ---------------------------------------------------------------- a scriptable tool-runner


@dataclass
class FakeToolRunner:
    """Consumes `tool-runners` like the tool-runner runtime: tool.started, run the real tool, tool.completed.

    `hold`: (task id, tool name) pairs whose calls are taken but never answered (acked, as a tool-runner whose
    answer got lost). `calls` counts the calls it ran, by call id.
    """

    bus: Bus
    hold: set[tuple[str, str]] = field(default_factory=set)
    calls: dict[str, int] = field(default_factory=dict)
    received: list[str] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _sub: Any = None

    async def start(self) -> None:
        self._sub = await self.bus.js.pull_subscribe_bind(durable=subjects.TOOL_CONSUMER, stream=subjects.TOOLS_STREAM)
        self._task = asyncio.create_task(self._serve(self._sub))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def _serve(self, sub: Any) -> None:
        import nats.errors

        async with asyncio.TaskGroup() as group:
            while True:
                try:
                    msgs = await sub.fetch(1, timeout=0.5)
                except TimeoutError:
                    continue
                except nats.errors.Error as exc:
                    log.warning("fake tool-runner: fetch failed: %r", exc)
                    await asyncio.sleep(0.1)
                    continue
                for msg in msgs:
                    group.create_task(self._answer_logged(msg))

    async def _answer_logged(self, msg: Msg) -> None:
        try:
            await self._answer(msg)
        except Exception:
            log.exception("fake tool-runner: answering failed")

    async def _answer(self, msg: Msg) -> None:
        from tool_runner.tools import ToolError, get_tool

        call = decode_tool_call(msg.data)
        self.received.append(call.call_id)
        await msg.ack()
        if (call.task_id, call.name) in self.hold:
            return
        writer = EventWriter(self.bus, "tool-runner")
        prefix = f"{call.task_id}:tool:{call.call_id}"
        started_data = ToolStartedData(call_id=call.call_id, name=call.name, arguments=call.arguments)
        await writer.emit(ToolStarted, call.task_id, started_data, msg_id=f"{prefix}:start")
        self.calls[call.call_id] = self.calls.get(call.call_id, 0) + 1
        tool = get_tool(call.name)
        started = time.perf_counter()
        try:
            assert tool is not None, call.name
            result = await tool.invoke(call.arguments)
            data = ToolCompletedData(call_id=call.call_id, name=call.name, ok=True, result=result)
        except ToolError as exc:
            data = ToolCompletedData(call_id=call.call_id, name=call.name, ok=False, error=str(exc))
        data.duration_ms = round((time.perf_counter() - started) * 1000, 3)
        await writer.emit(ToolCompleted, call.task_id, data, msg_id=f"{prefix}:done")


# ---------------------------------------------------------------- the agent-runner in this process


def test_settings(common: CommonConfig, model_url: str, **overrides: Any) -> RunnerSettings:
    """Settings for a runner under test: fast backoff, short timeouts, no metrics port."""
    base = RunnerSettings(
        common=common,
        runner_id=f"test-runner-{new_task_id()[-6:]}",
        concurrency=4,
        openai_base_url=model_url,
        delta_window_s=0.01,
        model_max_attempts=3,
        model_backoff_s=0.05,
        model_backoff_max_s=0.2,
        model_timeout_s=5.0,
        tool_wait_margin_s=2.0,
        grace_s=2.0,
        metrics_port=0,
    )
    return replace(base, **overrides)


@contextlib.asynccontextmanager
async def running_worker(
    settings: RunnerSettings, catalog: Catalog | None = None, tools: Mapping[str, ToolDescriptor] | None = None
) -> AsyncIterator[Worker]:
    """An agent-runner worker in this event loop, with its own NATS connection, until the block ends; it advertises
    its agents in the catalog as `sluice agent-runner` does."""
    tools = tools or tool_descriptors()
    catalog = catalog or load_catalog(settings.agents_file, default_model=settings.model)
    bus = await connect(settings.common, name=f"sluice-{settings.runner_id}")
    model = OpenAIModel(base_url=settings.openai_base_url, api_key=settings.openai_api_key,
                        timeout_s=settings.model_timeout_s)  # fmt: skip
    worker = Worker(bus, settings, catalog, tools, model)
    stopping = asyncio.Event()
    advert = runner_advert(catalog, runner_id_token(settings.runner_id), ttl_s=settings.common.catalog_ttl_s)
    advertiser = Advertiser(bus, advert)
    advertising = asyncio.create_task(advertiser.run(stopping))
    written = asyncio.create_task(advertiser.written.wait())
    await asyncio.wait([advertising, written], timeout=10, return_when=asyncio.FIRST_COMPLETED)
    written.cancel()
    running = asyncio.create_task(worker.run(stopping))
    try:
        ready = asyncio.create_task(worker.ready.wait())
        await asyncio.wait([running, ready], return_when=asyncio.FIRST_COMPLETED, timeout=10)
        ready.cancel()
        if running.done():
            running.result()
        yield worker
    finally:
        stopping.set()
        await asyncio.wait([running, advertising], timeout=settings.grace_s + 10)
        await model.close()
        await bus.close()


@dataclass
class RunnerStack:
    """A private NATS server (the shared durable consumers of the session server would mix tests' work), the demo
    model on a real socket, a scriptable tool-runner and one in-process agent-runner."""

    nats: NatsServer
    common: CommonConfig
    bus: Bus
    demo: DemoServer
    tools: FakeToolRunner
    worker: Worker
    settings: RunnerSettings


@contextlib.asynccontextmanager
async def runner_stack(
    root: Path,
    *,
    ack_wait_s: float = 3.0,
    max_deliver: int = 5,
    tools: Mapping[str, ToolDescriptor] | None = None,
    **overrides: Any,
) -> AsyncIterator[RunnerStack]:
    """Everything a runner test needs; `overrides` are RunnerSettings fields, `tools` replaces the registry's."""
    with running_server(root) as server:
        common = CommonConfig(nats_urls=(server.url,), ack_wait_s=ack_wait_s, max_deliver=max_deliver)
        await provision_as_admin(common)
        bus = await connect(common, name="sluice-runner-tests")
        try:
            async with running_demo(DemoLLMSettings(port=0), log_level="warning") as demo:
                fake = FakeToolRunner(bus)
                await fake.start()
                try:
                    settings = test_settings(common, demo.base_url, **overrides)
                    async with running_worker(settings, tools=tools) as worker:
                        yield RunnerStack(server, common, bus, demo, fake, worker, settings)
                finally:
                    await fake.stop()
        finally:
            await bus.close()


async def demo_requests(demo: DemoServer) -> list[dict[str, Any]]:
    """The demo model's request log (GET /_demo/requests): what each model call was asked."""
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{demo.port}/_demo/requests")
        response.raise_for_status()
        entries: list[dict[str, Any]] = response.json()
        return entries


def by_type(events: list[Event], type_: str) -> list[Event]:
    return [e for e in events if event_type(type(e)) == type_]


def data_of(events: list[Event], type_: str) -> list[Any]:
    return [getattr(e, "data") for e in by_type(events, type_)]  # noqa: B009


def as_mapping(event: Event) -> Mapping[str, Any]:
    return msgspec.to_builtins(event)
