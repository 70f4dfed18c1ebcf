"""The pure mappings of CONTRACT §10: Sluice events → AI SDK UI message chunks, and → AG-UI events.

The logs here are what the runners write (CONTRACT §3); the official JavaScript clients read the same mappings
over HTTP in tests/node.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
from ag_ui.core import Event as AgUiEvent

from sluice.events import (
    AgentCompleted,
    AgentCompletedData,
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
    TaskCanceled,
    TaskCanceledData,
    TaskCompleted,
    TaskCompletedData,
    TaskFailed,
    TaskFailedData,
    TaskInputRequired,
    TaskInputRequiredData,
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
from stream_edge.protocols import ag_ui, ai_sdk
from stream_edge.protocols.facts import TaskFacts

TASK = "01JTASKAAAAAAAAAAAAAAAAAAA"
FACTS = TaskFacts(task_id=TASK, context_id="ctx-0001-conversation", run_id="run-0001-client")
_ag_ui_event: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(AgUiEvent)


def ev(cls: type[Event], data: Any) -> Event:
    return cls(task_id=TASK, ts="2026-12-03T14:00:00.000Z", source="agent-runner", data=data)  # type: ignore[call-arg]


def submitted() -> Event:
    data = TaskSubmittedData(
        input="What is 17*23?", agent="assistant", history=[], metadata={}, context_id=FACTS.context_id
    )
    return ev(TaskSubmitted, data)


def step(n: int, attempt: int, text: str, calls: list[ToolCall] | None = None, *, done: bool = True) -> list[Event]:
    out = [
        ev(LlmStarted, LlmStartedData(step=n, attempt=attempt, model="demo", agent="assistant")),
        ev(LlmDelta, LlmDeltaData(step=n, attempt=attempt, text=text)),
    ]
    if done:
        completed = LlmCompletedData(
            step=n, attempt=attempt, content=text, tool_calls=calls or [], usage=Usage(), finish_reason="stop"
        )
        out.append(ev(LlmCompleted, completed))
    return out


CALL = ToolCall(call_id="call-1", name="calculator", arguments='{"expression": "17*23"}')
TOOL_TASK: list[Event] = [
    submitted(),
    ev(TaskStarted, TaskStartedData(attempt=1, runner="r1")),
    *step(1, 1, "Let me compute.", [CALL]),
    ev(ToolStarted, ToolStartedData(call_id="call-1", name="calculator", arguments=CALL.arguments)),
    ev(ToolCompleted, ToolCompletedData(call_id="call-1", name="calculator", ok=True, result="391")),
    *step(2, 1, "17*23 = 391"),
    ev(TaskCompleted, TaskCompletedData(output="17*23 = 391", usage=Usage(input_tokens=10, output_tokens=5))),
]


def ai_chunks(events: list[Event]) -> list[dict[str, Any]]:
    return [chunk for event in events for chunk in ai_sdk.chunks(event)]


def ag_events(events: list[Event]) -> list[dict[str, Any]]:
    """The AG-UI events as their JSON, each checked against the protocol's own schema."""
    out = []
    for event in events:
        for item in ag_ui.ag_ui_events(event, FACTS):
            body = json.loads(item.model_dump_json(by_alias=True, exclude_none=True))
            _ag_ui_event.validate_python(body)
            out.append(body)
    return out


# ---------------------------------------------------------------- AI SDK


def test_a_tool_task_becomes_steps_text_parts_and_a_tool_part_with_its_input_and_output() -> None:
    got = ai_chunks(TOOL_TASK)
    assert [c["type"] for c in got] == [
        *("start", "start-step", "text-start", "text-delta", "text-end", "tool-input-available", "finish-step"),
        "tool-output-available",
        *("start-step", "text-start", "text-delta", "text-end", "finish-step"),
        "finish",
    ]
    assert got[0] == {
        "type": "start",
        "messageId": TASK,
        "messageMetadata": {"taskId": TASK, "contextId": FACTS.context_id},
    }
    tool_input = got[5]
    assert tool_input == {
        "type": "tool-input-available", "toolCallId": "call-1", "toolName": "calculator",
        "input": {"expression": "17*23"},
    }  # fmt: skip
    assert got[7] == {"type": "tool-output-available", "toolCallId": "call-1", "output": 391}
    assert {c["id"] for c in got if c["type"].startswith("text-")} == {f"{TASK}-s1-a1", f"{TASK}-s2-a1"}
    assert got[-1]["finishReason"] == "stop" and got[-1]["messageMetadata"]["usage"] == {
        "inputTokens": 10,
        "outputTokens": 5,
    }


