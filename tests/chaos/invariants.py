"""What every task's log must show after the nemesis, whatever it did (CONTRACT §3, §5, §11)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from sluice.eventlog import LogEntry
from sluice.events import TERMINAL_TYPES
from support.edge import StreamFrame

__all__ = ["Takeover", "check_client", "check_log", "takeovers"]


def check_log(entries: list[LogEntry]) -> list[str]:
    """Violations in one task's log: one terminal event and it is the last; attempts increase; each message id and
    each tool call's start and end once; each step's deltas add up to its content (a superseded attempt's tokens
    mixed in would not)."""
    problems: list[str] = []
    types = [e.type for e in entries]
    ends = [i for i, t in enumerate(types) if t in TERMINAL_TYPES]
    if len(ends) != 1 or ends[0] != len(types) - 1:
        problems.append(f"terminal events at {ends} of {len(types)}: {types[-4:]}")
    events: list[Any] = [e.decode() for e in entries]
    attempts = [ev.data.attempt for e, ev in zip(entries, events, strict=True) if e.type == "task.started"]
    if attempts != sorted(set(attempts)):
        problems.append(f"task.started attempts {attempts}")
    msg_ids = Counter(e.headers.get("Nats-Msg-Id", "") for e in entries)
    if doubles := [m for m, n in msg_ids.items() if n > 1]:
        problems.append(f"message ids stored twice: {doubles[:3]}")
    for kind in ("tool.started", "tool.completed"):
        calls = Counter(ev.data.call_id for e, ev in zip(entries, events, strict=True) if e.type == kind)
        if doubles := [c for c, n in calls.items() if n > 1]:
            problems.append(f"{kind} twice for {doubles}")
    text: list[str] = []
    for entry, event in zip(entries, events, strict=True):
        data = event.data
        if entry.type == "llm.started":
            text = []
        elif entry.type == "llm.delta":
            text.append(data.text)
        elif entry.type == "llm.completed" and "".join(text) != data.content:
            problems.append(f"step {data.step}.{data.attempt}: deltas do not add up to the content")
    return problems


def check_client(frames: list[StreamFrame], entries: list[LogEntry]) -> list[str]:
    """What a client received across its reconnects is the log: every event once, in order, nothing else."""
    got = [(f.id, f.type) for f in frames]
    want = [(str(e.seq), e.type) for e in entries]
    if got == want:
        return []
    ids = [f.id for f in frames]
    missing = sorted(set(i for i, _ in want) - set(ids), key=int)[:5]
    return [
        f"client saw {len(got)} frames, the log has {len(want)}; missing {missing}; twice {len(ids) - len(set(ids))}"
    ]


@dataclass
class Takeover:
    """A task.started of a later attempt that replaced a runner holding the task (not the resume of an answered
    question, which starts an attempt too): who ran the task before, and when each attempt started."""

    task_id: str
    previous_runner: str
    previous_started_at: float  # epoch seconds (the events' ts)
    started_at: float


def takeovers(task_id: str, entries: list[LogEntry], epoch: Any) -> list[Takeover]:
    out = []
    previous: tuple[str, float] | None = None
    for entry in entries:
        if entry.type == "task.resumed":
            previous = None  # the next attempt runs the answer: nobody was replaced
            continue
        if entry.type != "task.started":
            continue
        event: Any = entry.decode()
        if previous is not None:
            out.append(Takeover(task_id, previous[0], previous[1], epoch(event.ts)))
        previous = (event.data.runner, epoch(event.ts))
    return out
