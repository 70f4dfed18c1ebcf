"""The A2A view of a Sluice task's log (stream_edge.a2a.mapping), and ListTasks paging (listing): pure, no I/O."""

from __future__ import annotations

from typing import Any

import pytest
from a2a.types import ListTasksRequest, Role, Task, TaskArtifactUpdateEvent, TaskState, TaskStatusUpdateEvent
from a2a.utils.errors import InvalidParamsError
from google.protobuf.json_format import MessageToDict

from sluice.events import (
    AgentStarted,
    AgentStartedData,
    ErrorInfo,
    Event,
    LlmCompleted,
    LlmCompletedData,
    LlmDelta,
    LlmDeltaData,
    LlmStarted,
    LlmStartedData,
    TaskCompleted,
    TaskCompletedData,
    TaskFailed,
    TaskFailedData,
    TaskInputRequired,
    TaskInputRequiredData,
    TaskRecord,
    TaskResumed,
    TaskResumedData,
    TaskStarted,
    TaskStartedData,
    TaskSubmitted,
    TaskSubmittedData,
    ToolCall,
    ToolCompleted,
    ToolCompletedData,
    ToolStarted,
    ToolStartedData,
    Usage,
)
from sluice.ids import new_task_id
from stream_edge.a2a.listing import page_of
from stream_edge.a2a.mapping import REPLAY_EXTENSION, TaskProjection, event_id_of

TS = "2026-11-21T10:00:00.123Z"


class Log:
    """A task's log being written: events with increasing, non-contiguous ids (other tasks share the stream)."""

    def __init__(self, task_id: str | None = None) -> None:
        self.task_id = task_id or new_task_id()
        self.entries: list[tuple[int, Event]] = []
        self.seq = 100

    def add(self, cls: type[Event], data: Any) -> Log:
        self.seq += 7
        self.entries.append((self.seq, cls(task_id=self.task_id, ts=TS, source="test", data=data)))  # type: ignore[call-arg]
        return self

    def submitted(
        self, text: str = "What is 6 * 7?", context_id: str | None = "ctx-1", agent: str = "assistant"
    ) -> Log:
        meta = {"a2a": {"messageId": "m-1"}}
        return self.add(
            TaskSubmitted, TaskSubmittedData(input=text, agent=agent, history=[], metadata=meta, context_id=context_id)
        )

    def step(
        self, step: int, chunks: list[str], *, attempt: int = 1, content: str | None = None, tools: int = 0
    ) -> Log:
        self.add(LlmStarted, LlmStartedData(step=step, attempt=attempt, model="demo", agent="assistant"))
        for chunk in chunks:
            self.add(LlmDelta, LlmDeltaData(step=step, attempt=attempt, text=chunk))
        calls = [
            ToolCall(call_id=f"c{step}{i}", name="calculator", arguments='{"expression":"6*7"}') for i in range(tools)
        ]
        done = LlmCompletedData(
            step=step,
            attempt=attempt,
            content="".join(chunks) if content is None else content,
            tool_calls=calls,
            usage=Usage(),
            finish_reason="tool_calls" if tools else "stop",
        )
        return self.add(LlmCompleted, done)

    def fold(self) -> tuple[TaskProjection, list[Any]]:
        projection = TaskProjection(task_id=self.task_id)
        out = [(seq, projection.apply(seq, event)) for seq, event in self.entries]
        return projection, [(seq, e) for seq, e in out if e is not None]


def assistant_run() -> Log:
    log = Log().submitted()
    log.add(TaskStarted, TaskStartedData(attempt=1, runner="r1"))
    log.step(1, [], tools=1)
    log.add(ToolStarted, ToolStartedData(call_id="c10", name="calculator", arguments='{"expression":"6*7"}'))
    log.add(ToolCompleted, ToolCompletedData(call_id="c10", name="calculator", ok=True, result="42", duration_ms=3))
    log.step(2, ["The answer ", "is ", "42."])
    log.add(TaskCompleted, TaskCompletedData(output="The answer is 42.", usage=Usage()))
    return log


def as_json(event: Any) -> dict[str, Any]:
    return MessageToDict(event)


