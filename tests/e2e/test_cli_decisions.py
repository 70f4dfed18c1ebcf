"""`sluice input --approve / --deny` and `sluice schema` against the whole stack as processes, read from pipes.

An approval is answered from another shell while the task waits: the decision must reach the runner (the tool
runs, or is skipped and the model told), and the log must say which. `sluice schema` must describe what Sluice
really sends: every event a real task served validates against it, and malformed ones do not.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import httpx
import jsonschema_rs
import pytest

from sluice.events import LOG_EVENT_CLASSES, event_type
from support.procs import SLUICE
from support.stack import Stack, stack
from support.waiting import wait_until

__all__ = ["stack"]  # the fixture, imported for pytest

pytestmark = pytest.mark.slow


def sluice(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SLUICE, *args], env=stack.client_env(), capture_output=True, text=True, timeout=60, check=False
    )


def waiting_for_approval(stack: Stack, question: str) -> str:
    """A careful-assistant task created over HTTP, once its record says it waits for the approval."""
    created = httpx.post(
        f"{stack.edge_url}/v1/tasks", json={"input": question, "agent": "careful-assistant"}, timeout=10
    )
    assert created.status_code == 201, created.text
    task_id = str(created.json()["id"])
    wait_until(lambda: stack.task_record(task_id)["state"] == "input-required", timeout_s=30, what="the approval ask")
    return task_id


def finished(stack: Stack, task_id: str) -> dict[str, Any]:
    return wait_until(
        lambda: (r := stack.task_record(task_id))["state"] in ("completed", "failed", "canceled") and r,
        timeout_s=30,
        what=f"task {task_id} to end",
    )


def data_of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == kind]


@pytest.mark.parametrize(("flag", "approved"), [("--approve", True), ("--deny", False)])
def test_input_approve_or_deny_decides_whether_the_tool_runs(stack: Stack, flag: str, approved: bool) -> None:
    task_id = waiting_for_approval(stack, "What is 7*8?")
    [ask] = data_of(stack.task_log(task_id), "task.input_required")
    assert ask["kind"] == "approval" and ask["name"] == "calculator", ask

    answered = sluice(stack, "input", task_id, flag)
    assert answered.returncode == 0, answered.stderr

    done = finished(stack, task_id)
    assert done["state"] == "completed", done
    events = stack.task_log(task_id)
    [resumed] = data_of(events, "task.resumed")
    assert resumed["approved"] is approved, resumed
    [result] = data_of(events, "tool.completed")
    if approved:
        assert result["ok"] is True and result["result"] == "56", result
        assert "56" in done["output"]
    else:
        assert result["ok"] is False and "denied" in result["error"], result
        assert "denied by the user" in done["output"] and "56" not in done["output"], done["output"]


def test_input_refuses_a_decision_and_an_answer_together_and_a_task_that_does_not_wait(stack: Stack) -> None:
    both = sluice(stack, "input", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "yes", "--approve")
    assert both.returncode == 2 and "give either TEXT or one of --approve / --deny" in both.stderr
    either = sluice(stack, "input", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "--approve", "--deny")
    assert either.returncode == 2 and "not allowed with argument" in either.stderr

    task_id = waiting_for_approval(stack, "What is 2*3?")
    assert sluice(stack, "input", task_id, "--approve").returncode == 0
    finished(stack, task_id)
    again = sluice(stack, "input", task_id, "--deny")  # nothing waits any more
    assert again.returncode == 1 and again.stderr.startswith("sluice: ") and again.stderr.count("\n") == 1
    assert [r["approved"] for r in data_of(stack.task_log(task_id), "task.resumed")] == [True]


@pytest.fixture(scope="module")
def wire_schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    printed = subprocess.run([SLUICE, "schema"], capture_output=True, text=True, timeout=60, check=False)
    assert printed.returncode == 0, printed.stderr
    schema: dict[str, Any] = json.loads(printed.stdout)
    (tmp_path_factory.mktemp("schema") / "sluice.schema.json").write_text(printed.stdout)
    return schema


def test_schema_is_json_schema_2020_12_naming_every_wire_type(wire_schema: dict[str, Any]) -> None:
    assert wire_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema_rs.Draft202012Validator(wire_schema)  # a schema that is not one raises here
    defs = set(wire_schema["$defs"])
    names = {cls.__name__ for cls in LOG_EVENT_CLASSES}
    assert names | {"StreamGap", "TaskSnapshot", "TaskRecord", "WorkMessage", "ToolCallMessage"} <= defs
    tags = {wire_schema["$defs"][cls.__name__]["properties"]["type"]["enum"][0] for cls in LOG_EVENT_CLASSES}
    assert tags == {event_type(cls) for cls in LOG_EVENT_CLASSES}


def test_every_event_a_real_task_served_validates_and_broken_ones_do_not(
    stack: Stack, wire_schema: dict[str, Any]
) -> None:
    ran = sluice(stack, "run", "--json", "What is 12*12?")
    assert ran.returncode == 0, ran.stderr
    events = [json.loads(line) for line in ran.stdout.splitlines()]
    kinds = {e["type"] for e in events}
    assert {"task.submitted", "llm.delta", "tool.started", "tool.completed", "task.completed"} <= kinds, kinds
    validator = jsonschema_rs.Draft202012Validator(wire_schema)
    for event in events:
        errors = [e.message for e in validator.iter_errors(event)]
        assert not errors, (event, errors)
    assert validator.is_valid(stack.task_record(events[0]["task_id"]))  # the record is one of the wire types too

    completed = events[-1]
    broken = [
        {**completed, "type": "task.exploded"},  # no such event
        {k: v for k, v in completed.items() if k != "task_id"},  # a required field missing
        {**completed, "data": {**completed["data"], "output": 42}},  # a field of the wrong type
    ]
    for event in broken:
        assert not validator.is_valid(event), event
