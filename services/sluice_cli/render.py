"""What `sluice run` / `sluice tail` show for each update of a task — pure: `rich.text.Text` values, no terminal.

The live terminal view (`render_live`) and the plain view (`PlainView`, for pipes and files) both take their
lines from here, so what is said is decided once and tested without a terminal.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import IO

from rich.text import Text

from sluice import events as ev
from sluice.client.transcript import ToolCallView, Transcript, Update
from sluice.events import Usage

__all__ = [
    "PlainView",
    "format_arguments",
    "format_cost",
    "format_duration",
    "format_usage",
    "input_prompt",
    "lines_for",
    "status_line",
    "summary",
]

MAX_ARGUMENTS_CHARS = 160
MAX_RESULT_CHARS = 240

_STATE_STYLE = {
    "submitted": "dim",
    "working": "cyan",
    "input-required": "magenta",
    "completed": "green",
    "failed": "red",
    "canceled": "yellow",
}
_END_MARK = {"completed": "✓", "failed": "✗", "canceled": "⊘"}


# ---------------------------------------------------------------------- small formatters


def format_duration(seconds: float) -> str:
    """`850 ms`, `3.4 s`, `2 m 05 s`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} m {secs:02d} s"


def format_cost(cost_usd: float) -> str:
    """`$0`, `$0.000029`, `$0.0123`, `$2.50`."""
    if cost_usd == 0:
        return "$0"
    if cost_usd >= 1:
        return f"${cost_usd:.2f}"
    if cost_usd >= 0.01:
        return f"${cost_usd:.4f}"
    small = f"{cost_usd:.6f}".rstrip("0")
    return "<$0.000001" if small == "0." else f"${small}"


def format_usage(usage: Usage) -> str:
    """`120 in / 45 out tokens · $0.0012`."""
    return f"{usage.input_tokens} in / {usage.output_tokens} out tokens · {format_cost(usage.cost_usd)}"


def format_arguments(arguments: str, limit: int = MAX_ARGUMENTS_CHARS) -> str:
    """The model's JSON arguments as `expression="17*23", unit="km"`; malformed JSON is shown as it came."""
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return _clip(arguments, limit)
    if isinstance(parsed, dict):
        shown = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in parsed.items())
    else:
        shown = json.dumps(parsed, ensure_ascii=False)
    return _clip(shown, limit)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------- lines per update


def lines_for(update: Update, t: Transcript) -> list[Text]:
    """Whole lines to print for an update; streamed text (`text`) is not a line and yields none."""
    e = update.event
    kind = update.kind
    if kind == "recovered" and isinstance(e, ev.TaskStarted):
        return [Text(f"↻ another runner took the task over (attempt {e.data.attempt})", style="dim")]
    if kind == "stage_started" and update.stage is not None:
        return [Text.assemble(("▸ ", "cyan"), (update.stage.label, "bold cyan"))]
    if kind == "restart" and update.step is not None:
        return [
            Text(
                f"↻ step {update.step.step} retried (attempt {update.step.attempt}); the text above it is void",
                style="yellow",
            )
        ]
    if kind == "tool_call" and update.tool is not None:
        return [tool_call_line(update.tool)]
    if kind == "tool_done" and update.tool is not None:
        return [tool_result_line(update.tool)]
    if kind == "input_required" and isinstance(e, ev.TaskInputRequired):
        return [input_request_line(e.data)]
    if kind == "resumed" and isinstance(e, ev.TaskResumed):
        return [resumed_line(e.data)]
    if kind == "budget" and isinstance(e, ev.BudgetWarning | ev.BudgetExceeded):
        word = "budget warning" if isinstance(e, ev.BudgetWarning) else "budget exceeded"
        style = "yellow" if isinstance(e, ev.BudgetWarning) else "bold red"
        return [Text(f"! {word}: {e.data.kind} {e.data.used:g} of {e.data.limit:g}", style=style)]
    if kind == "gap" and isinstance(e, ev.StreamGap):
        return [Text(f"! earlier events are no longer kept (oldest is {e.data.oldest})", style="yellow")]
    if kind == "snapshot":
        return [Text(f"(joined late: task is {t.state})", style="dim")]
    if kind == "end":
        return [summary(t)]
    return []


def tool_call_line(tool: ToolCallView) -> Text:
    return Text.assemble(
        ("  ⚙ ", "yellow"), (tool.name, "bold yellow"), "  ", (format_arguments(tool.arguments), "dim")
    )


