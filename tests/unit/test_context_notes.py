"""What a conversation's history says for a turn without an answer (the rest is proved in test_contexts.py)."""

from __future__ import annotations

from sluice.events import ErrorInfo, TaskRecord
from stream_edge.contexts import unanswered_note


def record(state: str, error: ErrorInfo | None = None) -> TaskRecord:
    return TaskRecord(
        id="TASK00000001", state=state, agent="assistant", input="q", created_at="t", updated_at="t", error=error
    )  # type: ignore[arg-type]


def test_a_failed_turn_names_its_error_and_says_its_partial_output_is_left_out() -> None:
    note = unanswered_note(record("failed", ErrorInfo(code="model_unavailable", message="gone")))
    assert note == "[no answer: it failed (model_unavailable: gone); its partial output is left out]"


def test_a_canceled_turn_and_a_running_one_say_so() -> None:
    assert unanswered_note(record("canceled")) == "[no answer: it was canceled; its partial output is left out]"
    assert "still running" in unanswered_note(record("working"))
    assert "still running" in unanswered_note(None)