def test_a_retried_step_ends_the_superseded_part_marked_as_such_and_streams_the_new_attempt_in_a_new_part() -> None:
    log = [submitted(), *step(1, 1, "Half an ans", done=False), *step(1, 2, "The whole answer")]
    got = ai_chunks(log)
    ended = [c for c in got if c["type"] == "text-end"]
    assert ended[0] == {
        "type": "text-end", "id": f"{TASK}-s1-a1",
        "providerMetadata": {"sluice": {"superseded": True, "step": 1, "attempt": 1}},
    }  # fmt: skip
    assert ended[1] == {"type": "text-end", "id": f"{TASK}-s1-a2"}
    # Assembled the way the AI SDK does (parts by id), hiding what is marked superseded: only the new attempt.
    parts: dict[str, str] = {}
    hidden: set[str] = set()
    for c in got:
        if c["type"] == "text-start":
            parts[c["id"]] = ""
        elif c["type"] == "text-delta":
            parts[c["id"]] += c["delta"]
        elif c["type"] == "text-end" and "providerMetadata" in c:
            hidden.add(c["id"])
    assert [text for pid, text in parts.items() if pid not in hidden] == ["The whole answer"]
    assert [c["type"] for c in got].count("start-step") == [c["type"] for c in got].count("finish-step") == 2


def test_an_approval_is_a_tool_approval_request_and_a_data_part_saying_where_to_answer() -> None:
    ask = TaskInputRequiredData(
        prompt="Run calculator?", kind="approval", call_id="call-1", name="calculator", arguments="{}"
    )
    approval, request = ai_sdk.chunks(ev(TaskInputRequired, ask))
    assert approval == {"type": "tool-approval-request", "approvalId": "call-1", "toolCallId": "call-1"}
    assert request["type"] == "data-input-request" and request["id"] == "input-request"
    assert request["data"] == {
        "taskId": TASK, "answer": f"/v1/tasks/{TASK}/input", "state": "waiting", "kind": "approval",
        "prompt": "Run calculator?", "toolCallId": "call-1", "toolName": "calculator",
    }  # fmt: skip
    [answered] = ai_sdk.chunks(ev(TaskResumed, TaskResumedData(input="approved", approved=True)))
    assert (
        answered["id"] == "input-request" and answered["data"]["state"] == "answered" and answered["data"]["approved"]
    )
    [question] = ai_sdk.chunks(ev(TaskInputRequired, TaskInputRequiredData(prompt="Which city?", kind="question")))
    assert question["type"] == "data-input-request" and question["data"]["prompt"] == "Which city?"


def test_crew_stages_are_data_parts_the_completed_one_replacing_the_started_one() -> None:
    started = ai_sdk.chunks(ev(AgentStarted, AgentStartedData(agent="coder", stage=2, stages=4)))
    done = ai_sdk.chunks(ev(AgentCompleted, AgentCompletedData(agent="coder", stage=2, stages=4, output="x")))
    assert started == [
        {"type": "data-stage", "id": "stage-2", "data": {"agent": "coder", "stage": 2, "stages": 4, "state": "working"}}
    ]
    assert done[0]["id"] == "stage-2" and done[0]["data"]["state"] == "completed"


def test_a_failed_task_is_an_error_then_finish_and_a_canceled_one_an_abort_each_closing_with_done() -> None:
    failed = ev(TaskFailed, TaskFailedData(error=ErrorInfo(code="model_unavailable", message="gone"), usage=Usage()))
    assert ai_sdk.chunks(failed) == [
        {"type": "error", "errorText": "model_unavailable: gone"},
        {"type": "finish", "finishReason": "error"},
    ]
    canceled = ev(TaskCanceled, TaskCanceledData(reason="by user"))
    assert ai_sdk.chunks(canceled) == [{"type": "abort", "reason": "by user"}]
    assert ai_sdk.encode_event(42, canceled) == b'id: 42\ndata: {"type":"abort","reason":"by user"}\n\n'
    assert ai_sdk.ENCODING.trailer == b"data: [DONE]\n\n"  # the engine sends it right after the terminal event


def test_each_events_frames_carry_the_event_id_on_the_last_so_a_cut_between_them_resumes_before_the_event() -> None:
    frames = ai_sdk.encode_event(7, TOOL_TASK[2])  # llm.started: start-step, text-start
    assert (
        frames
        == b'data: {"type":"start-step"}\n\nid: 7\ndata: {"type":"text-start","id":"' + TASK.encode() + b'-s1-a1"}\n\n'
    )
    assert ai_sdk.encode_event(8, TOOL_TASK[1]) == b""  # task.started: no chunk, no frame
    assert ai_sdk.HEADERS == (("x-vercel-ai-ui-message-stream", "v1"),)


def test_a_tool_error_is_a_tool_output_error() -> None:
    failed = ev(
        ToolCompleted, ToolCompletedData(call_id="call-1", name="calculator", ok=False, error="division by zero")
    )
    assert ai_sdk.chunks(failed) == [
        {"type": "tool-output-error", "toolCallId": "call-1", "errorText": "division by zero"}
    ]


