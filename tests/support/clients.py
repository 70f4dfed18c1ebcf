"""Support for the client tests: a stand-in edge that serves pre-recorded event logs over real HTTP, and a
terminal (tmux) to drive `sluice run` in.

`StandInEdge` speaks CONTRACT §4–§5 for what the clients use: POST /v1/tasks, GET /v1/tasks/{id},
GET /v1/tasks/{id}/events (SSE or NDJSON by `Accept` / `?format=`, from `Last-Event-ID` else `?after=`,
`?follow=false`, heartbeats, ending after the terminal event), cancel and input. Its logs are scripted: a test
adds a task with its events, releases them as it likes, and can break connections mid-stream the way a dying
edge does. It runs uvicorn on a real socket in the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from sluice import events as ev
from sluice.clock import now_iso
from sluice.ids import new_task_id
from support import system_deps
from support.nats_server import free_port

__all__ = ["RecordedTask", "StandInEdge", "Terminal", "scripted_events", "standin_edge"]

_encoder_ts = "2026-01-01T00:00:00.000Z"


def scripted_events(
    task_id: str,
    *,
    text: Sequence[str] = ("Hello", ", ", "world", "."),
    tool: tuple[str, str, str] | None = None,
    ask: str | None = None,
    end: str = "completed",
    first_id: int = 100,
    id_step: int = 3,
) -> list[ev.Event]:
    """A plausible log: submitted, started, [a tool call step], [a question], a streamed answer, the end.
    Ids start at `first_id` and are `id_step` apart (not contiguous, as in a shared stream)."""
    out: list[ev.Event] = []

    def add(cls: type[ev.Event], data: Any) -> None:
        out.append(cls(task_id=task_id, ts=now_iso(), source="standin", data=data))  # type: ignore[call-arg]

    usage = ev.Usage(input_tokens=10, output_tokens=5, cost_usd=0.0001)
    add(ev.TaskSubmitted, ev.TaskSubmittedData(input="hi", agent="assistant", history=[], metadata={}))
    add(ev.TaskStarted, ev.TaskStartedData(attempt=1, runner="r1"))
    step = 1
    if tool is not None:
        name, arguments, result = tool
        add(ev.LlmStarted, ev.LlmStartedData(step=step, attempt=1, model="demo", agent="assistant"))
        call = ev.ToolCall(call_id="c1", name=name, arguments=arguments)
        add(ev.LlmCompleted, ev.LlmCompletedData(step=step, attempt=1, content="", tool_calls=[call], usage=usage,
                                                 finish_reason="tool_calls"))  # fmt: skip
        add(ev.ToolStarted, ev.ToolStartedData(call_id="c1", name=name, arguments=arguments))
        add(ev.ToolCompleted, ev.ToolCompletedData(call_id="c1", name=name, ok=True, result=result, duration_ms=12))
        step += 1
    if ask is not None:
        add(ev.TaskInputRequired, ev.TaskInputRequiredData(prompt=ask, kind="question"))
        add(ev.TaskResumed, ev.TaskResumedData(input="Alice"))
    add(ev.LlmStarted, ev.LlmStartedData(step=step, attempt=1, model="demo", agent="assistant"))
    for piece in text:
        add(ev.LlmDelta, ev.LlmDeltaData(step=step, attempt=1, text=piece))
    content = "".join(text)
    add(ev.LlmCompleted, ev.LlmCompletedData(step=step, attempt=1, content=content, tool_calls=[], usage=usage,
                                             finish_reason="stop"))  # fmt: skip
    total = usage + usage if tool else usage
    if end == "completed":
        add(ev.TaskCompleted, ev.TaskCompletedData(output=content, usage=total))
    elif end == "failed":
        add(ev.TaskFailed, ev.TaskFailedData(error=ev.ErrorInfo(code="model_error", message="it broke"), usage=total))
    elif end == "canceled":
        add(ev.TaskCanceled, ev.TaskCanceledData(reason="canceled by the user"))
    for i, event in enumerate(out):
        event.id = str(first_id + i * id_step)
    return out


@dataclass
class RecordedTask:
    """A task whose log is scripted: `events` (with ids), of which the first `released` are visible."""

    record: ev.TaskRecord
    events: list[ev.Event]
    released: int
    # The record trails the visible log by this many events, as a runner's record update trails its event.
    record_lag: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    # Each new stream connection pops the next entry: after that many events the connection is broken (the
    # response aborts mid-body, like an edge killed mid-stream). None: serve normally.
    cuts: list[int | None] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def visible(self) -> list[ev.Event]:
        return self.events[: self.released]

    async def release(self, n: int | None = None) -> None:
        """Makes `n` more events visible (all by default) and wakes the followers."""
        async with self.changed:
            self.released = len(self.events) if n is None else min(len(self.events), self.released + n)
            self.changed.notify_all()

    async def append(self, event: ev.Event) -> None:
        last = int(self.events[-1].id or 0) if self.events else 0
        event.id = str(last + 1)
        async with self.changed:
            self.events.append(event)
            self.released = len(self.events)
            self.changed.notify_all()


class _Cut(Exception):
    """Raised inside a streaming body to abort the connection."""


@dataclass
class StandInEdge:
    heartbeat_s: float = 15.0
    port: int = field(default_factory=free_port)
    tasks: dict[str, RecordedTask] = field(default_factory=dict)
    # What POST /v1/tasks scripts for a new task: events for (task_id, input, agent).
    script: Callable[[str, str, str], list[ev.Event]] = field(
        default_factory=lambda: lambda task_id, _input, _agent: scripted_events(task_id)
    )
    submit_released: int | None = None  # how much of a submitted task's script is visible at once (None: all)
    requests: list[dict[str, Any]] = field(default_factory=list)  # method, path, query, headers, body
    inputs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _server: uvicorn.Server | None = None
    _serving: asyncio.Task[None] | None = None
    _idem: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_task(self, events: list[ev.Event] | None = None, *, released: int | None = None) -> RecordedTask:
        task_id = events[0].task_id if events else new_task_id()
        events = events if events is not None else scripted_events(task_id)
        first = events[0]
        assert isinstance(first, ev.TaskSubmitted)
        record = ev.TaskRecord(id=task_id, state="submitted", agent=first.data.agent, input=first.data.input,
                               created_at=first.ts, updated_at=first.ts)  # fmt: skip
        task = RecordedTask(record=record, events=events, released=len(events) if released is None else released)
        self.tasks[task_id] = task
        return task

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> StandInEdge:
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._serving = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + 10
        while not self._server.started:
            if self._serving.done() or time.monotonic() > deadline:
                raise RuntimeError("the stand-in edge did not start")
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        """Stops at once, breaking open streams (as a killed edge would)."""
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            for task in self.tasks.values():
                async with task.changed:
                    task.changed.notify_all()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._serving, 10)
        self._server = self._serving = None

    def _wake(self, task: RecordedTask, index: int) -> bool:
        return task.released > index or self._server is None or self._server.should_exit

    # ------------------------------------------------------------------ the app

    def _app(self) -> FastAPI:
        from stream_edge.web.router import router as web

        app = FastAPI(openapi_url=None)
        app.add_route("/v1/tasks", self._submit, methods=["POST"])
        app.add_route("/v1/tasks/{task_id}", self._get, methods=["GET"])
        app.add_route("/v1/tasks/{task_id}/events", self._events, methods=["GET"])
        app.add_route("/v1/tasks/{task_id}/cancel", self._cancel, methods=["POST"])
        app.add_route("/v1/tasks/{task_id}/input", self._input, methods=["POST"])
        app.include_router(web)  # the real web page, over the scripted logs
        return app

    async def _log(self, request: Request) -> dict[str, Any]:
        body = await request.body()
        entry = {
            "method": request.method,
            "path": request.url.path,
            "query": dict(request.query_params),
            "headers": dict(request.headers),
            "body": json.loads(body) if body else None,
        }
        self.requests.append(entry)
        return entry

    def _task(self, request: Request) -> RecordedTask | Response:
        task = self.tasks.get(request.path_params["task_id"])
        if task is None:
            return _error(404, "task_not_found", f"no task {request.path_params['task_id']}")
        return task

    async def _submit(self, request: Request) -> Response:
        entry = await self._log(request)
        body = entry["body"] or {}
        if not isinstance(body.get("input"), str) or not body["input"]:
            return _error(422, "invalid_input", "input must be a non-empty string")
        key = request.headers.get("idempotency-key")
        if key and key in self._idem:
            return _record(self.tasks[self._idem[key]].record, 201)
        task_id = new_task_id()
        script = self.script(task_id, body["input"], body.get("agent", "assistant"))
        task = self.add_task(script, released=self.submit_released)
        if key:
            self._idem[key] = task_id
        return _record(task.record, 201)

    async def _get(self, request: Request) -> Response:
        await self._log(request)
        task = self._task(request)
        return task if isinstance(task, Response) else _record(_state_of(task), 200)

    async def _cancel(self, request: Request) -> Response:
        await self._log(request)
        task = self._task(request)
        if isinstance(task, Response):
            return task
        if _state_of(task).terminal:
            return _error(409, "task_terminal", f"task {task.id} has already ended")
        await task.append(ev.TaskCanceled(task_id=task.id, ts=now_iso(), source="standin",
                                          data=ev.TaskCanceledData(reason="canceled by the user")))  # fmt: skip
        return _record(_state_of(task), 202)

    async def _input(self, request: Request) -> Response:
        entry = await self._log(request)
        task = self._task(request)
        if isinstance(task, Response):
            return task
        if _state_of(task).state != "input-required":
            return _error(409, "not_waiting", f"task {task.id} is not waiting for input")
        self.inputs.append((task.id, entry["body"]))
        await task.release(None)
        return _record(_state_of(task), 202)

    async def _events(self, request: Request) -> Response:
        entry = await self._log(request)
        task = self._task(request)
        if isinstance(task, Response):
            return task
        q = request.query_params
        fmt = q.get("format") or ("ndjson" if "application/x-ndjson" in request.headers.get("accept", "") else "sse")
        cursor = request.headers.get("last-event-id") or q.get("after") or "0"
        follow = q.get("follow", "true") != "false"
        cut = task.cuts.pop(0) if task.cuts else None
        entry["cursor"] = cursor
        return StreamingResponse(
            self._body(task, int(cursor), fmt, follow, cut),
            media_type="application/x-ndjson" if fmt == "ndjson" else "text/event-stream",
            headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
        )

    async def _body(
        self, task: RecordedTask, after: int, fmt: str, follow: bool, cut: int | None
    ) -> AsyncIterator[bytes]:
        if fmt == "sse":
            yield b"retry: 2000\n\n"
        sent = 0
        index = 0
        while True:
            while index < task.released:
                event = task.events[index]
                index += 1
                if int(event.id or 0) <= after:
                    continue
                if cut is not None and sent >= cut:
                    raise _Cut("connection broken on purpose")
                yield _frame(event, fmt)
                sent += 1
                if ev.event_type(type(event)) in ev.TERMINAL_TYPES:
                    return
            if not follow or self._server is None or self._server.should_exit:
                return
            idle = False
            async with task.changed:
                try:
                    more = functools.partial(self._wake, task, index)
                    await asyncio.wait_for(task.changed.wait_for(more), self.heartbeat_s)
                except TimeoutError:
                    idle = True
            if idle:  # never yield while holding the lock
                yield _heartbeat(fmt)


def _frame(event: ev.Event, fmt: str) -> bytes:
    envelope = ev.encode(event)
    if fmt == "ndjson":
        return envelope + b"\n"
    head = f"id: {event.id}\n" if event.id else ""
    return f"{head}event: {ev.event_type(type(event))}\ndata: ".encode() + envelope + b"\n\n"


def _heartbeat(fmt: str) -> bytes:
    if fmt == "sse":
        return b": keep-alive\n\n"
    return b'{"type":"heartbeat","ts":"' + now_iso().encode() + b'"}\n'


def _state_of(task: RecordedTask) -> ev.TaskRecord:
    """The record as the visible log implies it."""
    record = ev.TaskRecord(**{f: getattr(task.record, f) for f in task.record.__struct_fields__})
    for event in task.visible[: len(task.visible) - task.record_lag]:
        if isinstance(event, ev.TaskStarted | ev.TaskResumed):
            record.state = "working"
        elif isinstance(event, ev.TaskInputRequired):
            record.state = "input-required"
        elif isinstance(event, ev.TaskCompleted):
            record.state, record.output, record.usage = "completed", event.data.output, event.data.usage
        elif isinstance(event, ev.TaskFailed):
            record.state, record.error = "failed", event.data.error
        elif isinstance(event, ev.TaskCanceled):
            record.state = "canceled"
        record.last_event_id = event.id
    return record


def _record(record: ev.TaskRecord, status: int) -> Response:
    return Response(ev.encode(record), status_code=status, media_type="application/json",
                    headers={"Location": f"/v1/tasks/{record.id}"})  # fmt: skip


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


@contextlib.asynccontextmanager
async def standin_edge(**kwargs: Any) -> AsyncIterator[StandInEdge]:
    edge = await StandInEdge(**kwargs).start()
    try:
        yield edge
    finally:
        await edge.stop()


# ---------------------------------------------------------------------- a real terminal


@dataclass
class Terminal:
    """A command running in a detached tmux session (a real pseudo-terminal with a screen): type into it, read
    what it shows (wrapped lines joined, scrollback included), and learn its exit code."""

    command: list[str]
    env: dict[str, str]
    width: int = 100
    height: int = 40
    socket: str = field(default_factory=lambda: f"sluice-test-{uuid.uuid4().hex[:10]}")
    _exit_file: Path | None = None

    @staticmethod
    def available() -> bool:
        return system_deps.find("tmux") is not None

    def start(self, workdir: Path) -> Terminal:
        self._exit_file = workdir / f"{self.socket}.exit"
        # bash, not sh: on Ctrl-C dash dies with the command, bash waits for it (so its exit code is recorded).
        quoted = " ".join(_shell_quote(part) for part in self.command)
        script = f"{quoted}; echo $? > {_shell_quote(str(self._exit_file))}; sleep 3600"
        env_args = [f"{k}={v}" for k, v in self.env.items()]
        subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", "new-session", "-d", "-x", str(self.width),
             "-y", str(self.height), "env", "-i", *env_args, "bash", "-c", script],
            check=True,
        )  # fmt: skip
        subprocess.run(["tmux", "-L", self.socket, "set-option", "-g", "history-limit", "20000"], check=True)
        return self

    def screen(self) -> str:
        """Everything shown so far, scrollback included, soft-wrapped lines joined."""
        result = subprocess.run(
            ["tmux", "-L", self.socket, "capture-pane", "-p", "-J", "-S", "-", "-E", "-"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return result.stdout

    def send(self, *keys: str) -> None:
        """tmux key names or literal text, e.g. send("Alice", "Enter") or send("C-c")."""
        subprocess.run(["tmux", "-L", self.socket, "send-keys", *keys], check=True)

    def type(self, text: str) -> None:
        subprocess.run(["tmux", "-L", self.socket, "send-keys", "-l", text], check=True)

    @property
    def exit_code(self) -> int | None:
        if self._exit_file is None or not self._exit_file.exists():
            return None
        content = self._exit_file.read_text().strip()
        return int(content) if content else None

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], check=False, capture_output=True)


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
