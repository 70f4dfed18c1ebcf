"""The streaming engine (CONTRACT §5) against a real nats-server, served by uvicorn on a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sluice import subjects
from sluice.bus import Bus, connect
from sluice.config import CommonConfig
from sluice.errors import Unavailable
from sluice.eventlog import read_log
from sluice.events import TaskRecord
from sluice.ids import new_task_id
from sluice.provision import provision
from stream_edge.streaming import StreamRequest, StreamSettings, encodings
from support.edge_streaming import Frame, HubUnderTest, RawClient, publish, read_stream, serving_hub
from support.nats_server import NatsServer, running_server
from support.waiting import eventually

FAST = StreamSettings(heartbeat_s=1.0)


@pytest.fixture(scope="module")
async def edge(bus: Bus) -> AsyncIterator[HubUnderTest]:
    async with serving_hub(bus, FAST) as served:
        yield served


async def log_seqs(bus: Bus, task_id: str) -> list[int]:
    return [entry.seq async for entry in read_log(bus, task_id)]


def ids(frames: list[Frame]) -> list[int]:
    return [int(f.id) for f in frames if f.id is not None]


# ---------------------------------------------------------------------- replay, framing, ending


async def test_replay_ends_right_after_the_terminal_event_in_both_formats(bus: Bus, edge: HubUnderTest) -> None:
    task_id = new_task_id()
    seqs = await publish(bus, task_id, ["task.submitted", "task.started", "llm.delta", "task.completed"])
    for fmt in ("sse", "ndjson"):
        result = await read_stream(edge.events_url(task_id, format=fmt), fmt=fmt)
        assert result.ended_by_server
        assert ids(result.events) == seqs
        assert [f.type for f in result.events][-1] == "task.completed"
        for frame in result.events:
            assert (
                frame.data["id"] == frame.id and frame.data["task_id"] == task_id and frame.data["type"] == frame.type
            )


async def test_sse_and_ndjson_have_the_contract_headers_and_framing(bus: Bus, edge: HubUnderTest) -> None:
    task_id = new_task_id()
    seqs = await publish(bus, task_id, ["task.submitted", "task.completed"])
    sse = await read_stream(edge.events_url(task_id), fmt="sse")
    assert sse.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert sse.raw.startswith(b"retry: 2000\n\n")
    assert sse.raw.count(b"\n\n") == 3
    first = sse.raw.split(b"\n\n")[1]
    assert first.startswith(b"id: %d\nevent: task.submitted\ndata: {" % seqs[0])
    nd = await read_stream(edge.events_url(task_id, format="ndjson"), fmt="ndjson")
    assert nd.headers["content-type"] == "application/x-ndjson"
    assert nd.raw.count(b"\n") == 2 and nd.raw.startswith(b'{"id":"%d",' % seqs[0])
    for result in (sse, nd):
        assert result.headers["cache-control"] == "no-cache, no-transform"
        assert result.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in result.headers and "content-length" not in result.headers


async def test_follow_false_sends_what_exists_and_ends(bus: Bus, edge: HubUnderTest) -> None:
    task_id = new_task_id()
    seqs = await publish(bus, task_id, ["task.submitted", "task.started", "llm.delta"])
    result = await read_stream(edge.events_url(task_id, follow="false", after=str(seqs[0])))
    assert result.ended_by_server and ids(result.events) == seqs[1:]
    empty = await read_stream(
        edge.events_url(task_id, follow="false", after=str(seqs[-1]), format="ndjson"), fmt="ndjson"
    )
    assert empty.ended_by_server and empty.events == []


async def test_resuming_after_the_terminal_event_ends_at_once(bus: Bus, edge: HubUnderTest) -> None:
    task_id = new_task_id()
    seqs = await publish(bus, task_id, ["task.submitted", "task.canceled"])
    result = await read_stream(edge.events_url(task_id), last_event_id=str(seqs[-1]), timeout_s=5)
    assert result.ended_by_server and result.events == []


# ---------------------------------------------------------------------- live, late joiners, the seam


async def test_live_events_reach_followers_and_the_stream_ends_after_the_terminal_event(
    bus: Bus, edge: HubUnderTest
) -> None:
    task_id = new_task_id()
    first = await publish(bus, task_id, ["task.submitted"])
    reader = asyncio.create_task(read_stream(edge.events_url(task_id)))
    await eventually(lambda: _async(edge.hub.stats["feed_subscribers"] >= 1), what="client on the feed")
    rest = await publish(bus, task_id, ["task.started", "llm.delta", "llm.delta", "task.completed"], start=1)
    result = await reader
    assert result.ended_by_server and ids(result.events) == first + rest


async def test_live_and_late_joiners_at_the_seam_get_no_gap_and_no_duplicate(bus: Bus, edge: HubUnderTest) -> None:
    task_id, noise = new_task_id(), new_task_id()
    published: list[int] = await publish(bus, task_id, ["task.submitted"])

    async def publisher() -> None:
        for n in range(1, 400):
            published.extend(await publish(bus, task_id, ["llm.delta"], start=n))
            if n % 3 == 0:
                await publish(bus, noise, ["llm.delta"], start=n)
            if n % 20 == 0:
                await asyncio.sleep(0.01)
        published.extend(await publish(bus, task_id, ["task.completed"], start=400))

    async def joiner(delay: float, where: str, fmt: str) -> tuple[int, list[int]]:
        await asyncio.sleep(delay)
        after = {"start": 0, "middle": published[len(published) // 2], "head": published[-1]}[where]
        result = await read_stream(edge.events_url(task_id, format=fmt), fmt=fmt, last_event_id=str(after))
        assert result.ended_by_server
        return after, ids(result.events)

    rng = random.Random(7)
    joins = [
        joiner(rng.uniform(0, 0.6), rng.choice(["start", "middle", "head"]), rng.choice(["sse", "ndjson"]))
        for _ in range(12)
    ]
    _, *results = await asyncio.gather(publisher(), *joins)
    everything = await log_seqs(bus, task_id)
    assert everything == published
    for after, got in results:
        assert got == [s for s in everything if s > after]
    assert edge.hub.counters.feeds_created >= 1


async def test_a_joiner_near_the_head_is_served_from_the_feeds_ring_without_reading_jetstream(bus: Bus) -> None:
    task_id = new_task_id()
    first = await publish(bus, task_id, ["task.submitted"])
    async with serving_hub(bus, FAST) as edge:
        follower = asyncio.create_task(read_stream(edge.events_url(task_id)))
        await eventually(lambda: _async(edge.hub.stats["feed_subscribers"] == 1), what="a live follower")
        more = await publish(bus, task_id, ["llm.delta"] * 5, start=1)
        await eventually(lambda: _async(edge.hub.stats["events_delivered"] >= 6), what="the follower served")
        replays = edge.hub.counters.catchup_replays
        joiner = asyncio.create_task(read_stream(edge.events_url(task_id), last_event_id=str(more[2])))
        await eventually(lambda: _async(edge.hub.stats["feed_subscribers"] == 2), what="the joiner on the feed")
        assert edge.hub.counters.catchup_replays == replays  # no JetStream read for it
        end = await publish(bus, task_id, ["task.completed"], start=6)
        assert ids((await joiner).events) == more[3:] + end
        assert ids((await follower).events) == first + more + end


async def test_late_joiner_after_the_terminal_event_gets_everything_and_the_stream_ends(
    bus: Bus, edge: HubUnderTest
) -> None:
    task_id = new_task_id()
    follower = asyncio.create_task(read_stream(edge.events_url(task_id), fmt="ndjson"))
    await asyncio.sleep(0)  # the follower may join before or after the first event: both must work
    seqs = await publish(bus, task_id, ["task.submitted", "llm.delta", "llm.delta", "task.failed"])
    assert ids((await follower).events) == seqs
    late = await read_stream(edge.events_url(task_id))
    assert late.ended_by_server and ids(late.events) == seqs


async def test_heartbeats_arrive_while_idle_in_both_formats(bus: Bus) -> None:
    task_id = new_task_id()
    await publish(bus, task_id, ["task.submitted"])
    async with serving_hub(bus, StreamSettings(heartbeat_s=0.2)) as edge:
        # Three beats within the read's 15 s: at the default 15 s interval the read would time out.
        sse = await read_stream(edge.events_url(task_id), until=lambda fs: sum(f.comment for f in fs) >= 3)
        assert b": keep-alive\n\n" in sse.raw and len(sse.events) == 1
        nd = await read_stream(
            edge.events_url(task_id, format="ndjson"), fmt="ndjson", until=lambda fs: sum(f.comment for f in fs) >= 2
        )
        beats = [f.data for f in nd.frames if f.comment]
        assert all(set(b) == {"type", "ts"} and b["ts"].endswith("Z") for b in beats)
        assert len(beats) == 2 and beats[0]["ts"] < beats[1]["ts"], beats  # each beat is new, not a repeat


# ---------------------------------------------------------------------- bounded memory


async def test_a_slow_client_is_cut_off_and_resuming_gets_exactly_the_rest(bus: Bus) -> None:
    task_id = new_task_id()
    await publish(bus, task_id, ["task.submitted"])
    # A burst must fit the buffer (the fast client reads between bursts), the slow client's backlog must not.
    settings = StreamSettings(heartbeat_s=1, client_buffer_bytes=32 * 1024)
    async with serving_hub(bus, settings, sndbuf=8192) as edge:
        fast = asyncio.create_task(read_stream(edge.events_url(task_id), timeout_s=60))
        slow = RawClient(edge.url, f"/t/{task_id}", headers={"Accept": "text/event-stream"})
        try:
            await eventually(lambda: _async(edge.hub.stats["feed_subscribers"] >= 2), what="both clients live")
            for start in range(1, 3000, 20):
                await asyncio.gather(*(publish(bus, task_id, ["llm.delta"], start=n) for n in range(start, start + 20)))
                if edge.hub.counters.slow_clients_cut:
                    break
            await eventually(lambda: _async(edge.hub.counters.slow_clients_cut >= 1), what="the slow client cut")
            await publish(bus, task_id, ["task.completed"], start=5000)
            await slow.read_all()
        finally:
            slow.close()
        got = slow.sse_events()
        assert got, "the slow client read nothing before it was cut"
        everything = await log_seqs(bus, task_id)
        resumed = await read_stream(edge.events_url(task_id), last_event_id=got[-1].id)
        assert ids(got) + ids(resumed.events) == everything
        assert ids((await fast).events) == everything  # the fast client never waited for the slow one


async def test_a_client_that_leaves_frees_its_stream_and_the_feed(bus: Bus) -> None:
    task_id = new_task_id()
    await publish(bus, task_id, ["task.submitted"])
    async with serving_hub(bus, FAST) as edge:
        edge.hub.feed_linger_s = 0.1
        result = await read_stream(edge.events_url(task_id), max_events=1)
        assert not result.ended_by_server
        await eventually(lambda: _async(edge.hub.stats["active_streams"] == 0), what="the stream released")
        await eventually(lambda: _async(edge.hub.stats["active_feeds"] == 0), what="the feed retired")
        info = await bus.js.stream_info(subjects.EVENTS_STREAM)
        assert info.state.consumer_count is not None


# ---------------------------------------------------------------------- gap, snapshot, limits


async def test_stream_gap_comes_first_when_the_first_events_are_gone(bus: Bus, edge: HubUnderTest) -> None:
    task_id = new_task_id()
    seqs = await publish(bus, task_id, ["task.submitted", "task.started", "llm.delta", "task.completed"])
    await bus.js.delete_msg(subjects.EVENTS_STREAM, seqs[0])  # as if it had expired
    for fmt in ("sse", "ndjson"):
        result = await read_stream(edge.events_url(task_id, format=fmt), fmt=fmt)
        gap, *rest = result.events
        assert gap.type == "stream.gap" and gap.id is None and "id" not in gap.data
        assert gap.data["data"] == {"after": "0", "oldest": str(seqs[1])}
        assert gap.data["task_id"] == task_id and gap.data["source"] == "stream-edge" and gap.data["ts"]
        assert ids(rest) == seqs[1:]
    sse = await read_stream(edge.events_url(task_id))
    assert b"retry: 2000\n\nevent: stream.gap\ndata: {" in sse.raw
    assert edge.hub.counters.gaps_served >= 3


async def test_snapshot_comes_first_then_only_events_after_its_id(bus: Bus, edge: HubUnderTest) -> None:
    task_id = new_task_id()
    seqs = await publish(bus, task_id, ["task.submitted", "task.started", "llm.delta"])
    record = TaskRecord(
        id=task_id, state="working", agent="assistant", input="hi", created_at="t", updated_at="t",
        last_event_id=str(seqs[-1]),
    )  # fmt: skip
    edge.snapshots[task_id] = record
    reader = asyncio.create_task(read_stream(edge.events_url(task_id, snapshot="true")))
    await eventually(lambda: _async(edge.hub.stats["feed_subscribers"] >= 1), what="client on the feed")
    rest = await publish(bus, task_id, ["llm.delta", "task.completed"], start=3)
    result = await reader
    snap, *events = result.events
    assert snap.type == "task.snapshot" and snap.id == str(seqs[-1]) and snap.data["id"] == str(seqs[-1])
    assert snap.data["data"]["state"] == "working" and snap.data["data"]["id"] == task_id
    assert ids(events) == rest

    done = TaskRecord(
        id=task_id, state="completed", agent="assistant", input="hi", created_at="t", updated_at="t",
        last_event_id=str(rest[-1]),
    )  # fmt: skip
    edge.snapshots[task_id] = done
    ended = await read_stream(edge.events_url(task_id, snapshot="true", format="ndjson"), fmt="ndjson", timeout_s=5)
    assert ended.ended_by_server and [f.type for f in ended.events] == ["task.snapshot"]


async def test_over_max_streams_open_raises_unavailable(bus: Bus) -> None:
    task_id = new_task_id()
    await publish(bus, task_id, ["task.submitted"])
    async with serving_hub(bus, StreamSettings(heartbeat_s=1, max_streams=2)) as edge:
        holders = [asyncio.create_task(read_stream(edge.events_url(task_id), max_events=2)) for _ in range(2)]
        await eventually(lambda: _async(edge.hub.stats["active_streams"] == 2), what="two open streams")
        with pytest.raises(Unavailable) as refused:
            await edge.hub.open(StreamRequest(task_id, encodings.SSE))
        assert refused.value.code == "too_many_streams" and refused.value.retry_after_s >= 1
        async with httpx.AsyncClient() as client:
            response = await client.get(edge.events_url(task_id, follow="false"))
        assert response.status_code == 503 and response.headers["retry-after"]
        await publish(bus, task_id, ["llm.delta"], start=1)
        await asyncio.gather(*holders)
        await eventually(lambda: _async(edge.hub.stats["active_streams"] == 0), what="streams released")
        assert (await read_stream(edge.events_url(task_id, follow="false"))).status == 200


async def test_stop_ends_every_stream_within_the_grace_period(bus: Bus) -> None:
    task_id = new_task_id()
    await publish(bus, task_id, ["task.submitted"])
    async with serving_hub(bus, StreamSettings(heartbeat_s=1, shutdown_grace_s=1)) as edge:
        readers = [asyncio.create_task(read_stream(edge.events_url(task_id), timeout_s=30)) for _ in range(3)]
        await eventually(lambda: _async(edge.hub.stats["feed_subscribers"] == 3), what="three followers")
        await edge.hub.stop()
        # Ended by the hub: a follower left open would run to its 30 s timeout instead.
        results = await asyncio.gather(*readers)
        assert all(r.ended_by_server and len(r.events) == 1 for r in results)
        assert edge.hub.stats["active_streams"] == 0 and edge.hub.stats["active_feeds"] == 0


async def test_a_stream_still_opening_when_the_hub_stops_is_refused_at_once(tmp_path: Path) -> None:
    """NATS does not answer (its node frozen, as in an election) while a client opens a stream, and the edge shuts
    down: the request still waiting for its first batch is answered 503 `shutting_down` by the stop, so its client
    reconnects elsewhere. (It used to wait for the read's own timeout, and the edge's graceful shutdown, which is
    shorter, cut it off first: a 500.)"""
    with running_server(tmp_path) as server:
        async with own_provisioned_bus(server, "sluice-test-frozen-nats") as own_bus:
            task_id = new_task_id()
            await publish(own_bus, task_id, ["task.submitted"])
            async with serving_hub(own_bus, FAST) as edge, httpx.AsyncClient(timeout=30) as client:
                assert server.proc is not None
                os.kill(server.proc.pid, signal.SIGSTOP)
                try:
                    opening = asyncio.create_task(client.get(edge.events_url(task_id)))
                    await eventually(lambda: _async(edge.hub.stats["active_streams"] == 1), what="a stream opening")
                    await edge.hub.stop()
                    response = await opening
                finally:
                    os.kill(server.proc.pid, signal.SIGCONT)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "shutting_down"


# ---------------------------------------------------------------------- NATS restart


async def test_a_nats_server_restart_mid_stream_loses_nothing(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        async with own_provisioned_bus(server, "sluice-test-restart") as own_bus:
            task_id = new_task_id()
            before = await publish(own_bus, task_id, ["task.submitted", "llm.delta", "llm.delta"])
            async with serving_hub(own_bus, FAST) as edge:
                seen = asyncio.Event()

                def progress(frames: list[Frame]) -> bool:
                    if len([f for f in frames if not f.comment]) >= len(before):
                        seen.set()
                    return False

                reader = asyncio.create_task(read_stream(edge.events_url(task_id), until=progress, timeout_s=60))
                await asyncio.wait_for(seen.wait(), 10)
                await asyncio.to_thread(server.stop)
                await asyncio.to_thread(server.start)
                after = await publish(own_bus, task_id, ["llm.delta"] * 5 + ["task.completed"], start=3)
                result = await reader
                assert result.ended_by_server
                assert ids(result.events) == before + after
                assert own_bus.state.reconnects >= 1


@contextlib.asynccontextmanager
async def own_provisioned_bus(server: NatsServer, name: str) -> AsyncIterator[Bus]:
    """A connection of its own to a test's own nats-server (which the test stops or freezes), provisioned."""
    config = CommonConfig(nats_urls=(server.url,))
    bus = await connect(config, name=name)
    try:
        await provision(bus.js, config)
        yield bus
    finally:
        await bus.close()