def tool_result_line(tool: ToolCallView) -> Text:
    took = f"  {format_duration((tool.duration_ms or 0) / 1000)}"
    if tool.ok:
        return Text.assemble(
            ("  ✓ ", "green"), (tool.name, "green"), " → ", _clip(tool.result or "", MAX_RESULT_CHARS), (took, "dim")
        )
    return Text.assemble(
        ("  ✗ ", "red"), (tool.name, "red"), " failed: ", _clip(tool.error or "", MAX_RESULT_CHARS), (took, "dim")
    )


def input_request_line(request: ev.TaskInputRequiredData) -> Text:
    if request.kind == "approval":
        what = f"{request.name}({format_arguments(request.arguments or '')})" if request.name else "this step"
        return Text.assemble(("? ", "bold magenta"), (request.prompt or f"Approve {what}?", "magenta"))
    return Text.assemble(("? ", "bold magenta"), (request.prompt, "magenta"))


def input_prompt(request: ev.TaskInputRequiredData) -> str:
    """The prompt text the terminal shows before reading an answer."""
    return "approve? [y/n] › " if request.kind == "approval" else "› "


def resumed_line(data: ev.TaskResumedData) -> Text:
    if data.approved is not None:
        return Text("› approved" if data.approved else "› denied", style="magenta")
    return Text.assemble(("› ", "magenta"), (data.input, "italic"))


def summary(t: Transcript) -> Text:
    """`✓ completed · 3.4 s · 120 in / 45 out tokens · $0.0012` (and why, when it did not complete)."""
    mark = _END_MARK.get(t.state, "•")
    style = _STATE_STYLE.get(t.state, "")
    out = Text.assemble((f"{mark} {t.state}", f"bold {style}"), (f" · {format_duration(t.elapsed_s())}", "dim"))
    out.append(f" · {format_usage(t.usage)}", style="dim")
    if t.state == "failed" and t.error is not None:
        out.append(f"\n  {t.error.code}: {t.error.message}", style="red")
    if t.state == "canceled" and t.cancel_reason:
        out.append(f"\n  {t.cancel_reason}", style="yellow")
    return out


def status_line(t: Transcript, *, connection: str = "", now: dt.datetime | None = None) -> Text:
    """The footer of the live view: state, crew stage, elapsed time, usage so far, connection trouble."""
    out = Text()
    if connection:
        out.append(f"reconnecting… ({connection})", style="bold yellow")
        out.append(" · ", style="dim")
    out.append(t.state, style=_STATE_STYLE.get(t.state, ""))
    if t.stage is not None:
        out.append(" · ")
        out.append(t.stage.label, style="cyan")
    out.append(f" · {format_duration(t.elapsed_s(now))}", style="dim")
    if t.usage.input_tokens or t.usage.output_tokens:
        out.append(f" · {format_usage(t.usage)}", style="dim")
    return out


def running_tools(t: Transcript) -> list[ToolCallView]:
    return [tool for tool in t.tools.values() if tool.started and not tool.done]


# ---------------------------------------------------------------------- the plain view (no terminal)


class PlainView:
    """Writes a task as plain text: streamed text as it comes, other updates as whole lines. No ANSI, no
    cursor movement — for pipes, files and dumb terminals."""

    def __init__(self, out: IO[str], err: IO[str]) -> None:
        self.out, self.err = out, err
        self._mid_line = False

    def header(self, task_id: str, agent: str = "") -> None:
        self._line(f"task {task_id}" + (f" · {agent}" if agent else ""))

    def update(self, update: Update, t: Transcript) -> None:
        if update.kind == "text":
            self.out.write(update.text)
            self._mid_line = not update.text.endswith("\n")
            self.out.flush()
            return
        if update.kind == "restart" and not update.text:
            return  # nothing of the void attempt was shown
        for line in lines_for(update, t):
            self._line(line.plain)

    def connection_status(self, status: str, detail: str) -> None:
        if status == "reconnecting":
            self.err.write(f"reconnecting… ({detail})\n")
            self.err.flush()

    def note(self, text: str) -> None:
        self._end_line()
        self.err.write(text + "\n")
        self.err.flush()

    def _line(self, text: str) -> None:
        self._end_line()
        self.out.write(text + "\n")
        self.out.flush()

    def _end_line(self) -> None:
        if self._mid_line:
            self.out.write("\n")
            self._mid_line = False
