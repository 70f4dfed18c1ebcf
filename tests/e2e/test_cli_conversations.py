"""`sluice run --context ID` and `sluice chat` against the whole stack as processes (CONTRACT §10, §6)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support.stack import Stack, stack

__all__ = ["stack"]  # the fixture, imported for pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SLUICE = str(Path(sys.executable).with_name("sluice"))
CONTINUE = re.compile(r"sluice run --context ([0-9A-Za-z_-]{8,64})")
CONVERSATION = re.compile(r"conversation ([0-9A-Za-z_-]{8,64})")


def sluice(stack: Stack, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SLUICE, *args], input=stdin, env=stack.client_env(), capture_output=True, text=True, timeout=120, check=False
    )


def context_tasks(stack: Stack, context: str) -> list[dict[str, object]]:
    response = httpx.get(f"{stack.edge_url}/v1/contexts/{context}", timeout=10)
    response.raise_for_status()
    tasks: list[dict[str, object]] = response.json()["tasks"]
    return tasks


def history_of(stack: Stack, task_id: object) -> list[str]:
    response = httpx.get(
        f"{stack.edge_url}/v1/tasks/{task_id}/events", params={"follow": "false", "format": "ndjson"}, timeout=10
    )
    submitted = json.loads(response.text.splitlines()[0])
    assert submitted["type"] == "task.submitted"
    return [m["content"] for m in submitted["data"]["history"]]


def test_run_prints_its_context_and_run_with_context_continues_that_conversation(stack: Stack) -> None:
    first = sluice(stack, "run", "What is 6 * 7?")
    assert first.returncode == 0, first.stderr
    found = CONTINUE.search(first.stderr)
    assert found, first.stderr
    context = found.group(1)
    second = sluice(stack, "run", "--context", context, "And 7 * 8?")
    assert second.returncode == 0, second.stderr
    tasks = context_tasks(stack, context)
    assert [t["input"] for t in tasks] == ["What is 6 * 7?", "And 7 * 8?"]
    assert history_of(stack, tasks[1]["id"]) == ["What is 6 * 7?", tasks[0]["output"]]


def test_chat_sends_each_line_as_a_turn_of_one_conversation(stack: Stack) -> None:
    chat = sluice(stack, "chat", stdin="What is 17*23?\n\nAnd what is 2 + 2?\n/exit\n")
    assert chat.returncode == 0, chat.stderr
    assert "391" in chat.stdout
    found = CONVERSATION.search(chat.stderr)
    assert found, chat.stderr
    tasks = context_tasks(stack, found.group(1))
    assert [t["input"] for t in tasks] == ["What is 17*23?", "And what is 2 + 2?"]
    assert all(t["state"] == "completed" for t in tasks)
    assert history_of(stack, tasks[1]["id"])[0] == "What is 17*23?"


def test_a_malformed_context_is_a_usage_error(stack: Stack) -> None:
    for args in (("run", "--context", "bad id", "hi"), ("chat", "--context", "*")):
        result = sluice(stack, *args)
        assert result.returncode == 2 and "context id" in result.stderr
