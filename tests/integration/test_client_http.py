"""EdgeClient against a stand-in edge on a real socket: requests, errors, and a stream that resumes by itself."""

from __future__ import annotations

import asyncio

import pytest

from sluice import events as ev
from sluice.client import EdgeClient, Transcript
from sluice.errors import Conflict, InvalidInput, NotFound, Unavailable
from sluice.ids import new_task_id
from support.clients import StandInEdge, scripted_events, standin_edge
from support.nats_server import free_port


async def test_stream_resumes_after_broken_connections_with_last_event_id_and_no_duplicates() -> None:
    async with standin_edge() as edge:
        events = scripted_events(new_task_id(), text=[f"w{i} " for i in range(20)])
        task = edge.add_task(events)
        task.cuts = [3, 0, 7]  # break the 1st connection after 3 events, the 2nd at once, the 3rd after 7
        statuses: list[str] = []
        async with EdgeClient(edge.url) as client:
            got = [e async for e in client.events(task.id, on_status=lambda status, _detail: statuses.append(status))]
        assert [e.id for e in got] == [e.id for e in events]
        cursors = [r.get("cursor") for r in edge.requests if r["path"].endswith("/events")]
        assert cursors == ["0", events[2].id, events[2].id, events[9].id]
        resumed = [r["headers"].get("last-event-id") for r in edge.requests if r["path"].endswith("/events")]
        assert resumed == [None, events[2].id, events[2].id, events[9].id]
        assert statuses.count("reconnecting") == 3 and statuses[-1] == "connected"


async def test_stream_follows_live_events_across_heartbeats_until_the_terminal_one() -> None:
    async with standin_edge(heartbeat_s=0.05) as edge:
        events = scripted_events(new_task_id(), text=["a", "b", "c"])
        task = edge.add_task(events, released=2)
        t = Transcript()
        async with EdgeClient(edge.url) as client:

            async def follow() -> None:
                async for event in client.events(task.id):
                    t.apply(event)

            follower = asyncio.create_task(follow())
            for _ in range(len(events) - 2):
                await asyncio.sleep(0.08)  # let a heartbeat or two pass between events
                await task.release(1)
            await asyncio.wait_for(follower, 10)
        assert t.text == "abc" and t.state == "completed"


async def test_stream_after_an_id_starts_there_and_follow_false_ends_with_what_exists() -> None:
    async with standin_edge() as edge:
        events = scripted_events(new_task_id())
        task = edge.add_task(events, released=4)
        async with EdgeClient(edge.url) as client:
            got = [s async for s in client.stream(task.id, after=events[1].id, follow=False)]
        assert [s.event.id for s in got] == [events[2].id, events[3].id]
        assert got[0].line == ev.encode(events[2])


async def test_requests_map_edge_answers_to_sluice_errors() -> None:
    async with standin_edge() as edge:
        async with EdgeClient(edge.url) as client:
            record = await client.submit("What is 2+2?", idempotency_key="k-1")
            again = await client.submit("What is 2+2?", idempotency_key="k-1")
            assert again.id == record.id
            assert (await client.get(record.id)).state == "completed"
            with pytest.raises(Conflict):
                await client.cancel(record.id)
            with pytest.raises(Conflict):
                await client.input(record.id, "hello")
            with pytest.raises(NotFound):
                await client.get(new_task_id())
            with pytest.raises(InvalidInput):
                await client.submit("")
            with pytest.raises(InvalidInput):
                await client.get("not/a/task")
        sent = [r for r in edge.requests if r["method"] == "POST" and r["path"] == "/v1/tasks"]
        assert sent[0]["headers"]["idempotency-key"] == "k-1"


async def test_cancel_and_input_post_what_the_contract_says() -> None:
    async with standin_edge() as edge:
        events = scripted_events(new_task_id(), ask="Your name?")
        ask_at = next(i for i, e in enumerate(events) if isinstance(e, ev.TaskInputRequired))
        task = edge.add_task(events, released=ask_at + 1)
        async with EdgeClient(edge.url) as client:
            record = await client.input(task.id, "Alice")
            assert record.state == "completed"
            other = edge.add_task(scripted_events(new_task_id()), released=3)
            assert (await client.cancel(other.id)).state == "canceled"
        assert edge.inputs == [(task.id, {"input": "Alice"})]


async def test_an_unreachable_edge_is_one_clear_sentence() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with EdgeClient(url, retry_for_s=0.3) as client:
        with pytest.raises(Unavailable) as caught:
            await client.get(new_task_id())
    assert caught.value.message == f"cannot reach the Sluice edge at {url}: connection refused"


async def test_stream_survives_the_edge_going_away_and_coming_back() -> None:
    edge = await StandInEdge().start()
    events = scripted_events(new_task_id(), text=["one ", "two ", "three"])
    task = edge.add_task(events, released=4)
    seen: list[ev.Event] = []
    four = asyncio.Event()
    async with EdgeClient(edge.url) as client:

        async def follow() -> None:
            async for event in client.events(task.id):
                seen.append(event)
                if len(seen) == 4:
                    four.set()

        follower = asyncio.create_task(follow())
        await asyncio.wait_for(four.wait(), 10)
        await edge.stop()  # the stream ends, and the port refuses connections for a while
        await asyncio.sleep(0.3)  # the outage itself: the client must keep retrying through it
        revived = StandInEdge(port=edge.port, tasks=edge.tasks)
        for t in revived.tasks.values():
            t.changed = asyncio.Condition()
        await revived.start()
        await revived.tasks[task.id].release()
        await asyncio.wait_for(follower, 10)
        await revived.stop()
    assert [e.id for e in seen] == [e.id for e in events]
