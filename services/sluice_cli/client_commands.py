"""`sluice run | tail | status | cancel | input` — the edge's API from a terminal (CONTRACT §6).

Exit codes: 0 the task completed (or the request succeeded), 1 the task failed or the request did, 130 the task
was canceled or you interrupted, 2 a usage error or bad input (such as an invalid task id). Errors are one
sentence on stderr. The edge is `SLUICE_URL` (default http://127.0.0.1:8080).

Ctrl-C while following a task detaches (the task keeps running; `sluice tail ID` re-attaches); for `run`, a
second Ctrl-C within a few seconds cancels the task.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import IO, Any, Protocol

import msgspec
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sluice.client.http import EdgeClient, new_idempotency_key
from sluice.client.settings import edge_url
from sluice.client.transcript import Transcript, Update
from sluice.errors import Conflict, InvalidInput, SluiceError, Unauthenticated, Unavailable
from sluice.events import TaskInputRequiredData, TaskRecord
from sluice.ids import is_task_id, parse_event_id
from sluice_cli.render import PlainView, input_prompt
from sluice_cli.render_live import LiveView

__all__ = ["EXIT_INTERRUPTED", "EXIT_OK", "Session", "context_id_arg", "read_line", "register", "run_command"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_QUESTION = TaskInputRequiredData(prompt="", kind="question")
EXIT_BY_STATE = {"completed": EXIT_OK, "failed": EXIT_FAILED, "canceled": EXIT_INTERRUPTED}
CANCEL_WINDOW_S = 3.0


def register(sub: Any) -> None:
    """Adds the client commands to `sluice`'s subparsers."""
    run = sub.add_parser("run", help="submit a task and show it live", description="Submit a task and show it live.")
    run.add_argument("prompt", help="what to ask")
    run.add_argument("--agent", default="assistant", help="the agent (or crew) to run (default: assistant)")
    run.add_argument("--json", action="store_true", help="print the raw events as NDJSON, one per line")
    run.add_argument("--context", metavar="ID", help="continue this conversation (a context id a run printed)")
    run.set_defaults(handler=lambda a: run_command(_run(a)))

    tail = sub.add_parser("tail", help="follow a task's events", description="Follow a task's events live.")
    tail.add_argument("task_id", metavar="ID")
    tail.add_argument("--after", metavar="EVENT_ID", help="start after this event id (default: from the start)")
    tail.add_argument("--json", action="store_true", help="print the raw events as NDJSON, one per line")
    tail.set_defaults(handler=lambda a: run_command(_tail(a)))

    status = sub.add_parser("status", help="show a task's record", description="Show a task's record.")
    status.add_argument("task_id", metavar="ID")
    status.add_argument("--json", action="store_true", help="print the record as JSON")
    status.set_defaults(handler=lambda a: run_command(_status(a)))

    cancel = sub.add_parser("cancel", help="cancel a task", description="Cancel a task.")
    cancel.add_argument("task_id", metavar="ID")
    cancel.set_defaults(handler=lambda a: run_command(_cancel(a)))

    give = sub.add_parser(
        "input", help="answer a task that waits for input", description="Answer a task that waits for input."
    )
    give.add_argument("task_id", metavar="ID")
    give.add_argument("text", nargs="?", help="the answer to the task's question")
    decision = give.add_mutually_exclusive_group()
    decision.add_argument("--approve", action="store_true", help="approve the step the task asks about")
    decision.add_argument("--deny", action="store_true", help="deny the step the task asks about")
    give.set_defaults(handler=lambda a: run_command(_input(a, give)))


# ---------------------------------------------------------------------- commands


async def _run(args: argparse.Namespace) -> int:
    context = None if args.context is None else context_id_arg(args.context)
    async with EdgeClient(edge_url()) as client:
        record = await client.submit(
            args.prompt, agent=args.agent, idempotency_key=new_idempotency_key(), context_id=context
        )
        session = Session(client, record.id, json_out=args.json, cancel_on_second_interrupt=True)
        code = await session.run(agent=record.agent)
        if record.context_id and not args.json:
            session.view.note(f"continue this conversation: sluice run --context {record.context_id} '…'")
        return code


