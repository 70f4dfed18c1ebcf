"""Folding a task's events into what a person sees: retries, duplicates, gaps, tools, stages, the end."""

from __future__ import annotations

from typing import Any

from sluice import events as ev
from sluice.client.transcript import Transcript
from sluice.ids import new_task_id
from support.clients import scripted_events

TASK = new_task_id()
USAGE = ev.Usage(input_tokens=3, output_tokens=2, cost_usd=0.5)


def make(cls: type[ev.Event], data: Any, event_id: int | None) -> ev.Event:
    event = cls(task_id=TASK, ts="2026-01-01T00:00:01.000Z", source="t", data=data)  # type: ignore[call-arg]
    event.id = None if event_id is None else str(event_id)
    return event


def started(step: int, attempt: int, i: int) -> ev.Event:
    return make(ev.LlmStarted, ev.LlmStartedData(step=step, attempt=attempt, model="m", agent="a"), i)


def delta(step: int, attempt: int, text: str, i: int) -> ev.Event:
    return make(ev.LlmDelta, ev.LlmDeltaData(step=step, attempt=attempt, text=text), i)


def completed(step: int, attempt: int, content: str, i: int, calls: list[ev.ToolCall] | None = None) -> ev.Event:
    data = ev.LlmCompletedData(step=step, attempt=attempt, content=content, tool_calls=calls or [], usage=USAGE,
                               finish_reason="stop")  # fmt: skip
    return make(ev.LlmCompleted, data, i)


def fold(events: list[ev.Event]) -> tuple[Transcript, list[str]]:
    t = Transcript()
    kinds = [u.kind for e in events for u in t.apply(e)]
    return t, kinds


def test_a_retried_step_drops_the_text_of_the_superseded_attempt() -> None:
    t, kinds = fold([
        started(1, 1, 1), delta(1, 1, "Hel", 2), delta(1, 1, "lo wor", 3),
        started(1, 2, 4), delta(1, 1, "ld (late)", 5), delta(1, 2, "Hello", 6), delta(1, 2, " world", 7),
        completed(1, 2, "Hello world", 8),
    ])  # fmt: skip
    assert t.text == "Hello world"
    assert kinds.count("restart") == 1
    assert t.steps[0].attempt == 2 and t.steps[0].done


def test_a_delta_of_a_higher_attempt_restarts_the_step_even_when_its_llm_started_was_missed() -> None:
    t, kinds = fold([started(1, 1, 1), delta(1, 1, "abc", 2), delta(1, 2, "xyz", 5)])
    assert t.text == "xyz"
    assert "restart" in kinds


def test_events_at_or_below_the_last_id_are_ignored() -> None:
    events = scripted_events(TASK, text=["a", "b", "c"])
    t = Transcript()
    for event in events[:5]:
        t.apply(event)
    for event in events:  # the overlap of a reconnect
        t.apply(event)
    assert t.text == "abc"
    assert t.state == "completed"
    assert t.output == "abc"


def test_completed_content_fills_in_deltas_that_were_never_seen() -> None:
    t, kinds = fold([started(1, 1, 1), delta(1, 1, "Hel", 2), completed(1, 1, "Hello there", 9)])
    assert t.text == "Hello there"
    assert kinds == ["text", "text", "step_done"]


def test_tool_calls_are_tracked_from_request_to_result() -> None:
    t, kinds = fold(scripted_events(TASK, tool=("calculator", '{"expression":"17*23"}', "391")))
    tool = t.tools["c1"]
    assert (tool.name, tool.ok, tool.result, tool.duration_ms) == ("calculator", True, "391", 12)
    assert kinds.index("tool_call") < kinds.index("tool_started") < kinds.index("tool_done")


def test_crew_stages_read_as_position_and_agent() -> None:
    t, kinds = fold([
        make(ev.AgentStarted, ev.AgentStartedData(agent="architect", stage=1, stages=4), 1),
        make(ev.AgentCompleted, ev.AgentCompletedData(agent="architect", stage=1, stages=4, output="design"), 2),
        make(ev.AgentStarted, ev.AgentStartedData(agent="coder", stage=2, stages=4), 3),
        started(1, 1, 4), delta(1, 1, "code", 5),
    ])  # fmt: skip
    assert t.stage is not None and t.stage.label == "2/4 coder"
    assert kinds == ["stage_started", "stage_done", "stage_started", "text"]
    assert [s.stage for s in t.steps] == [2]


def test_state_follows_questions_resumption_and_the_end() -> None:
    events = scripted_events(TASK, ask="What is your name?", end="failed")
    t = Transcript()
    states = []
    for event in events:
        t.apply(event)
        states.append(t.state)
    assert "input-required" in states
    assert states[-1] == "failed"
    assert t.error is not None and t.error.code == "model_error"
    assert t.input_request is None
    assert t.elapsed_s() >= 0


def test_a_gap_is_reported_and_does_not_count_as_the_first_event() -> None:
    gap = make(ev.StreamGap, ev.StreamGapData(after="0", oldest="40"), None)
    t, kinds = fold([gap, started(1, 1, 40)])
    assert kinds == ["gap"]
    assert t.first_ts is not None


def test_a_new_attempt_after_an_answer_is_not_a_recovery_but_one_without_is() -> None:
    events = scripted_events(TASK, ask="Name?")
    resumed = next(i for i, e in enumerate(events) if isinstance(e, ev.TaskResumed))
    after_answer = make(ev.TaskStarted, ev.TaskStartedData(attempt=2, runner="r2"), 10_000)
    crash = make(ev.TaskStarted, ev.TaskStartedData(attempt=3, runner="r3"), 10_001)
    t, kinds = fold([*events[: resumed + 1], after_answer, crash])
    assert kinds[-2:] == ["state", "recovered"]
    assert t.attempt == 3
