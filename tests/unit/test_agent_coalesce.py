"""Delta coalescing: the first text goes out at once, the rest at most once per window, nothing is lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agent_runner.coalesce import MAX_BUFFERED_CHARS, Coalescer, drain


def test_text_after_a_quiet_window_is_due_at_once_and_text_within_it_waits_for_the_window() -> None:
    c = Coalescer(window_s=0.05)
    assert c.due_at() == float("inf")  # nothing buffered
    c.add("Hel")
    assert c.due_at() <= 0.0  # never published before: due now
    assert c.take(now=10.0) == "Hel"
    c.add("lo")
    c.add(", ")
    assert c.due_at() == pytest.approx(10.05)
    assert c.take(now=10.05) == "lo, "
    c.add("")
    assert not c.pending


def test_a_full_buffer_is_due_immediately() -> None:
    c = Coalescer(window_s=10.0)
    c.take(now=0.0)
    c.add("x" * MAX_BUFFERED_CHARS)
    assert c.due_at() == float("-inf")


async def _source(items: list[str | int], gap_s: float = 0.0) -> AsyncIterator[str | int]:
    for item in items:
        if gap_s:
            await asyncio.sleep(gap_s)
        yield item


async def test_window_zero_publishes_every_chunk() -> None:
    published: list[str] = []

    async def publish(text: str) -> None:
        published.append(text)

    result = await drain(_source(["a", "b", "c", 7]), 0.0, publish)
    assert (published, result) == (["a", "b", "c"], 7)


async def test_a_burst_becomes_the_first_chunk_then_one_joined_message() -> None:
    published: list[str] = []

    async def publish(text: str) -> None:
        published.append(text)

    words = [f"w{i} " for i in range(50)]
    result = await drain(_source([*words, 1]), 0.2, publish)
    assert result == 1
    assert published[0] == "w0 " and len(published) == 2
    assert "".join(published) == "".join(words)


async def test_a_slow_source_is_flushed_on_time_without_waiting_for_the_next_chunk() -> None:
    published: list[tuple[float, str]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def publish(text: str) -> None:
        published.append((loop.time() - start, text))

    async def source() -> AsyncIterator[str | int]:
        yield "a"
        yield "b"  # within the window of "a": buffered
        await asyncio.sleep(0.3)  # a quiet model: "b" must not wait for the next chunk
        yield "c"
        yield 0

    await drain(source(), 0.05, publish)
    # Had "b" waited for the next chunk, it would have gone out joined with it, as "bc".
    assert [text for _, text in published] == ["a", "b", "c"]


async def test_a_failing_source_publishes_what_came_before_then_raises() -> None:
    published: list[str] = []

    async def publish(text: str) -> None:
        published.append(text)

    async def source() -> AsyncIterator[str | int]:
        yield "partial "
        yield "text"
        raise ConnectionError("cut")

    with pytest.raises(ConnectionError):
        await drain(source(), 0.05, publish)
    assert "".join(published) == "partial text"


async def test_a_slow_publisher_does_not_lose_or_reorder_text() -> None:
    published: list[str] = []

    async def publish(text: str) -> None:
        await asyncio.sleep(0.005)
        published.append(text)

    words = [f"{i} " for i in range(60)]
    await drain(_source([*words, 0]), 0.0, publish)
    assert "".join(published) == "".join(words)