async def _tail(args: argparse.Namespace) -> int:
    task_id = _task_id(args.task_id)
    after = None if args.after is None else parse_event_id(args.after, field="--after")
    async with EdgeClient(edge_url()) as client:
        return await Session(client, task_id, json_out=args.json).run(after=after)


async def _status(args: argparse.Namespace) -> int:
    task_id = _task_id(args.task_id)
    async with EdgeClient(edge_url()) as client:
        record = await client.get(task_id)
    if args.json or not sys.stdout.isatty():
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(record), indent=2).decode() + "\n")
    else:
        Console().print(_record_table(record))
    return EXIT_OK


async def _cancel(args: argparse.Namespace) -> int:
    task_id = _task_id(args.task_id)
    async with EdgeClient(edge_url()) as client:
        record = await client.cancel(task_id)
    sys.stdout.write(f"canceling task {record.id} (state: {record.state})\n")
    return EXIT_OK


async def _input(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if (args.text is None) == (not (args.approve or args.deny)):
        parser.error("give either TEXT or one of --approve / --deny")
    task_id = _task_id(args.task_id)
    async with EdgeClient(edge_url()) as client:
        if args.text is not None:
            await client.input(task_id, args.text)
        else:
            await client.input(task_id, approve=bool(args.approve))
    sys.stdout.write(f"sent to task {task_id}\n")
    return EXIT_OK


# ---------------------------------------------------------------------- following a task


class View(Protocol):
    def header(self, task_id: str, agent: str = "") -> None: ...
    def update(self, update: Update, t: Transcript) -> None: ...
    def connection_status(self, status: str, detail: str) -> None: ...
    def note(self, text: str) -> None: ...


class JsonView:
    """`--json`: stdout carries only the envelopes; anything for a person goes to stderr."""

    def header(self, task_id: str, agent: str = "") -> None:
        pass

    def update(self, update: Update, t: Transcript) -> None:
        pass

    def connection_status(self, status: str, detail: str) -> None:
        if status == "reconnecting":
            _err(f"reconnecting… ({detail})")

    def note(self, text: str) -> None:
        _err(text)


class Session:
    """Follows one task to its end: renders it, answers its questions, and handles Ctrl-C."""

    def __init__(
        self, client: EdgeClient, task_id: str, *, json_out: bool = False, cancel_on_second_interrupt: bool = False
    ) -> None:
        self.client = client
        self.task_id = task_id
        self.json_out = json_out
        self.cancel_on_second_interrupt = cancel_on_second_interrupt
        self.interactive = sys.stdin.isatty() and not json_out
        self.transcript = Transcript(task_id=task_id)
        self.live: LiveView | None = None
        self.view: View
        if json_out:
            self.view = JsonView()
        elif sys.stdout.isatty():
            self.live = LiveView(Console(highlight=False))
            self.view = self.live
        else:
            self.view = PlainView(sys.stdout, sys.stderr)
        self._interrupts = asyncio.Event()
        self._second_interrupt = asyncio.Event()
        self._asking: asyncio.Task[None] | None = None
        self._prompting = False  # reading an answer on the terminal
        self._answered_here = False  # the next task.resumed is the answer typed here
        self._tasks: asyncio.TaskGroup | None = None

    async def run(self, *, after: int | None = None, agent: str = "") -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._on_interrupt)
        self.view.header(self.task_id, agent)
        if self.live is not None:
            self.live.start()
        try:
            finished = await _first_of(self._follow(after), self._interrupts.wait(), self._ticker())
        finally:
            if self.live is not None:
                self.live.stop()
        if finished == 0:
            return EXIT_BY_STATE.get(self.transcript.state, EXIT_FAILED)
        return await self._detach()

    async def _follow(self, after: int | None) -> None:
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            async for served in self.client.stream(self.task_id, after, on_status=self.view.connection_status):
                if self.json_out:
                    sys.stdout.buffer.write(served.line + b"\n")
                    sys.stdout.flush()
                for update in self.transcript.apply(served.event):
                    if update.kind == "resumed" and self._answered_here:
                        self._answered_here = False  # what was typed is on the screen already
                    else:
                        self.view.update(update, self.transcript)
                    if update.kind == "input_required":
                        await self._on_input_required(tasks, int(served.event.id or 0))
                    elif update.kind in ("resumed", "end"):
                        self._stop_prompting()
            self._stop_prompting()

    async def _ticker(self) -> None:
        if self.live is None:
            await asyncio.Event().wait()  # nothing to refresh: wait to be cancelled
        else:
            await self.live.tick()

    async def _on_input_required(self, tasks: asyncio.TaskGroup, request_id: int) -> None:
        # A replayed request may have been answered since (or the task ended): ask only if the task still waits.
        # The runner publishes the request before it updates the record, so a record older than the request has
        # simply not caught up yet: the task waits. An answer or an end moves the record past the request.
        try:
            record = await self.client.get(self.task_id)
        except Unavailable:
            waiting = True  # cannot tell now; if it was answered meanwhile, the edge will say so
        else:
            caught_up = int(record.last_event_id or 0) >= request_id
            waiting = record.state == "input-required" or (not record.terminal and not caught_up)
        if not waiting:
            return
        if not self.interactive:
            hint = "--approve or --deny" if self._request_kind() == "approval" else "'your answer'"
            self.view.note(f"task {self.task_id} waits for input: sluice input {self.task_id} {hint}")
            return
        if self._asking is None:
            self._asking = tasks.create_task(self._ask())

    def _request_kind(self) -> str:
        request = self.transcript.input_request
        return request.kind if request is not None else "question"

    async def _ask(self) -> None:
        """Reads the answer on the terminal and sends it. Cancelled (only) while reading, when the task was
        answered elsewhere or ended."""
        request = self.transcript.input_request
        assert request is not None
        if self.live is not None:
            self.live.stop()
        try:
            answer = await self._read_answer(request.kind)
            if answer is None:
                self.view.note(f"no answer given; answer later with: sluice input {self.task_id} …")
                return
            self._answered_here = True
            try:
                if isinstance(answer, bool):
                    await self.client.input(self.task_id, approve=answer)
                else:
                    await self.client.input(self.task_id, answer)
            except Conflict as exc:
                self._answered_here = False
                self.view.note(f"the answer was not taken: {exc.message}")
        finally:
            self._asking = None
            if self.live is not None:
                self.live.start()

    async def _read_answer(self, kind: str) -> str | bool | None:
        # The prompt goes where the person is: stdout in a terminal, else stderr (stdout may be a pipe).
        out = sys.stdout if sys.stdout.isatty() else sys.stderr
        self._prompting = True
        try:
            while True:
                out.write(input_prompt(self.transcript.input_request or _QUESTION))
                out.flush()
                line = await read_line()
                if line is None:
                    return None
                choice = line.strip()
                if kind == "approval" and choice.lower() in ("y", "yes", "n", "no"):
                    return choice.lower() in ("y", "yes")
                if kind != "approval" and choice:
                    return choice
        except asyncio.CancelledError:
            out.write("\n")  # answered elsewhere, or the task ended: leave the prompt line
            raise
        finally:
            self._prompting = False

    def _stop_prompting(self) -> None:
        if self._asking is not None and self._prompting:
            self._asking.cancel()

    def _on_interrupt(self) -> None:
        if self._interrupts.is_set():
            self._second_interrupt.set()
        self._interrupts.set()

    async def _detach(self) -> int:
        self.view.note(f"detached — task {self.task_id} keeps running; re-attach with: sluice tail {self.task_id}")
        if not self.cancel_on_second_interrupt:
            return EXIT_INTERRUPTED
        self.view.note(f"press Ctrl-C again within {CANCEL_WINDOW_S:g} s to cancel the task")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._second_interrupt.wait(), CANCEL_WINDOW_S)
            if sys.stdout.isatty():
                sys.stdout.write("\n")  # past the terminal's "^C"
            try:
                await self.client.cancel(self.task_id)
                self.view.note(f"canceled task {self.task_id}")
            except Conflict as exc:
                self.view.note(f"not canceled: {exc.message}")
        return EXIT_INTERRUPTED


