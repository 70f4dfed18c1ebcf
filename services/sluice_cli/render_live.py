"""The live terminal view of a task (rich): finished lines scroll above, a small live area at the bottom.

The live area holds the text still being written (the current step's uncommitted lines), the tools running now
and a status line (state, crew stage, elapsed time, usage, "reconnecting…"). Text is committed — printed above,
for good — line by line once the live area would outgrow the screen, and entirely when its step finishes or
anything else happens. So a retried step's void text usually vanishes silently; only when some of it was already
committed does a line say so. Committed text is printed soft-wrapped, so copying it from the terminal gives the
original lines.

Everything happens on the asyncio thread: auto-refresh is off and `tick()` refreshes ten times a second, so the
render never races the updates.
"""

from __future__ import annotations

import asyncio
import time

from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from sluice.client.transcript import StepText, Transcript, Update
from sluice_cli.render import lines_for, running_tools, status_line

__all__ = ["LiveView"]

_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_RESERVED_ROWS = 4


class LiveView:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.transcript = Transcript()
        self.connection = ""  # why we are reconnecting; empty while connected
        self._pending = ""  # text of `_step` not yet committed
        self._step: StepText | None = None
        self._step_committed = False  # some of `_step`'s text is already above
        self._live: Live | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._live is None:
            self._live = Live(
                console=self.console,
                auto_refresh=False,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
                get_renderable=self._render,
            )
            self._live.start()

    def stop(self) -> None:
        """Commits what is pending and removes the live area (to finish, or to read an answer)."""
        self._commit_all()
        if self._live is not None:
            self._live.stop()
            self._live = None

    async def tick(self) -> None:
        """Refreshes the live area until cancelled."""
        while True:
            self.refresh()
            await asyncio.sleep(0.1)

    def refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    # ------------------------------------------------------------------ input

    def header(self, task_id: str, agent: str = "") -> None:
        self._print(Text.assemble(("sluice", "bold"), (f" · task {task_id}" + (f" · {agent}" if agent else ""), "dim")))

    def update(self, update: Update, t: Transcript) -> None:
        self.transcript = t
        if update.kind == "text" and update.step is not None:
            if update.step is not self._step:
                self._commit_all()
                self._step, self._step_committed = update.step, False
            self._pending += update.text
            self._commit_overflow()
            self.refresh()
            return
        if update.kind == "restart" and update.step is not None:
            if update.step is self._step:
                self._pending = ""
                if not self._step_committed:
                    self.refresh()
                    return  # nothing of the void attempt left the live area: it simply vanishes
            elif not update.text:
                return
        self._commit_all()
        for line in lines_for(update, t):
            self._print(line)
        if update.kind == "restart" and update.step is self._step:
            self._step_committed = False  # the new attempt starts with nothing above
        self.refresh()

    def connection_status(self, status: str, detail: str) -> None:
        """The footer says why in two words; the whole sentence is in the log."""
        if status != "reconnecting":
            self.connection = ""
        else:
            self.connection = "edge unreachable" if "cannot reach" in detail else "connection lost"
        self.refresh()

    def note(self, text: Text | str) -> None:
        self._commit_all()
        self._print(text if isinstance(text, Text) else Text(text))
        self.refresh()

    # ------------------------------------------------------------------ internals

    def _print(self, text: Text) -> None:
        self.console.print(text, soft_wrap=True)

    def _commit_all(self) -> None:
        if self._pending:
            self._print(Text(self._pending))
            self._step_committed = True
            self._pending = ""

    def _commit_overflow(self) -> None:
        """Commits whole lines from the top while the pending text would not fit the screen."""
        budget = max(3, self.console.height - _RESERVED_ROWS - len(running_tools(self.transcript)))
        width = max(20, self.console.width)
        while _rows(self._pending, width) > budget:
            cut = self._pending.rfind("\n")
            if cut >= 0:
                head, self._pending = self._pending[:cut], self._pending[cut + 1 :]
            else:  # one huge paragraph: break it at a space, as a terminal would
                limit = width * (budget - 1)
                space = self._pending.rfind(" ", 0, limit)
                cut = space + 1 if space > 0 else limit
                head, self._pending = self._pending[:cut], self._pending[cut:]
            self._print(Text(head))
            self._step_committed = True

    def _render(self) -> RenderableType:
        frame = _FRAMES[int(time.monotonic() * 10) % len(_FRAMES)]
        parts: list[RenderableType] = []
        if self._pending:
            parts.append(Text(self._pending))
        for tool in running_tools(self.transcript):
            parts.append(Text.assemble((f"  {frame} ", "yellow"), (tool.name, "yellow"), (" running…", "dim")))
        if not self.transcript.terminal:
            parts.append(Text.assemble((f"{frame} ", "cyan"), status_line(self.transcript, connection=self.connection)))
        return Group(*parts)


def _rows(text: str, width: int) -> int:
    return sum(max(1, -(-cell_len(line) // width)) for line in text.split("\n"))
