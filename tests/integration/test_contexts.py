"""Conversations (CONTRACT §10): a context's earlier turns become a new task's history, rebuilt from the logs.

A real nats-server, the demo model, an in-process agent-runner and the edge on a real socket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sluice.events import HistoryMessage, TaskCompleted, TaskSubmitted
from support.edge import EdgeUnderTest, published, running_edge
from support.runners import RunnerStack, runner_stack, wait_for_end

pytestmark = pytest.mark.timeout(90)


@dataclass
class Sluice:
    stack: RunnerStack
    edge: EdgeUnderTest

    @property
    def http(self) -> httpx.AsyncClient:
        return self.edge.client


@pytest.fixture(scope="module")
async def sluice(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sluice]:
    root: Path = tmp_path_factory.mktemp("contexts")
    async with runner_stack(root) as stack, running_edge(stack.common, stack.bus) as edge:
        yield Sluice(stack, edge)


async def finished(sluice: Sluice, body: dict[str, object]) -> tuple[dict[str, object], TaskSubmitted, str]:
    """Submits a task and waits for its end: (record at creation, its task.submitted, its terminal type)."""
    response = await sluice.http.post("/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    record = response.json()
    events = await wait_for_end(sluice.stack.bus, record["id"])
    first = events[0]
    assert isinstance(first, TaskSubmitted)
    return record, first, type(events[-1]).__name__


async def test_a_task_without_a_context_starts_one_and_a_follow_up_gets_its_turns_as_history(sluice: Sluice) -> None:
    first, submitted, end = await finished(sluice, {"input": "What is 6 * 7?"})
    context = first["context_id"]
    assert isinstance(context, str) and len(context) >= 8 and submitted.data.context_id == context
    assert end == "TaskCompleted"
    answer = (await sluice.http.get(f"/v1/tasks/{first['id']}")).json()["output"]
    assert answer

    second, follow, _ = await finished(sluice, {"input": "And 7 * 8?", "context_id": context})
    assert second["context_id"] == context
    assert follow.data.history == [
        HistoryMessage(role="user", content="What is 6 * 7?"),
        HistoryMessage(role="assistant", content=answer),
    ]
    third, last, _ = await finished(sluice, {"input": "Thanks", "context_id": context, "history": []})
    assert [m.content for m in last.data.history][:3] == ["What is 6 * 7?", answer, "And 7 * 8?"]
    assert len(last.data.history) == 4

    view = (await sluice.http.get(f"/v1/contexts/{context}")).json()
    assert view["id"] == context
    assert [t["id"] for t in view["tasks"]] == [first["id"], second["id"], third["id"]]
    assert all(t["context_id"] == context for t in view["tasks"])


async def test_a_failed_turn_keeps_its_question_and_says_its_partial_output_is_left_out(sluice: Sluice) -> None:
    # The demo model streams a few words and then fails every attempt: the task fails with partial output logged.
    failed, _, end = await finished(sluice, {"input": "Tell me a story [fault:cut:3]"})
    assert end == "TaskFailed"
    context = failed["context_id"]
    _, follow, _ = await finished(sluice, {"input": "Try again", "context_id": context})
    question, note = follow.data.history
    assert question == HistoryMessage(role="user", content="Tell me a story [fault:cut:3]")
    assert note.role == "assistant" and "no answer" in note.content and "partial output is left out" in note.content
    assert "failed" in note.content


async def test_a_context_named_by_the_caller_is_created_and_its_first_task_has_no_history(sluice: Sluice) -> None:
    context = "chat-0123456789abcdef"
    record, submitted, _ = await finished(sluice, {"input": "hello", "context_id": context})
    assert record["context_id"] == context and submitted.data.history == []
    events = await wait_for_end(sluice.stack.bus, record["id"])
    assert isinstance(events[-1], TaskCompleted)
    assert [t["id"] for t in (await sluice.http.get(f"/v1/contexts/{context}")).json()["tasks"]] == [record["id"]]


@pytest.mark.parametrize("bad", ["short", "has space here", "dots.in.it.here", "*wildcard*", "x" * 65])
async def test_a_malformed_context_id_is_refused_and_nothing_is_written(sluice: Sluice, bad: str) -> None:
    before = await published(sluice.stack.bus)
    response = await sluice.http.post("/v1/tasks", json={"input": "hi", "context_id": bad})
    assert response.status_code == 422
    assert await published(sluice.stack.bus) == before


async def test_reading_an_unknown_or_malformed_context_is_404_or_400(sluice: Sluice) -> None:
    missing = await sluice.http.get("/v1/contexts/NOSUCHCONTEXT0001")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "context_not_found"
    malformed = await sluice.http.get("/v1/contexts/bad%2Aid%2A%2A")
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_context_id"