# ---------------------------------------------------------------------- plumbing


def run_command(work: Awaitable[int]) -> int:
    """Runs a command; every failure becomes one sentence on stderr and an exit code."""
    try:
        return asyncio.run(_unwrap(work))
    except InvalidInput as exc:
        _err(exc.message)
        return EXIT_USAGE
    except Unauthenticated as exc:
        _err(f"{exc.message} (set SLUICE_API_KEY to an API key of this edge: `sluice keys add --tenant T`)")
        return EXIT_FAILED
    except SluiceError as exc:
        _err(exc.message)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


async def _unwrap(work: Awaitable[int]) -> int:
    """The first error of an exception group, so `_main` sees the SluiceError a task group raised."""
    try:
        return await work
    except BaseExceptionGroup as group:
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


async def _first_of(*coros: Awaitable[Any]) -> int:
    """Runs the awaitables together; when one finishes, cancels the rest. Returns the index of the first."""
    winner: list[int] = []
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(_as_coro(c)) for c in coros]

        def finished(index: int) -> Callable[[asyncio.Task[Any]], None]:
            def done(_: asyncio.Task[Any]) -> None:
                if not winner:
                    winner.append(index)
                    for other in tasks:
                        other.cancel()

            return done

        for i, task in enumerate(tasks):
            task.add_done_callback(finished(i))
    return winner[0]


