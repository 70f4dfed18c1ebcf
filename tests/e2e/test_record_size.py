"""A task record has a maximum size: an answer longer than the record keeps (RECORD_OUTPUT_MAX_BYTES) still
completes, through the edge, the agent-runner and the demo model as processes; its record holds the answer's start
and says it was cut, and the log holds every character of it (the deltas, `llm.completed`, `task.completed`)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from sluice import limits
from support.stack import Stack, stack
from support.waiting import wait_until

__all__ = ["stack"]  # the fixture, imported for pytest

pytestmark = pytest.mark.slow

ANSWER_CHARS = 100_000  # over the 64 KiB the record keeps, well under the 1 MiB an event may be


def test_an_answer_over_the_record_cap_completes_with_a_cut_record_and_a_whole_log(stack: Stack) -> None:
    body = {"input": f"Tell me a long story [fault:long:{ANSWER_CHARS}] ({uuid.uuid4().hex[:8]})"}
    created = httpx.post(f"{stack.edge_url}/v1/tasks", json=body, timeout=10)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]

    def ended() -> bool:
        record = stack.task_record(task_id)
        return record["state"] in ("completed", "failed", "canceled") and record["last_event_id"] is not None

    wait_until(ended, timeout_s=60, what=f"task {task_id} to end and its record to name the terminal event")
    events = stack.task_log(task_id)
    assert events[-1]["type"] == "task.completed", [e["type"] for e in events][-5:]
    wait_until(lambda: stack.task_record(task_id)["last_event_id"] == events[-1]["id"], timeout_s=15,
               what="the record to name the terminal event")  # fmt: skip
    served = httpx.get(f"{stack.edge_url}/v1/tasks/{task_id}", timeout=10)
    record = served.json()
    assert len(served.content) < limits.RECORD_MAX_BYTES
    assert record["state"] == "completed" and record["output_truncated"] is True, {**record, "output": "…"}
    kept = record["output"].encode()
    assert limits.RECORD_OUTPUT_MAX_BYTES - 4 < len(kept) <= limits.RECORD_OUTPUT_MAX_BYTES

    answer = events[-1]["data"]["output"]
    assert len(answer) == ANSWER_CHARS and answer.startswith(record["output"])
    [completed] = [e["data"] for e in events if e["type"] == "llm.completed"]
    assert completed["content"] == answer
    assert "".join(e["data"]["text"] for e in events if e["type"] == "llm.delta") == answer