# ---------------------------------------------------------------- AG-UI


def test_a_tool_task_is_one_run_with_text_messages_and_a_tool_call_with_args_and_result() -> None:
    got = ag_events(TOOL_TASK)
    assert [e["type"] for e in got] == [
        "RUN_STARTED",
        *("TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END"),
        *("TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_RESULT"),
        *("TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END"),
        "RUN_FINISHED",
    ]
    assert got[0]["threadId"] == FACTS.context_id and got[0]["runId"] == FACTS.run_id
    assert got[4] == {
        "type": "TOOL_CALL_START", "toolCallId": "call-1", "toolCallName": "calculator",
        "parentMessageId": f"{TASK}-s1-a1", "timestamp": got[4]["timestamp"],
    }  # fmt: skip
    assert got[5]["delta"] == CALL.arguments and got[7]["content"] == "391" and got[7]["role"] == "tool"
    assert got[-1]["result"] == "17*23 = 391" and got[-1]["threadId"] == FACTS.context_id
    assert all(e["timestamp"] == got[0]["timestamp"] for e in got)  # the Sluice event's ts, not the encoder's clock


def test_crew_stages_are_steps_finished_by_the_name_they_started_with() -> None:
    log = [
        submitted(),
        ev(AgentStarted, AgentStartedData(agent="architect", stage=1, stages=2)),
        *step(1, 1, "plan"),
        ev(AgentCompleted, AgentCompletedData(agent="architect", stage=1, stages=2, output="plan")),
        ev(AgentStarted, AgentStartedData(agent="coder", stage=2, stages=2)),
        *step(2, 1, "code"),
        ev(AgentCompleted, AgentCompletedData(agent="coder", stage=2, stages=2, output="code")),
        ev(TaskCompleted, TaskCompletedData(output="code", usage=Usage())),
    ]
    steps = [(e["type"], e["stepName"]) for e in ag_events(log) if e["type"].startswith("STEP_")]
    assert steps == [
        ("STEP_STARTED", "1/2 architect"), ("STEP_FINISHED", "1/2 architect"),
        ("STEP_STARTED", "2/2 coder"), ("STEP_FINISHED", "2/2 coder"),
    ]  # fmt: skip


def test_a_retried_step_ends_the_superseded_message_before_the_new_attempt_starts() -> None:
    got = ag_events([submitted(), *step(1, 1, "Half", done=False), *step(1, 2, "Whole")])
    opened = [(e["type"], e["messageId"]) for e in got if e["type"] in ("TEXT_MESSAGE_START", "TEXT_MESSAGE_END")]
    assert opened == [
        ("TEXT_MESSAGE_START", f"{TASK}-s1-a1"), ("TEXT_MESSAGE_END", f"{TASK}-s1-a1"),
        ("TEXT_MESSAGE_START", f"{TASK}-s1-a2"), ("TEXT_MESSAGE_END", f"{TASK}-s1-a2"),
    ]  # fmt: skip


def test_failed_and_canceled_runs_end_with_run_error_and_an_empty_delta_is_left_out() -> None:
    failed = ev(
        TaskFailed, TaskFailedData(error=ErrorInfo(code="budget_exceeded", message="too many tokens"), usage=Usage())
    )
    assert ag_events([failed]) == [
        {
            "type": "RUN_ERROR",
            "message": "too many tokens",
            "code": "budget_exceeded",
            "timestamp": ag_events([failed])[0]["timestamp"],
        }
    ]
    [canceled] = ag_events([ev(TaskCanceled, TaskCanceledData(reason="stop"))])
    assert canceled["type"] == "RUN_ERROR" and canceled["code"] == "canceled"
    assert ag_events([ev(LlmDelta, LlmDeltaData(step=1, attempt=1, text=""))]) == []


def test_questions_and_approvals_are_custom_events_naming_where_to_answer() -> None:
    ask = TaskInputRequiredData(prompt="Which city?", kind="question")
    [custom] = ag_events([ev(TaskInputRequired, ask)])
    assert custom["type"] == "CUSTOM" and custom["name"] == "sluice.input_required"
    assert custom["value"]["prompt"] == "Which city?" and custom["value"]["answer"] == f"/v1/tasks/{TASK}/input"


def test_ag_ui_frames_carry_the_event_id_on_the_last_frame() -> None:
    body = ag_ui.encode_event(9, TOOL_TASK[4], FACTS)  # llm.completed with one tool call: four AG-UI events
    blocks = body.decode().split("\n\n")[:-1]
    assert len(blocks) == 4 and blocks[-1].startswith("id: 9\ndata: ")
    assert all(b.startswith("data: ") for b in blocks[:-1])
