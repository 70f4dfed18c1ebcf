"""Delta coalescing: at most one `llm.delta` per window, without delaying the first text of a burst.

A model streams one chunk per token; publishing each as an event costs a JetStream round trip and a message per
client. The policy: text arriving when nothing was published for a window goes out at once (the first token is
never held back); text arriving within a window of the last publish is buffered and goes out when that window
ends, joined. So a stream of N tokens over T seconds becomes at most T / window + 1 messages, and no text waits
longer than one window. A window of 0 publishes every chunk as it comes.

`Coalescer` is the pure timing rule (clock passed in); `drain` drives a source with it, reading the source in its
own task so that a slow publish never slows down reading the model, and a quiet source still flushes on time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["MAX_BUFFERED_CHARS", "Coalescer", "drain"]

T = TypeVar("T")
# A flush also happens when this much text is buffered, which bounds an event's size.
MAX_BUFFERED_CHARS = 8192
_QUEUE_SIZE = 1024


@dataclass
class Coalescer:
    window_s: float
    _parts: list[str] = field(default_factory=list)
    _size: int = 0
    _last_flush: float = float("-inf")

    def add(self, text: str) -> None:
        if text:
            self._parts.append(text)
            self._size += len(text)

    @property
    def pending(self) -> bool:
        return bool(self._parts)

    def due_at(self) -> float:
        """When the buffered text must go out (monotonic seconds); +inf when nothing is buffered."""
        if not self._parts:
            return float("inf")
        if self._size >= MAX_BUFFERED_CHARS:
            return float("-inf")
        return self._last_flush + self.window_s

    def take(self, now: float) -> str:
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        self._last_flush = now
        return text


@dataclass(frozen=True)
class _End(Generic[T]):
    item: T | None = None
    error: BaseException | None = None


async def drain(
    source: AsyncIterator[str | T],
    window_s: float,
    publish: Callable[[str], Awaitable[None]],
    *,
    clock: Callable[[], float] = time.monotonic,
) -> T | None:
    """Reads `source` to its end: text items are published coalesced, the last non-text item is returned.

    An exception from `source` is raised here after the text before it was published; cancelling the caller
    cancels the reader (and so closes the source).
    """
    queue: asyncio.Queue[str | _End[T]] = asyncio.Queue(_QUEUE_SIZE)

    async def read() -> None:
        last: T | None = None
        try:
            async for item in source:
                if isinstance(item, str):
                    await queue.put(item)
                else:
                    last = item
        except Exception as exc:  # handed to the consumer, which raises it
            await queue.put(_End(error=exc))
            return
        await queue.put(_End(item=last))

    coalescer = Coalescer(window_s)
    reader = asyncio.create_task(read(), name="model-stream-reader")
    try:
        while True:
            wait_s = coalescer.due_at() - clock()
            if coalescer.pending and wait_s <= 0:
                await publish(coalescer.take(clock()))
                continue
            try:
                got = await asyncio.wait_for(queue.get(), None if wait_s == float("inf") else wait_s)
            except TimeoutError:
                continue
            if isinstance(got, _End):
                if coalescer.pending:
                    await publish(coalescer.take(clock()))
                if got.error is not None:
                    raise got.error
                return got.item
            coalescer.add(got)
    finally:
        reader.cancel()
        await asyncio.wait([reader])
