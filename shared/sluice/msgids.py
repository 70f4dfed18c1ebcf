"""Every `Nats-Msg-Id` a Sluice producer sets (CONTRACT §2): one function per message, in one place.

JetStream drops a publish whose id it has seen within the stream's duplicate window, so an id names *what* is
published, never *when*: a retried or re-run publish (a runner that crashed after publishing, a request retried by
a client) gets the same id and is stored once. The formats are part of the wire: other producers (a tool-runner in
another language, see the AsyncAPI document) use the same ones, and old ids stay valid across versions.

    <task>:submitted               task.submitted              (edge)
    <task>:run:submitted           the first work message      (edge)
    <task>:resumed:<ask seq>       task.resumed                (edge)
    <task>:run:r<ask seq>          the work message after it   (edge)
    <task>:run:rc:<updated_at>     a stranded task re-enqueued (the edge's reconciler; the record's last change)
    <task>:started:<attempt>       task.started                (agent-runner)
    <task>:agent:<i>:start|done    agent.started / completed   (agent-runner)
    <task>:s<step>:a<attempt>:start|d<n>|done   llm.started / delta / completed (agent-runner)
    <task>:ask:<step>:<call>       task.input_required         (agent-runner)
    <task>:budget:<kind>:warning|exceeded                      (agent-runner)
    <task>:call:<call>             a tool call message         (agent-runner)
    <task>:tool:<call>:start|done  tool.started / completed    (tool-runner; `done` also the agent-runner's own)
    <task>:end                     the terminal event, whoever writes it: a second terminal event is dropped
"""

from __future__ import annotations

__all__ = [
    "agent_completed",
    "agent_started",
    "budget",
    "end",
    "input_required",
    "llm_completed",
    "llm_delta",
    "llm_started",
    "resumed",
    "run_reconciled",
    "run_resumed",
    "run_submitted",
    "started",
    "submitted",
    "tool_call",
    "tool_completed",
    "tool_started",
]


def submitted(task_id: str) -> str:
    return f"{task_id}:submitted"


def run_submitted(task_id: str) -> str:
    return f"{task_id}:run:submitted"


def resumed(task_id: str, ask_seq: int) -> str:
    """The answer to the question asked by the event `ask_seq`."""
    return f"{task_id}:resumed:{ask_seq}"


def run_resumed(task_id: str, ask_seq: int) -> str:
    return f"{task_id}:run:r{ask_seq}"


def run_reconciled(task_id: str, record_updated_at: str) -> str:
    """The reconciler's work message for a task stranded since `record_updated_at`: one per stranding."""
    return f"{task_id}:run:rc:{record_updated_at}"


def started(task_id: str, attempt: int) -> str:
    return f"{task_id}:started:{attempt}"


def agent_started(task_id: str, index: int) -> str:
    return f"{task_id}:agent:{index}:start"


def agent_completed(task_id: str, index: int) -> str:
    return f"{task_id}:agent:{index}:done"


def _llm(task_id: str, step: int, attempt: int) -> str:
    return f"{task_id}:s{step}:a{attempt}"


def llm_started(task_id: str, step: int, attempt: int) -> str:
    return f"{_llm(task_id, step, attempt)}:start"


def llm_delta(task_id: str, step: int, attempt: int, n: int) -> str:
    """The `n`th delta (1-based) of one model call."""
    return f"{_llm(task_id, step, attempt)}:d{n}"


def llm_completed(task_id: str, step: int, attempt: int) -> str:
    return f"{_llm(task_id, step, attempt)}:done"


def input_required(task_id: str, step: int, call_id: str) -> str:
    return f"{task_id}:ask:{step}:{call_id}"


def budget(task_id: str, kind: str, level: str) -> str:
    """`level`: `warning` or `exceeded`."""
    return f"{task_id}:budget:{kind}:{level}"


def tool_call(task_id: str, call_id: str) -> str:
    return f"{task_id}:call:{call_id}"


def tool_started(task_id: str, call_id: str) -> str:
    return f"{task_id}:tool:{call_id}:start"


def tool_completed(task_id: str, call_id: str) -> str:
    return f"{task_id}:tool:{call_id}:done"


def end(task_id: str) -> str:
    return f"{task_id}:end"
