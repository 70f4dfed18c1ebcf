"""Every live feed of one process, by task: made by the first client that reaches the live head, retired a moment
after the last client leaves (or closed at stop)."""

from __future__ import annotations

from stream_edge.streaming.consumer import Spawn
from stream_edge.streaming.counters import Counters
from stream_edge.streaming.feed import Feed, FeedDeps
from stream_edge.streaming.link import Link

__all__ = ["FeedRegistry"]


class FeedRegistry:
    def __init__(self, link: Link, spawn: Spawn, counters: Counters, *, client_buffer_bytes: int, linger_s: float):
        self._feeds: dict[str, Feed] = {}
        self._counters = counters
        self._deps = FeedDeps(link, spawn, client_buffer_bytes, linger_s, self.retire)

    def __len__(self) -> int:
        return len(self._feeds)

    def live(self, task_id: str) -> Feed | None:
        """The task's feed, if it has one that is still open."""
        feed = self._feeds.get(task_id)
        return feed if feed is not None and not feed.closed else None

    def feed_for(self, task_id: str, last_seq: int) -> Feed:
        """The task's feed; a new one starts right after `last_seq`, a position its creator has reached."""
        feed = self.live(task_id)
        if feed is None:
            feed = Feed(task_id, last_seq + 1, self._deps)
            self._feeds[task_id] = feed
            self._counters.feeds_created += 1
            feed.connect()
        return feed

    def retire(self, feed: Feed) -> None:
        if self._feeds.get(feed.task_id) is feed:
            del self._feeds[feed.task_id]
        feed.close()

    def close_all(self) -> None:
        for feed in list(self._feeds.values()):
            feed.close()
        self._feeds.clear()

    def reset_all(self) -> None:
        """The server may have restarted and lost the in-memory consumers: re-make each from its last seq."""
        for feed in list(self._feeds.values()):
            feed.request_reset()

    def check_alive(self, now: float) -> None:
        for feed in list(self._feeds.values()):
            feed.check_alive(now)

    @property
    def subscribers(self) -> int:
        return sum(len(feed.subs) for feed in self._feeds.values())

    @property
    def polling(self) -> int:
        return sum(feed.polling for feed in self._feeds.values())
