"""The CLI's `Session` (what `sluice run` / `sluice tail` follow a task with), without a terminal, against a
stand-in edge: what it tells a person who cannot answer on this terminal."""

from __future__ import annotations

import asyncio
import signal

import pytest

from sluice.client.http import EdgeClient
from sluice.events import TaskInputRequired
from sluice.ids import new_task_id
from sluice_cli.client_commands import EXIT_OK, Session
from support.clients import scripted_events, standin_edge
from support.waiting import eventually

HINT = "waits for input: sluice input"


async def follow(url: str, task_id: str) -> int:
    async with EdgeClient(url) as client:
        try:
            return await Session(client, task_id).run()
        finally:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)  # the Session installs one


async def test_tail_of_a_task_whose_question_was_answered_long_ago_prints_no_stale_input_hint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with standin_edge() as edge:
        task = edge.add_task(scripted_events(new_task_id(), ask="What is your name?"))
        assert await asyncio.wait_for(follow(edge.url, task.id), 10) == EXIT_OK
    assert HINT not in capsys.readouterr().err


async def test_a_task_that_waits_now_gets_the_hint_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    async with standin_edge() as edge:
        events = scripted_events(new_task_id(), ask="What is your name?")
        asked = next(i for i, e in enumerate(events) if isinstance(e, TaskInputRequired))
        task = edge.add_task(events, released=asked + 1)
        follower = asyncio.create_task(follow(edge.url, task.id))
        seen: list[str] = []

        async def hint_shown() -> bool:
            seen.append(capsys.readouterr().err)
            return HINT in "".join(seen)

        await eventually(hint_shown, what="the input hint on stderr")
        await task.release()
        assert await asyncio.wait_for(follower, 10) == EXIT_OK


async def test_the_hint_appears_even_while_the_record_still_trails_the_request(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The runner publishes task.input_required before it updates the record: a record older than the request
    means "not caught up yet", not "answered long ago"."""
    async with standin_edge() as edge:
        events = scripted_events(new_task_id(), ask="What is your name?")
        asked = next(i for i, e in enumerate(events) if isinstance(e, TaskInputRequired))
        task = edge.add_task(events, released=asked + 1)
        task.record_lag = 1  # the record still says "working", from before the request
        follower = asyncio.create_task(follow(edge.url, task.id))
        seen: list[str] = []

        async def hint_shown() -> bool:
            seen.append(capsys.readouterr().err)
            return HINT in "".join(seen)

        await eventually(hint_shown, what="the input hint on stderr")
        task.record_lag = 0
        await task.release()
        assert await asyncio.wait_for(follower, 10) == EXIT_OK