def test_a_run_streams_status_updates_and_one_artifact_of_chunks_ending_with_a_last_chunk() -> None:
    log = assistant_run()
    projection, out = log.fold()
    kinds = [type(e).__name__ for _, e in out]
    assert kinds == [
        "TaskStatusUpdateEvent",  # submitted
        "TaskStatusUpdateEvent",  # working
        "TaskStatusUpdateEvent",  # calling calculator
        "TaskStatusUpdateEvent",  # calculator returned 42
        "TaskArtifactUpdateEvent",
        "TaskArtifactUpdateEvent",
        "TaskArtifactUpdateEvent",
        "TaskArtifactUpdateEvent",  # the last chunk
        "TaskStatusUpdateEvent",  # completed
    ]
    chunks = [e for _, e in out if isinstance(e, TaskArtifactUpdateEvent)]
    assert [(c.append, c.last_chunk) for c in chunks] == [(False, False), (True, False), (True, False), (True, True)]
    assert "".join(p.text for c in chunks for p in c.artifact.parts) == "The answer is 42."
    assert {c.artifact.artifact_id for c in chunks} == {"step-2"}
    assert chunks[0].artifact.name == "assistant"
    tool = out[2][1]
    assert isinstance(tool, TaskStatusUpdateEvent)
    assert tool.status.state == TaskState.TASK_STATE_WORKING
    assert tool.status.message.parts[0].text.startswith("Calling calculator(")
    assert MessageToDict(tool.status.message.parts[1].data)["event"] == "tool.started"
    assert "42" in out[3][1].status.message.parts[0].text
    assert out[-1][1].status.state == TaskState.TASK_STATE_COMPLETED
    assert projection.final

    task = projection.snapshot()
    assert task.id == log.task_id and task.context_id == "ctx-1"
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert [a.parts[0].text for a in task.artifacts] == ["The answer is 42."]
    assert task.history[0].role == Role.ROLE_USER and task.history[0].message_id == "m-1"
    assert task.history[0].parts[0].text == "What is 6 * 7?"


def test_every_stream_event_carries_the_id_of_the_sluice_event_it_came_from() -> None:
    log = assistant_run()
    _, out = log.fold()
    for seq, event in out:
        assert event_id_of(as_json(event).get("metadata")) == str(seq)
    ids = [int(event_id_of(as_json(e)["metadata"]) or 0) for _, e in out]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


@pytest.mark.parametrize("cut", range(0, 20))
def test_resuming_after_any_delivered_event_repeats_and_loses_nothing(cut: int) -> None:
    log = assistant_run()
    _, whole = log.fold()
    cut = min(cut, len(whole) - 1)
    last_seen = whole[cut][0]
    resumed = TaskProjection(task_id=log.task_id)
    rest = []
    for seq, event in log.entries:
        shown = resumed.apply(seq, event)
        if seq > last_seen and shown is not None:
            rest.append(as_json(shown))
    assert rest == [as_json(e) for _, e in whole[cut + 1 :]]


def test_a_retried_step_replaces_the_earlier_attempts_text() -> None:
    log = Log().submitted()
    log.add(LlmStarted, LlmStartedData(step=1, attempt=1, model="demo", agent="assistant"))
    log.add(LlmDelta, LlmDeltaData(step=1, attempt=1, text="Hel"))
    log.step(1, ["Hi ", "there"], attempt=2)
    log.add(LlmDelta, LlmDeltaData(step=1, attempt=1, text="lo"))  # a straggler of attempt 1: dropped
    projection, out = log.fold()
    chunks = [e for _, e in out if isinstance(e, TaskArtifactUpdateEvent)]
    assert [(c.append, c.artifact.parts[0].text) for c in chunks] == [
        (False, "Hel"),
        (False, "Hi "),  # the new attempt starts the artifact afresh
        (True, "there"),
        (True, ""),  # last chunk: the text streamed is the content
    ]
    assert projection.snapshot().artifacts[0].parts[0].text == "Hi there"


def test_a_last_chunk_replaces_the_artifact_when_the_streamed_text_differs_from_the_content() -> None:
    log = Log().submitted().step(1, ["partial"], content="the whole answer")
    _, out = log.fold()
    last = out[-1][1]
    assert isinstance(last, TaskArtifactUpdateEvent)
    assert (last.append, last.last_chunk, last.artifact.parts[0].text) == (False, True, "the whole answer")


def test_a_step_without_text_makes_no_artifact() -> None:
    projection, out = Log().submitted().step(1, [], tools=1).fold()
    assert not any(isinstance(e, TaskArtifactUpdateEvent) for _, e in out)
    assert list(projection.snapshot().artifacts) == []


def test_a_question_interrupts_the_stream_and_the_answer_resumes_it() -> None:
    log = Log().submitted()
    log.add(TaskInputRequired, TaskInputRequiredData(prompt="Which city?", kind="question"))
    projection, out = log.fold()
    ask = out[-1][1]
    assert ask.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert ask.status.message.parts[0].text == "Which city?"
    assert projection.final
    assert projection.snapshot().status.message.parts[0].text == "Which city?"

    log.add(TaskResumed, TaskResumedData(input="Paris"))
    projection, out = log.fold()
    assert out[-1][1].status.state == TaskState.TASK_STATE_WORKING
    assert not projection.final
    answer = projection.snapshot().history[-1]
    assert answer.role == Role.ROLE_USER and answer.parts[0].text == "Paris"


