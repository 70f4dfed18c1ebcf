"""What the CLI shows for a task, decided without a terminal; and how edge errors become sluice errors."""

from __future__ import annotations

import io

import httpx
import pytest
from rich.console import Console

from sluice import events as ev
from sluice.client.errors import error_from_response, error_from_transport
from sluice.client.transcript import Transcript
from sluice.errors import Conflict, Forbidden, InvalidInput, NotFound, SluiceError, Unauthenticated, Unavailable
from sluice.ids import new_task_id
from sluice_cli.render import PlainView, format_arguments, format_cost, format_duration, lines_for, status_line
from sluice_cli.render_live import LiveView
from support.clients import scripted_events


def render_plain(events: list[ev.Event]) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    view, t = PlainView(out, err), Transcript()
    for event in events:
        for update in t.apply(event):
            view.update(update, t)
    return out.getvalue(), err.getvalue()


def test_plain_view_streams_the_text_and_shows_tool_calls_and_a_summary() -> None:
    task = new_task_id()
    out, err = render_plain(scripted_events(task, text=["The answer", " is 391."],
                                            tool=("calculator", '{"expression":"17*23"}', "391")))  # fmt: skip
    assert "\x1b" not in out and err == ""
    lines = out.splitlines()
    assert lines[0] == '  ⚙ calculator  expression="17*23"'
    assert lines[1].startswith("  ✓ calculator → 391")
    assert lines[2] == "The answer is 391."
    assert lines[3].startswith("✓ completed · ")
    assert "20 in / 10 out tokens · $0.0002" in lines[3]


def test_plain_view_marks_void_text_when_a_step_is_retried() -> None:
    task = new_task_id()
    events = scripted_events(task, text=["partial"])
    retry = [
        ev.LlmStarted(task_id=task, ts=events[0].ts, source="t",
                      data=ev.LlmStartedData(step=1, attempt=2, model="m", agent="a")),
        ev.LlmDelta(task_id=task, ts=events[0].ts, source="t", data=ev.LlmDeltaData(step=1, attempt=2, text="full")),
    ]  # fmt: skip
    for i, event in enumerate(retry):
        event.id = str(int(events[3].id or 0) + 1 + i)
    out, _ = render_plain(events[:4] + retry)
    assert out.splitlines() == ["partial", "↻ step 1 retried (attempt 2); the text above it is void", "full"]


def test_failed_and_canceled_tasks_say_why() -> None:
    out, _ = render_plain(scripted_events(new_task_id(), end="failed"))
    assert "✗ failed" in out and "model_error: it broke" in out
    out, _ = render_plain(scripted_events(new_task_id(), end="canceled"))
    assert "⊘ canceled" in out and "canceled by the user" in out


def test_status_line_shows_stage_usage_and_reconnection() -> None:
    t = Transcript()
    for event in scripted_events(new_task_id())[:3]:
        t.apply(event)
    t.apply(ev.AgentStarted(task_id=t.task_id or "", ts=t.first_ts or "", source="t", id="999",
                            data=ev.AgentStartedData(agent="coder", stage=2, stages=4)))  # fmt: skip
    line = status_line(t, connection="connection refused").plain
    assert line.startswith("reconnecting… (connection refused) · working · 2/4 coder · ")


def test_formatters() -> None:
    assert format_arguments('{"expression": "17*23", "n": 2}') == 'expression="17*23", n=2'
    assert format_arguments('{"broken": ') == '{"broken":'
    assert format_duration(0.25) == "250 ms" and format_duration(3.44) == "3.4 s" and format_duration(125) == "2 m 05 s"
    assert format_cost(0) == "$0" and format_cost(0.0123) == "$0.0123" and format_cost(2.5) == "$2.50"
    assert format_cost(0.000029) == "$0.000029" and format_cost(1e-9) == "<$0.000001"


def test_every_update_kind_renders_without_a_terminal() -> None:
    t = Transcript()
    events = scripted_events(new_task_id(), tool=("clock", "{}", "noon"), ask="Name?")
    rendered = [line.plain for e in events for u in t.apply(e) for line in lines_for(u, t)]
    assert "? Name?" in rendered and "› Alice" in rendered


def test_live_view_commits_the_final_text_once() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=60, height=10, color_system=None)
    view, t = LiveView(console), Transcript()
    view.start()
    for event in scripted_events(new_task_id(), text=[f"line {i}\n" for i in range(30)] + ["end"]):
        for update in t.apply(event):
            view.update(update, t)
    view.stop()
    assert t.text.count("line 7\n") == 1
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert "✓ completed" in output


@pytest.mark.parametrize(
    ("status", "cls", "code"),
    [(400, InvalidInput, "bad"), (404, NotFound, "bad"), (409, Conflict, "bad"), (503, Unavailable, "bad"),
     (401, Unauthenticated, "bad"), (403, Forbidden, "bad"), (418, SluiceError, "bad")],
)  # fmt: skip
def test_edge_errors_map_to_sluice_errors(status: int, cls: type[SluiceError], code: str) -> None:
    error = error_from_response(status, b'{"error": {"code": "bad", "message": "no good"}}', httpx.Headers())
    assert type(error) is cls and error.code == code and error.message == "no good"


def test_unavailable_keeps_retry_after_and_transport_errors_read_as_a_sentence() -> None:
    error = error_from_response(503, b"not json", httpx.Headers({"Retry-After": "7"}))
    assert isinstance(error, Unavailable) and error.retry_after_s == 7
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    assert error_from_transport(refused, "http://h:1").message == (
        "cannot reach the Sluice edge at http://h:1: connection refused"
    )


def test_live_view_drops_a_retried_step_silently_while_it_is_still_in_the_live_area() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=60, height=20, color_system=None)
    view, t = LiveView(console), Transcript()
    task = new_task_id()
    first = scripted_events(task)[0]

    def at(cls: type[ev.Event], data: object, i: int) -> ev.Event:
        return cls(task_id=task, ts=first.ts, source="t", data=data, id=str(i))  # type: ignore[call-arg]

    usage = ev.Usage()
    events = [
        first,
        at(ev.LlmStarted, ev.LlmStartedData(step=1, attempt=1, model="m", agent="a"), 200),
        at(ev.LlmDelta, ev.LlmDeltaData(step=1, attempt=1, text="half an ans"), 201),
        at(ev.LlmStarted, ev.LlmStartedData(step=1, attempt=2, model="m", agent="a"), 202),
        at(ev.LlmDelta, ev.LlmDeltaData(step=1, attempt=2, text="the final answer"), 203),
        at(ev.LlmCompleted, ev.LlmCompletedData(step=1, attempt=2, content="the final answer", tool_calls=[],
                                                usage=usage, finish_reason="stop"), 204),
        at(ev.TaskCompleted, ev.TaskCompletedData(output="the final answer", usage=usage), 205),
    ]  # fmt: skip
    view.start()
    for event in events:
        for update in t.apply(event):
            view.update(update, t)
    view.stop()
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert "retried" not in output
    assert t.text == "the final answer"