async def _as_coro(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


_unread = bytearray()  # what was read from stdin past the last line returned (piped input comes in one chunk)


def _take_line() -> str | None:
    line, newline, rest = bytes(_unread).partition(b"\n")
    if not newline:
        return None
    _unread[:] = rest
    return line.decode(errors="replace")


async def read_line(fd: int = 0) -> str | None:
    """One line from the terminal without blocking the loop (cancellable); None at end of input."""
    ready = _take_line()
    if ready is not None:
        return ready
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str | None] = loop.create_future()

    def readable() -> None:
        try:
            chunk = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        if done.done():
            return
        if not chunk:
            last = bytes(_unread).decode(errors="replace")
            _unread.clear()
            done.set_result(last or None)
            return
        _unread.extend(chunk)
        line = _take_line()
        if line is not None:
            done.set_result(line)

    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)


def context_id_arg(value: str) -> str:
    if not is_task_id(value):
        raise InvalidInput("invalid_context_id", f"{value!r} is not a context id (8 to 64 letters, digits, '_' or '-')")
    return value


def _task_id(value: str) -> str:
    if not is_task_id(value):
        raise InvalidInput("invalid_task_id", f"{value!r} is not a task id (8 to 64 letters, digits, '_' or '-')")
    return value


def _record_table(record: TaskRecord) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="dim")
    table.add_column()
    rows: list[tuple[str, str | Text]] = [
        ("id", record.id),
        ("state", Text(record.state, style="bold")),
        ("agent", record.agent),
        ("input", record.input),
        ("output", record.output or ""),
        (
            "",
            Text(f"(only its start: the whole output is in the log, sluice tail {record.id})", style="dim")
            if record.output_truncated
            else "",
        ),
        ("error", f"{record.error.code}: {record.error.message}" if record.error else ""),
        ("usage", f"{record.usage.input_tokens} in / {record.usage.output_tokens} out · ${record.usage.cost_usd:g}"),
        ("created", record.created_at),
        ("updated", record.updated_at),
        ("last event", record.last_event_id or ""),
        ("trace", record.trace_id or ""),
    ]
    for key, value in rows:
        if value:
            table.add_row(key, value)
    return table


def _err(text: str, stream: IO[str] | None = None) -> None:
    out = stream or sys.stderr
    out.write(f"sluice: {text}\n")
    out.flush()
