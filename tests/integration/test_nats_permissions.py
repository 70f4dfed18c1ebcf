"""Least privilege on NATS, proved against a real nats-server that includes `sluice nats-auth`'s authorization:
each identity's forbidden publishes and subscriptions are refused by the server (and nothing is stored), the
allowed ones work, and a bad or missing seed is one clear error, never a hang."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats.errors
import nats.js.errors
import nkeys
import pytest
from nats.aio.msg import Msg

from sluice import jsapi, subjects
from sluice.bus import Bus, connect
from sluice.client.subscribe import events_of_types, task_events
from sluice.errors import InvalidInput, PermissionDenied, Unavailable
from sluice.eventlog import read_log
from sluice.events import TaskCompleted, TaskRecord, TaskStarted
from sluice.ids import new_task_id
from sluice.nats_auth import write_auth
from sluice.provision import provision
from sluice.records import TaskStore
from support.authed_nats import AuthedNats, refused, running_authed_server

pytestmark = pytest.mark.timeout(90)

T = "perm0000000000000000task"  # one task id for every probe of the table (each probe uses its own subject)


@pytest.fixture(scope="module")
def authed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthedNats]:
    with running_authed_server(tmp_path_factory.mktemp("authed")) as server:
        yield server


@pytest.fixture(scope="module")
async def admin(authed: AuthedNats) -> AsyncIterator[Bus]:
    bus = await connect(authed.config("admin"), name="sluice-admin", identity="admin")
    await provision(bus.js, authed.base)
    yield bus
    await bus.close()


async def _as(authed: AuthedNats, identity: str) -> Bus:
    return await connect(authed.config(identity), name=f"sluice-{identity}", identity=identity)


async def _nothing_stored(admin: Bus, subject: str) -> bool:
    try:
        await admin.js.get_last_msg(subjects.EVENTS_STREAM, subject)
    except nats.js.errors.NotFoundError:
        return True
    return False


FORBIDDEN_PUBLISH: list[tuple[str, str]] = [
    # a compromised tool forges the end of a task, cancels it, starts work, rewrites its record, deletes the log
    ("tool-runner", subjects.event(T, "task.completed")),
    ("tool-runner", subjects.event(T, "llm.delta")),
    ("tool-runner", subjects.control(T)),
    ("tool-runner", subjects.work(T)),
    ("tool-runner", subjects.tool_call("calculator", T)),
    ("tool-runner", jsapi.kv_key(subjects.TASKS_BUCKET, T)),
    ("tool-runner", f"$JS.API.STREAM.DELETE.{subjects.EVENTS_STREAM}"),
    ("tool-runner", jsapi.consumer_next(subjects.WORK_STREAM, subjects.WORK_CONSUMER)),
    # the edge submits and cancels, but never speaks for a runner or a tool, nor reads their queues
    ("edge", subjects.event(T, "task.completed")),
    ("edge", subjects.event(T, "tool.completed")),
    ("edge", subjects.tool_call("calculator", T)),
    ("edge", jsapi.consumer_next(subjects.TOOLS_STREAM, subjects.TOOL_CONSUMER)),
    ("edge", jsapi.consumer_next(subjects.WORK_STREAM, subjects.WORK_CONSUMER)),
    ("edge", f"$JS.API.STREAM.DELETE.{subjects.EVENTS_STREAM}"),
    ("edge", f"$JS.API.STREAM.UPDATE.{subjects.WORK_STREAM}"),
    # the runner never submits, never notices cancels, never writes a tool's start
    ("agent-runner", subjects.event(T, "task.submitted")),
    ("agent-runner", subjects.event(T, "tool.started")),
    ("agent-runner", subjects.control(T)),
    ("agent-runner", subjects.work(T)),
    ("agent-runner", jsapi.consumer_next(subjects.TOOLS_STREAM, subjects.TOOL_CONSUMER)),
    ("agent-runner", f"$JS.API.STREAM.DELETE.{subjects.TOOLS_STREAM}"),
    ("agent-runner", f"$JS.API.CONSUMER.CREATE.{subjects.WORK_STREAM}"),
    # a subscriber reads, and only the event log
    ("subscriber", subjects.event(T, "task.completed")),
    ("subscriber", subjects.control(T)),
    ("subscriber", subjects.work(T)),
    ("subscriber", jsapi.kv_key(subjects.TASKS_BUCKET, T)),
    ("subscriber", jsapi.msg_get(jsapi.kv_stream(subjects.TASKS_BUCKET))),
    ("subscriber", f"$JS.API.STREAM.PURGE.{subjects.EVENTS_STREAM}"),
    # the catalog: a runner writes its own kind's advertisement, only an agent-runner registers agents, the edge reads
    ("tool-runner", jsapi.kv_key(subjects.CATALOG_BUCKET, subjects.catalog_runner_key("agent-runner", "forged"))),
    ("tool-runner", jsapi.kv_key(subjects.CATALOG_BUCKET, subjects.catalog_known_key("assistant"))),
    ("agent-runner", jsapi.kv_key(subjects.CATALOG_BUCKET, subjects.catalog_runner_key("tool-runner", "forged"))),
    ("edge", jsapi.kv_key(subjects.CATALOG_BUCKET, subjects.catalog_known_key("assistant"))),
    ("subscriber", jsapi.kv_key(subjects.CATALOG_BUCKET, subjects.catalog_known_key("assistant"))),
    # the limits' counts: the edge keeps them; a runner only frees the unfinished tasks it ended
    ("agent-runner", jsapi.kv_key(subjects.LIMITS_BUCKET, subjects.creations_key("acme", 1))),
    ("agent-runner", jsapi.kv_key(subjects.LIMITS_BUCKET, subjects.open_streams_key("acme", "edge-1"))),
    ("tool-runner", jsapi.kv_key(subjects.LIMITS_BUCKET, subjects.active_tasks_key("acme"))),
    ("subscriber", jsapi.kv_key(subjects.LIMITS_BUCKET, subjects.active_tasks_key("acme"))),
    # the admin provisions; it does not write tasks' data
    ("admin", subjects.event(T, "task.completed")),
    ("admin", subjects.work(T)),
]

FORBIDDEN_SUBSCRIBE: list[tuple[str, str]] = [
    ("tool-runner", subjects.events_all()),
    ("tool-runner", subjects.control_all()),
    ("tool-runner", subjects.work_stream_subjects()),
    ("edge", subjects.tool_stream_subjects()),
    ("edge", subjects.control_all()),
    ("edge", jsapi.inbox_of("agent-runner") + ".>"),  # another identity's replies
    ("agent-runner", "_INBOX.>"),
    ("subscriber", subjects.control_all()),
    ("subscriber", f"$KV.{subjects.TASKS_BUCKET}.>"),
    ("admin", subjects.events_all()),
]


@pytest.mark.parametrize(("identity", "subject"), FORBIDDEN_PUBLISH, ids=[f"{i}:{s}" for i, s in FORBIDDEN_PUBLISH])
async def test_forbidden_publish_is_refused_by_the_server(
    authed: AuthedNats, admin: Bus, identity: str, subject: str
) -> None:
    bus = await _as(authed, identity)
    try:
        await bus.nc.publish(subject, b'{"forged": true}')
        assert await refused(bus, subject, "publish"), f"{identity} was allowed to publish {subject}"
        if subject.startswith(subjects.EVENT_PREFIX):
            assert await _nothing_stored(admin, subject)
        assert bus.nc.is_connected, "a refused publish must not cost the connection"
    finally:
        await bus.close()


@pytest.mark.parametrize(("identity", "subject"), FORBIDDEN_SUBSCRIBE, ids=[f"{i}:{s}" for i, s in FORBIDDEN_SUBSCRIBE])
async def test_forbidden_subscription_is_refused_by_the_server(authed: AuthedNats, identity: str, subject: str) -> None:
    bus = await _as(authed, identity)
    try:
        await bus.nc.subscribe(subject)
        assert await refused(bus, subject, "subscription"), f"{identity} was allowed to subscribe to {subject}"
    finally:
        await bus.close()


async def test_streams_survive_every_identity_but_admin(authed: AuthedNats, admin: Bus) -> None:
    for identity in ("edge", "agent-runner", "tool-runner", "subscriber"):
        bus = await _as(authed, identity)
        try:
            with pytest.raises((nats.errors.Error, asyncio.TimeoutError)):
                await bus.nc.jetstream(timeout=0.5).delete_stream(subjects.EVENTS_STREAM)
            assert await refused(bus, f"$JS.API.STREAM.DELETE.{subjects.EVENTS_STREAM}", "publish")
        finally:
            await bus.close()
    assert (await admin.js.stream_info(subjects.EVENTS_STREAM)).config.name == subjects.EVENTS_STREAM


async def test_a_refused_jetstream_publish_fails_fast_naming_identity_and_subject(
    authed: AuthedNats, admin: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = new_task_id()
    bus = await _as(authed, "tool-runner")
    try:
        with caplog.at_level(logging.ERROR, logger="sluice.bus"), pytest.raises(PermissionDenied) as denied:
            await bus.publish(subjects.event(task_id, "task.completed"), b"{}", msg_id=f"{task_id}:forged")
        assert "tool-runner" in denied.value.message and "task.completed" in denied.value.message
        lines = [r.getMessage() for r in caplog.records if "refused identity tool-runner" in r.getMessage()]
        assert len(lines) == 1 and task_id.lower() in lines[0]
        # ... and the same connection goes on doing what it may.
        seq = await bus.publish(subjects.event(task_id, "tool.started"), b"{}", msg_id=f"{task_id}:started")
        assert seq > 0
    finally:
        await bus.close()


async def test_allowed_work_of_each_identity_goes_through(authed: AuthedNats, admin: Bus) -> None:
    """Submit → work → tool call → tool events → runner's end, each by the identity that owns that step, read by a
    subscriber: the whole path of one task on the grants alone."""
    task_id = new_task_id()
    edge, runner, tool, reader = [await _as(authed, i) for i in ("edge", "agent-runner", "tool-runner", "subscriber")]
    try:
        live: asyncio.Queue[str] = asyncio.Queue()

        async def seen(msg: Msg) -> None:
            live.put_nowait(subjects.event_type_of(msg.subject))

        await reader.nc.subscribe(subjects.events_of_task(task_id), cb=seen)
        results: asyncio.Queue[str] = asyncio.Queue()

        async def tool_done(msg: Msg) -> None:
            results.put_nowait(msg.subject)

        # The runner awaits tool results the way its sink does: an ordered consumer on the task's tool.completed.
        await runner.js.subscribe(
            subjects.event(task_id, "tool.completed"),
            stream=subjects.EVENTS_STREAM,
            ordered_consumer=True,
            cb=tool_done,
        )
        await runner.nc.subscribe(subjects.control(task_id))
        await reader.nc.flush()
        await runner.nc.flush()

        edge_store = TaskStore(await edge.js.key_value(subjects.TASKS_BUCKET))
        await edge_store.kv.create(task_id, b'{"state": "submitted"}')
        await edge.publish(subjects.event(task_id, "task.submitted"), b"{}", msg_id=f"{task_id}:submitted")
        await edge.publish(subjects.work(task_id), b"{}", msg_id=f"{task_id}:run")
        await edge.notify(subjects.control(task_id), b"{}")

        work = await runner.js.pull_subscribe_bind(durable=subjects.WORK_CONSUMER, stream=subjects.WORK_STREAM)
        [message] = await work.fetch(1, timeout=10)
        await message.ack()
        runner_store = TaskStore(await runner.js.key_value(subjects.TASKS_BUCKET))
        await runner_store.kv.put(task_id, b'{"state": "working"}')
        await runner.publish(subjects.event(task_id, "task.started"), b"{}", msg_id=f"{task_id}:started")
        await runner.publish(subjects.tool_call("calculator", task_id), b"{}", msg_id=f"{task_id}:call")

        calls = await tool.js.pull_subscribe_bind(durable=subjects.TOOL_CONSUMER, stream=subjects.TOOLS_STREAM)
        [call] = await calls.fetch(1, timeout=10)
        assert (await TaskStore(await tool.js.key_value(subjects.TASKS_BUCKET)).kv.get(task_id)).value
        await tool.publish(subjects.event(task_id, "tool.started"), b"{}", msg_id=f"{task_id}:t1")
        await tool.publish(subjects.event(task_id, "tool.completed"), b"{}", msg_id=f"{task_id}:t2")
        await call.ack()
        assert await asyncio.wait_for(results.get(), 10) == subjects.event(task_id, "tool.completed")
        await runner.publish(subjects.event(task_id, "task.completed"), b"{}", msg_id=f"{task_id}:end")

        for bus in (runner, tool, reader, edge):
            assert [e.type async for e in read_log(bus, task_id)] == [
                "task.submitted", "task.started", "tool.started", "tool.completed", "task.completed"
            ]  # fmt: skip
        assert [await asyncio.wait_for(live.get(), 10) for _ in range(5)][-1] == "task.completed"
        for bus in (edge, runner, tool, reader):
            await bus.nc.flush()
            assert bus.state.refused == {}, f"{bus.state.identity} was refused {bus.state.refused}"
    finally:
        for bus in (edge, runner, tool, reader):
            await bus.close()


async def test_the_catalog_works_on_the_grants_alone(authed: AuthedNats, admin: Bus) -> None:
    """Each runner advertises under its own identity; the edge and the agent-runner watch; nothing is refused."""
    from sluice.catalog import Advertiser, AgentAdvert, CatalogView, RunnerAdvert, ToolAdvert
    from support.catalog_watch import until_catalog

    edge, runner, tool = [await _as(authed, i) for i in ("edge", "agent-runner", "tool-runner")]
    stopping = asyncio.Event()
    adverts = [
        Advertiser(runner, RunnerAdvert(runner="r1", kind="agent-runner", agents=[AgentAdvert(name="perm-agent")])),
        Advertiser(tool, RunnerAdvert(runner="t1", kind="tool-runner", tools=[ToolAdvert(name="perm_tool")])),
    ]
    views = [CatalogView(edge), CatalogView(runner)]
    try:
        tasks = [asyncio.create_task(a.run(stopping)) for a in adverts]
        for view in views:
            await view.start()
            await until_catalog(view, lambda v=view: v.is_known("perm-agent") and [t.name for t in v.tools()])
        assert await views[0].confirm_known("perm-agent")
        stopping.set()
        await asyncio.gather(*tasks)
        for bus in (edge, runner, tool):
            await bus.nc.flush()
            assert bus.state.refused == {}, f"{bus.state.identity} was refused {bus.state.refused}"
    finally:
        stopping.set()
        for view in views:
            await view.stop()
        for bus in (edge, runner, tool):
            await bus.close()


async def test_the_tenant_limits_work_on_the_grants_alone(authed: AuthedNats, admin: Bus) -> None:
    """The edge takes a place, counts a creation and lists the counted tenants; the agent-runner frees the place of
    the task it ended; nothing is refused."""
    from sluice.active_tasks import ActiveTasks
    from stream_edge.limits import CreationRate

    edge, runner = [await _as(authed, i) for i in ("edge", "agent-runner")]
    tenant, task_id = f"perm-{new_task_id()}", new_task_id()
    try:
        taking = ActiveTasks(await edge.js.key_value(subjects.LIMITS_BUCKET))
        assert await taking.take(tenant, task_id, 1)
        await CreationRate(edge.js, 10).count(tenant)
        assert tenant in await taking.tenants()
        freeing = ActiveTasks(await runner.js.key_value(subjects.LIMITS_BUCKET))
        record = TaskRecord(id=task_id, state="completed", agent="a", input="i", created_at="", updated_at="",
                            tenant=tenant)  # fmt: skip
        await freeing.release(record)
        assert await taking.held(tenant) == {}
        for bus in (edge, runner):
            await bus.nc.flush()
            assert bus.state.refused == {}, f"{bus.state.identity} was refused {bus.state.refused}"
    finally:
        for bus in (edge, runner):
            await bus.close()


async def test_wrong_seed_is_refused_at_connect_in_one_error(authed: AuthedNats, tmp_path: Path) -> None:
    """A seed the server does not know (another deployment's): `Unavailable` naming the identity, not a retry loop."""
    stranger = write_auth(tmp_path / "other-deployment")
    config = authed.config("edge")
    wrong = type(config)(nats_urls=config.nats_urls, nats_nkey_file=str(stranger.seeds["edge"]))
    with pytest.raises(Unavailable) as refused:
        await asyncio.wait_for(connect(wrong, name="sluice-edge", identity="edge", wait_s=5), 20)
    assert refused.value.code == "nats_refused" and "edge" in refused.value.message


async def test_anonymous_client_is_refused(authed: AuthedNats) -> None:
    with pytest.raises(Unavailable) as refused:
        await asyncio.wait_for(connect(authed.base, name="sluice-nobody", wait_s=5), 20)
    assert refused.value.code == "nats_refused"


ACCOUNT_SEED = bytes(nkeys.encode_seed(bytes(32), nkeys.PREFIX_BYTE_ACCOUNT))


@pytest.mark.parametrize("content", [None, b"not a seed\n", ACCOUNT_SEED], ids=["missing", "garbage", "not-a-user"])
async def test_missing_or_malformed_seed_is_one_clear_error(
    authed: AuthedNats, tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "edge.nk"
    if content is not None:
        path.write_bytes(content)
    config = type(authed.base)(nats_urls=authed.base.nats_urls, nats_nkey_file=str(path))
    with pytest.raises(InvalidInput) as bad:
        await connect(config, name="sluice-edge", identity="edge", wait_s=5)
    assert str(path) in bad.value.message


def test_seed_files_are_private_and_kept_on_a_second_run(tmp_path: Path) -> None:
    first = write_auth(tmp_path / "auth")
    for path in first.seeds.values():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = write_auth(tmp_path / "auth")
    assert again.public_keys == first.public_keys
    rotated = write_auth(tmp_path / "auth", rotate=True)
    assert set(rotated.public_keys.values()).isdisjoint(first.public_keys.values())
    text = rotated.auth_conf.read_text()
    assert all(key in text for key in rotated.public_keys.values())
    assert not any(path.read_text().strip() in text for path in rotated.seeds.values()), "a seed in auth.conf"


async def test_a_subscriber_follows_tasks_live_through_the_client_api(authed: AuthedNats, admin: Bus) -> None:
    """`sluice.client.subscribe` as the read-only identity: live ordered consumers, flow control and all."""
    task_id = new_task_id()
    reader, runner = await _as(authed, "subscriber"), await _as(authed, "agent-runner")
    try:
        finished = events_of_types(reader, ["task.completed"])
        following = task_events(reader, task_id)
        first = asyncio.ensure_future(anext(following))
        ended = asyncio.ensure_future(anext(finished))
        await runner.publish(subjects.event(task_id, "task.started"), _event(task_id, "task.started"), msg_id="s")
        assert isinstance(await asyncio.wait_for(first, 15), TaskStarted)
        done = _event(task_id, "task.completed")
        await runner.publish(subjects.event(task_id, "task.completed"), done, msg_id=f"{task_id}:end")
        assert isinstance(await asyncio.wait_for(anext(following), 15), TaskCompleted)
        assert (await asyncio.wait_for(ended, 15)).task_id == task_id
        await reader.nc.flush()
        assert reader.state.refused == {}
        await following.aclose()
        await finished.aclose()
    finally:
        await reader.close()
        await runner.close()


def _event(task_id: str, event_type: str) -> bytes:
    data: dict[str, object] = {"attempt": 1, "runner": "r"} if event_type == "task.started" else {"output": "ok"}
    if event_type == "task.completed":
        data["usage"] = {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
    envelope = {"task_id": task_id, "type": event_type, "ts": "2026-12-03T00:00:00Z", "source": "agent-runner"}
    return json.dumps({**envelope, "data": data}).encode()


async def test_the_edge_lists_a_tenants_tasks_through_its_index_on_its_grants(authed: AuthedNats, admin: Bus) -> None:
    """The per-tenant index (the subjects of `tn.<tenant>.*` in the bucket's stream) and the record writes, as the
    edge identity."""
    edge = await _as(authed, "edge")
    try:
        store = TaskStore(await edge.js.key_value(subjects.TASKS_BUCKET), js=edge.js)
        now = "2026-12-03T00:00:00.000Z"
        ids = [new_task_id(), new_task_id()]
        for task_id, tenant in zip(ids, ("perm-a", "perm-b"), strict=True):
            record = TaskRecord(
                id=task_id, state="submitted", agent="assistant", input="x", created_at=now, updated_at=now,
                tenant=tenant,
            )  # fmt: skip
            await store.create(record)
        assert [r.id for r in await store.tenant_records("perm-a")] == [ids[0]]
        await edge.nc.flush()
        assert edge.state.refused == {}, f"the edge was refused {edge.state.refused}"
    finally:
        await edge.close()