async def _async(value: bool) -> bool:
    return value


async def test_a_long_history_is_caught_up_through_a_short_lived_consumer_without_loss(bus: Bus) -> None:
    task_id = new_task_id()
    await publish(bus, task_id, ["task.submitted"])
    for start in range(1, 3600, 100):
        await asyncio.gather(*(publish(bus, task_id, ["llm.delta"], start=n) for n in range(start, start + 100)))
    await publish(bus, task_id, ["task.completed"], start=4000)
    everything = await log_seqs(bus, task_id)
    async with serving_hub(bus, FAST) as edge:
        whole = await read_stream(edge.events_url(task_id, follow="false"), timeout_s=60)
        assert ids(whole.events) == everything
        resumed = await read_stream(edge.events_url(task_id, format="ndjson"), fmt="ndjson", timeout_s=60,
                                    last_event_id=str(everything[10]))  # fmt: skip
        assert resumed.ended_by_server and ids(resumed.events) == everything[11:]
        assert edge.hub.counters.catchup_bulk == 2

        async def catch_up_consumers() -> bool:
            infos = await bus.js.consumers_info(subjects.EVENTS_STREAM)
            return not [c for c in infos if f"catch-up of task {task_id}" in (c.config.description or "")]

        await eventually(catch_up_consumers, what="the catch-up consumers deleted")


