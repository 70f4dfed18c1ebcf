"""Budgets end to end: a budget sent with `POST /v1/tasks` reaches the agent-runner *process* (through the edge,
the task.submitted event and the work queue) and stops the task there — warning first, then `budget.exceeded` and
`task.failed` with `budget_exceeded`, the record failed with the same error. The in-process tests
(integration/test_agent_runner_control.py) prove each kind's arithmetic; this proves the path.

An agent's limits are ceilings: a task asking for more steps or tokens than its agent allows runs with the agent's
limit and stops there, and `task.started` says which limits it runs with. Those tests run their own stack, whose
agent-runner reads an agents file with low ceilings.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.stack import Stack, running_stack, stack
from support.waiting import wait_until

__all__ = ["stack"]  # the fixture, imported for pytest

pytestmark = pytest.mark.slow


CAPPED_AGENTS = """
[agents.few-steps]
instructions = "You are a test agent with a one-step ceiling."
tools = ["calculator"]
max_steps = 1

[agents.few-tokens]
instructions = "You are a test agent with a five-token ceiling."
max_output_tokens = 5
"""


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose agent-runner serves only the agents of CAPPED_AGENTS."""
    root = tmp_path_factory.mktemp("capped-stack")
    agents_file = Path(root / "agents.toml")
    agents_file.write_text(CAPPED_AGENTS, encoding="utf-8")
    with running_stack(root, service_env={"agent-runner": {"SLUICE_AGENTS_FILE": str(agents_file)}}) as started:

        def served() -> bool:
            agents = httpx.get(f"{started.edge_url}/v1/agents", timeout=10).json()["agents"]
            tools = httpx.get(f"{started.edge_url}/v1/tools", timeout=10).json()["tools"]
            live = {a["name"] for a in agents if a["runners"]} | {t["name"] for t in tools if t["runners"]}
            return {"few-steps", "few-tokens", "calculator"} <= live

        wait_until(served, timeout_s=30, what="the capped agents and the calculator in the catalog")
        yield started


def create(stack: Stack, text: str, budget: dict[str, Any], agent: str = "assistant") -> str:
    body = {"input": f"{text} ({uuid.uuid4().hex[:8]})", "budget": budget, "agent": agent}
    created = httpx.post(f"{stack.edge_url}/v1/tasks", json=body, timeout=10)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def ended(stack: Stack, task_id: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = stack.task_record(task_id)
        return body if body["state"] in ("completed", "failed", "canceled") else None

    return wait_until(probe, timeout_s=45, what=f"task {task_id} to end")


def data_of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == kind]


@pytest.mark.parametrize(
    ("text", "budget", "kind"),
    [
        ("Tell me a story", {"max_output_tokens": 5}, "tokens"),
        ("What is 17*23?", {"max_steps": 1}, "steps"),
        ("Tell me a long story [fault:slow:100]", {"timeout_s": 0.8}, "time_s"),
    ],
)
def test_a_budget_sent_over_http_stops_the_task_in_the_runner_process(
    stack: Stack, text: str, budget: dict[str, Any], kind: str
) -> None:
    task_id = create(stack, text, budget)
    record = ended(stack, task_id)
    events = stack.task_log(task_id)
    types = [e["type"] for e in events]
    assert types[-2:] == ["budget.exceeded", "task.failed"], types
    assert types.index("budget.warning") < types.index("budget.exceeded"), types
    [exceeded] = data_of(events, "budget.exceeded")
    assert data_of(events, "budget.warning")[-1]["kind"] == exceeded["kind"] == kind
    assert exceeded["used"] >= exceeded["limit"] == next(iter(budget.values())), exceeded
    [failed] = data_of(events, "task.failed")
    assert failed["error"]["code"] == "budget_exceeded" and kind in failed["error"]["message"], failed
    assert record["state"] == "failed" and record["error"]["code"] == "budget_exceeded", record
    # The runner records the end before it publishes it (one terminal event, last), then names the event in the
    # record: the record catches up with the log's terminal event.
    wait_until(
        lambda: stack.task_record(task_id)["last_event_id"] == events[-1]["id"],
        timeout_s=15,
        what="the record to name the terminal event",
    )
    if kind == "time_s":
        assert "llm.completed" not in types  # cut mid-stream, not at the end of the step
    [submitted] = data_of(events, "task.submitted")
    assert submitted["budget"] == budget  # what the runner read is what was sent
    [started] = data_of(events, "task.started")
    assert started["budget"].items() >= budget.items(), started  # lower than the agent's: the task's own applies


def test_a_budget_that_is_only_reached_warns_and_the_task_completes(stack: Stack) -> None:
    task_id = create(stack, "What is 17*23?", {"max_steps": 2})
    record = ended(stack, task_id)
    assert record["state"] == "completed" and "391" in record["output"], record
    events = stack.task_log(task_id)
    assert [(w["kind"], w["used"], w["limit"]) for w in data_of(events, "budget.warning")] == [("steps", 2, 2)]
    assert "budget.exceeded" not in [e["type"] for e in events]


@pytest.mark.parametrize(
    ("agent", "text", "asked", "kind", "ceiling", "runs_with"),
    [
        ("few-steps", "What is 17*23?", {"max_steps": 50}, "steps", 1, {"max_steps": 1}),
        ("few-tokens", "Tell me a story", {"max_output_tokens": 100_000}, "tokens", 5,
         {"max_output_tokens": 5, "max_steps": 10}),
    ],
)  # fmt: skip
def test_a_budget_above_the_agents_ceiling_runs_with_the_ceiling_and_stops_there(
    capped: Stack,
    agent: str,
    text: str,
    asked: dict[str, Any],
    kind: str,
    ceiling: int,
    runs_with: dict[str, Any],
) -> None:
    task_id = create(capped, text, asked, agent=agent)
    record = ended(capped, task_id)
    events = capped.task_log(task_id)
    types = [e["type"] for e in events]
    assert types[-2:] == ["budget.exceeded", "task.failed"], types
    [exceeded] = data_of(events, "budget.exceeded")
    assert exceeded["kind"] == kind and exceeded["limit"] == ceiling, exceeded
    assert record["state"] == "failed" and record["error"]["code"] == "budget_exceeded", record
    [submitted] = data_of(events, "task.submitted")
    assert submitted["budget"] == asked  # the log keeps what was asked ...
    [started] = data_of(events, "task.started")
    assert started["budget"] == runs_with  # ... and says what the task ran with
    if kind == "steps":
        assert len(data_of(events, "llm.completed")) == ceiling, types