def test_an_approval_request_says_what_to_approve_and_how_to_reply() -> None:
    log = Log().submitted()
    data = TaskInputRequiredData(
        prompt="Approve calculator?", kind="approval", call_id="c1", name="calculator", arguments='{"expression":"1"}'
    )
    log.add(TaskInputRequired, data)
    _, out = log.fold()
    details = MessageToDict(out[-1][1].status.message.parts[1].data)
    assert details["kind"] == "approval" and details["name"] == "calculator" and details["callId"] == "c1"
    assert details["reply"] == {"approve": "boolean"}


def test_crew_stages_show_as_status_messages_and_one_artifact_per_stage_agent() -> None:
    log = Log().submitted(agent="dev-team")
    for stage, agent in enumerate(["architect", "coder"], start=1):
        log.add(AgentStarted, AgentStartedData(agent=agent, stage=stage, stages=2))
        log.add(LlmStarted, LlmStartedData(step=stage, attempt=1, model="demo", agent=agent))
        log.add(LlmDelta, LlmDeltaData(step=stage, attempt=1, text=f"{agent} output"))
    projection, out = log.fold()
    texts = [
        e.status.message.parts[0].text
        for _, e in out
        if isinstance(e, TaskStatusUpdateEvent) and e.status.message.parts
    ]
    assert "Stage 1/2: architect started" in texts and "Stage 2/2: coder started" in texts
    assert [a.name for a in projection.snapshot().artifacts] == ["architect", "coder"]


def test_a_failure_carries_the_error_code_and_message() -> None:
    log = Log().submitted()
    log.add(
        TaskFailed, TaskFailedData(error=ErrorInfo(code="budget_exceeded", message="too many steps"), usage=Usage())
    )
    _, out = log.fold()
    failed = out[-1][1]
    assert failed.status.state == TaskState.TASK_STATE_FAILED
    assert MessageToDict(failed.status.message.parts[1].data)["error"]["code"] == "budget_exceeded"


def test_the_record_state_overrides_the_logs_view_in_a_snapshot() -> None:
    projection, _ = Log().submitted().fold()
    task = projection.snapshot(state="canceled")
    assert task.status.state == TaskState.TASK_STATE_CANCELED
    assert task.metadata[REPLAY_EXTENSION]["eventId"] == str(projection.seq)


def test_a_task_without_a_context_is_its_own_context() -> None:
    log = Log().submitted(context_id=None)
    projection, _ = log.fold()
    assert isinstance(projection.snapshot(), Task)
    assert projection.snapshot().context_id == log.task_id


# ---------------------------------------------------------------- listing


def record(n: int, *, state: str = "completed", context: str | None = None, updated: str | None = None) -> TaskRecord:
    return TaskRecord(
        id=f"TASK{n:08d}",
        state=state,  # type: ignore[arg-type]
        agent="assistant",
        input=f"question {n}",
        output=f"answer {n}",
        created_at=f"2026-11-21T10:00:{n:02d}.000Z",
        updated_at=updated or f"2026-11-21T10:01:{n:02d}.000Z",
        context_id=context,
    )


def test_list_pages_run_newest_update_first_and_tokens_walk_every_task_once() -> None:
    records = [record(n) for n in range(7)]
    seen: list[str] = []
    token = ""
    while True:
        page = page_of(records, ListTasksRequest(page_size=3, page_token=token))
        assert page.total_size == 7 and page.page_size == 3
        seen += [r.id for r in page.records]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"TASK{n:08d}" for n in reversed(range(7))]


def test_list_filters_by_context_and_state() -> None:
    records = [record(1, context="a"), record(2, context="b"), record(3, context="a", state="failed"), record(4)]
    assert [r.id for r in page_of(records, ListTasksRequest(context_id="a")).records] == [
        "TASK00000003",
        "TASK00000001",
    ]
    failed = page_of(records, ListTasksRequest(status=TaskState.TASK_STATE_FAILED))
    assert [r.id for r in failed.records] == ["TASK00000003"]
    assert [r.id for r in page_of(records, ListTasksRequest(context_id="TASK00000004")).records] == ["TASK00000004"]


def test_a_page_token_not_issued_here_is_invalid_params() -> None:
    with pytest.raises(InvalidParamsError):
        page_of([record(1)], ListTasksRequest(page_token="not-a-token"))