async def test_at_the_streams_consumer_limit_a_feed_polls_then_takes_a_consumer_when_one_is_free(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stream_edge.streaming import feed as feed_module
    from stream_edge.streaming.link import Link

    monkeypatch.setattr(feed_module, "POLL_UPGRADE_S", 0.2)
    real_create = Link.create_consumer
    full = True

    async def create_consumer(self: Link, name: str, task_id: str, start_seq: int, purpose: str) -> None:
        if full and purpose == "feed":
            raise Unavailable("consumer_limit", "maximum consumers limit reached")
        await real_create(self, name, task_id, start_seq, purpose)

    monkeypatch.setattr(Link, "create_consumer", create_consumer)
    task_id = new_task_id()
    first = await publish(bus, task_id, ["task.submitted"])
    async with serving_hub(bus, FAST) as edge:
        reader = asyncio.create_task(read_stream(edge.events_url(task_id), timeout_s=30))
        await eventually(lambda: _async(edge.hub.stats["feeds_polling"] == 1), what="the feed polling")
        middle = await publish(bus, task_id, ["llm.delta", "llm.delta"], start=1)
        full = False
        await eventually(lambda: _async(edge.hub.stats["feeds_polling"] == 0), what="a consumer taken")
        last = await publish(bus, task_id, ["llm.delta", "task.completed"], start=3)
        assert ids((await reader).events) == first + middle + last
