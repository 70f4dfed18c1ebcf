"""`sluice run | tail | status | cancel | input` against the whole stack as processes.

The live view is driven in a real terminal (tmux): what a person would see is read back from the screen, so
"the answer appears exactly once" means what it says, across an edge restart. `--json` is read from a pipe and
must equal the task's event log line for line.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from sluice.ids import new_task_id
from support.clients import Terminal
from support.nats_server import free_port
from support.stack import Stack, stack
from support.waiting import wait_until

__all__ = ["stack"]  # the fixture, imported for pytest

pytestmark = [pytest.mark.slow]
IN_A_TERMINAL = pytest.mark.needs_program("tmux")  # only the live-view tests: --json and exit codes need no terminal

SLUICE = str(Path(sys.executable).with_name("sluice"))
TASK_LINE = re.compile(r"task ([0-9A-Za-z_-]{8,64})")


def terminal_env(stack: Stack) -> dict[str, str]:
    return stack.client_env(TERM="xterm-256color", LANG="C.UTF-8", LC_ALL="C.UTF-8", COLUMNS="", LINES="")


def squash(text: str) -> str:
    return " ".join(text.split())


def record(stack: Stack, task_id: str) -> dict[str, object]:
    response = httpx.get(f"{stack.edge_url}/v1/tasks/{task_id}", timeout=10)
    response.raise_for_status()
    result: dict[str, object] = response.json()
    return result


def run_in_terminal(stack: Stack, tmp_path: Path, *args: str) -> Terminal:
    return Terminal([SLUICE, *args], terminal_env(stack)).start(tmp_path)


def task_on_screen(term: Terminal) -> str:
    found = wait_until(lambda: TASK_LINE.search(term.screen()), timeout_s=20, what="the task id on screen")
    return found.group(1)


def exit_code(term: Terminal, timeout_s: float = 60) -> int:
    return wait_until(lambda: term.exit_code is not None, timeout_s=timeout_s, what="sluice to exit") and (
        term.exit_code or 0
    )


def kill_and_restart_edge(stack: Stack) -> datetime:
    """SIGKILLs the edge and starts it again; returns when the old process was gone (it has been waited for)."""
    stack.kill("edge")
    died = datetime.now(UTC)
    stack.start_service("edge")
    return died


def assert_running_when_the_edge_died(events: list[dict[str, Any]], died: datetime) -> None:
    """The precondition of a restart test, from the log: the task streamed text after the edge was gone, so the
    client really had to resume (a task that ended first would make the test prove nothing)."""
    after = [e["type"] for e in events if datetime.fromisoformat(e["ts"]) > died]
    assert "llm.delta" in after and after[-1] == "task.completed", f"not streaming when the edge died: {after}"


@IN_A_TERMINAL
def test_run_in_a_terminal_survives_an_edge_restart_and_shows_the_answer_exactly_once(
    stack: Stack, tmp_path: Path
) -> None:
    term = run_in_terminal(stack, tmp_path, "run", "Tell me how rivers find the sea [fault:slow:100]")
    try:
        task_id = task_on_screen(term)
        wait_until(lambda: "Sluice demo model" in term.screen(), timeout_s=20, what="streamed text")
        died = kill_and_restart_edge(stack)
        assert exit_code(term) == 0, term.screen()
        screen = term.screen()
    finally:
        term.close()
    output = record(stack, task_id)["output"]
    assert isinstance(output, str) and len(output) > 100
    assert squash(screen).count(squash(output)) == 1, screen
    assert squash(screen).count("I am the Sluice demo model") == 1, screen
    assert "✓ completed" in screen
    assert_running_when_the_edge_died(stack.task_log(task_id), died)


def test_run_json_prints_exactly_the_served_events_across_an_edge_restart(stack: Stack) -> None:
    async def scenario() -> tuple[list[str], int, datetime]:
        proc = await asyncio.create_subprocess_exec(
            SLUICE, "run", "--json", "Tell me about deltas [fault:slow:100]",
            env=stack.client_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        lines: list[str] = []
        deltas = 0
        died: datetime | None = None
        async with asyncio.timeout(60):
            while raw := await proc.stdout.readline():
                lines.append(raw.decode().rstrip("\n"))
                deltas += json.loads(raw)["type"] == "llm.delta"
                if deltas == 5 and died is None:
                    died = await asyncio.to_thread(kill_and_restart_edge, stack)
            code = await proc.wait()
        assert died is not None, lines
        return lines, code, died

    lines, code, died = asyncio.run(scenario())
    assert code == 0
    task_id = json.loads(lines[0])["task_id"]
    served = stack.task_log(task_id)
    assert [json.loads(line) for line in lines] == served
    assert_running_when_the_edge_died(served, died)
    ids = [int(json.loads(line)["id"]) for line in lines]
    assert ids == sorted(set(ids))
    assert json.loads(lines[-1])["type"] == "task.completed"


@IN_A_TERMINAL
def test_run_asks_for_input_on_the_terminal_and_sends_the_answer(stack: Stack, tmp_path: Path) -> None:
    term = run_in_terminal(stack, tmp_path, "run", "Ask me for my favourite colour")
    try:
        task_id = task_on_screen(term)
        wait_until(lambda: "? Could you tell me" in term.screen(), timeout_s=30, what="the question")
        wait_until(lambda: term.screen().rstrip().endswith("›"), timeout_s=10, what="the prompt")
        term.type("teal")
        term.send("Enter")
        assert exit_code(term) == 0, term.screen()
        screen = term.screen()
    finally:
        term.close()
    assert squash(screen).count("› teal") == 1, screen
    assert "teal" in str(record(stack, task_id)["output"])


@IN_A_TERMINAL
def test_run_asks_for_approval_and_sends_the_decision(stack: Stack, tmp_path: Path) -> None:
    term = run_in_terminal(stack, tmp_path, "run", "--agent", "careful-assistant", "What is 6*7?")
    try:
        task_id = task_on_screen(term)
        wait_until(lambda: "approve? [y/n]" in term.screen(), timeout_s=30, what="the approval prompt")
        term.type("y")
        term.send("Enter")
        assert exit_code(term) == 0, term.screen()
        screen = term.screen()
    finally:
        term.close()
    assert "✓ calculator → 42" in screen, screen
    assert "42" in str(record(stack, task_id)["output"])


@IN_A_TERMINAL
def test_ctrl_c_detaches_and_tail_reattaches_then_a_second_ctrl_c_cancels(stack: Stack, tmp_path: Path) -> None:
    term = run_in_terminal(stack, tmp_path, "run", "Tell me about patience [fault:slow:150]")
    try:
        task_id = task_on_screen(term)
        wait_until(lambda: "Sluice demo model" in term.screen(), timeout_s=20, what="streamed text")
        term.send("C-c")
        assert exit_code(term, timeout_s=15) == 130
        assert f"sluice tail {task_id}" in squash(term.screen())
    finally:
        term.close()
    assert record(stack, task_id)["state"] == "working"

    tail = run_in_terminal(stack, tmp_path, "tail", task_id)
    try:
        wait_until(lambda: "Sluice demo model" in tail.screen(), timeout_s=20, what="the replay")
        tail.send("C-c")
        assert exit_code(tail, timeout_s=15) == 130
    finally:
        tail.close()

    again = run_in_terminal(stack, tmp_path, "run", "Tell me about endings [fault:slow:150]")
    try:
        other = task_on_screen(again)
        wait_until(lambda: "Sluice demo model" in again.screen(), timeout_s=20, what="streamed text")
        again.send("C-c")
        wait_until(lambda: "press Ctrl-C again" in again.screen(), timeout_s=10, what="the cancel hint")
        again.send("C-c")
        assert exit_code(again, timeout_s=15) == 130
        assert f"canceled task {other}" in again.screen()
    finally:
        again.close()
    assert record(stack, other)["state"] == "canceled"
    # The first task was only detached from: it still finishes.
    wait_until(lambda: record(stack, task_id)["state"] == "completed", timeout_s=60, what="the detached task")


def run(stack: Stack, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = stack.client_env(**({"SLUICE_URL": url} if url else {}))
    return subprocess.run([SLUICE, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_status_cancel_input_and_tail_exit_codes_and_errors(stack: Stack) -> None:
    done = run(stack, "run", "What is 2+2?")
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout  # plain when stdout is not a terminal
    task_id = TASK_LINE.search(done.stdout).group(1)  # type: ignore[union-attr]
    assert "2+2 = 4" in done.stdout and "⚙ calculator" in done.stdout

    status = run(stack, "status", task_id)
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "completed"

    tail = run(stack, "tail", task_id, "--json")
    assert tail.returncode == 0 and json.loads(tail.stdout.splitlines()[-1])["type"] == "task.completed"

    canceled = run(stack, "cancel", task_id)
    assert canceled.returncode == 1 and canceled.stderr.startswith("sluice: ") and canceled.stderr.count("\n") == 1

    not_waiting = run(stack, "input", task_id, "hello")
    assert not_waiting.returncode == 1 and not_waiting.stderr.count("\n") == 1

    bad_id = run(stack, "status", "not/an/id")
    assert bad_id.returncode == 2 and "is not a task id" in bad_id.stderr

    unknown = run(stack, "status", new_task_id())
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1

    usage = run(stack, "input", task_id)
    assert usage.returncode == 2

    url = f"http://127.0.0.1:{free_port()}"
    away = run(stack, "status", task_id, url=url)
    assert away.returncode == 1
    assert away.stderr == f"sluice: cannot reach the Sluice edge at {url}: connection refused\n"

    failed = run(stack, "run", "What is 2+2? [fault:400-always]")
    assert failed.returncode == 1 and "✗ failed" in failed.stdout


def test_tail_after_an_id_prints_exactly_the_later_events_of_the_log(stack: Stack) -> None:
    done = run(stack, "run", "--json", "What is 3*5?")
    assert done.returncode == 0, done.stderr
    task_id = json.loads(done.stdout.splitlines()[0])["task_id"]
    log = stack.task_log(task_id)
    assert len(log) > 4 and log[-1]["type"] == "task.completed", log
    after = log[2]["id"]

    tail = run(stack, "tail", task_id, "--after", after, "--json")
    assert tail.returncode == 0, tail.stderr
    printed = [json.loads(line) for line in tail.stdout.splitlines()]
    assert printed == log[3:], "every event after the id, nothing before it, each once"
    assert "15" in printed[-1]["data"]["output"]

    everything = run(stack, "tail", task_id, "--json")
    assert [json.loads(line) for line in everything.stdout.splitlines()] == log
