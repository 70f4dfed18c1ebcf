"""Byte limits on every stream and bucket (sluice.limits), against a real nats-server: provisioning sets them, raises
them in place, never lowers one unless allowed; and a full event log or task bucket is refused at once with
`storage_full` — to a writer and over HTTP — instead of being retried until a deadline.

The writers in the "full" tests get deadlines of an hour: were a refusal retried, the test would run into its own
timeout instead of seeing the error.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from nats.js.api import DiscardPolicy, KeyValueConfig, RetentionPolicy, StreamConfig

from sluice import jsapi, subjects
from sluice.bus import Bus, connect
from sluice.config import CommonConfig
from sluice.errors import ProvisioningError, StorageFull
from sluice.eventlog import EventWriter
from sluice.events import TaskCanceled, TaskCanceledData
from sluice.provision import Allow, bucket_configs, provision, stream_specs
from support.catalog import advertise_shipped_agents
from support.edge import running_edge
from support.nats_server import NatsServer, running_server

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
AN_HOUR_S = 3600.0


@pytest.fixture
def fresh_server(tmp_path):  # type: ignore[no-untyped-def]
    with running_server(tmp_path) as server:
        yield server


@pytest.fixture
async def fresh_bus(fresh_server: NatsServer) -> AsyncIterator[Bus]:
    bus = await connect(CommonConfig(nats_urls=(fresh_server.url,)), name="t")
    yield bus
    await bus.close()


async def stream_config(bus: Bus, name: str) -> StreamConfig:
    return (await bus.js.stream_info(name)).config


async def test_provisioning_gives_every_stream_and_bucket_a_byte_limit(fresh_bus: Bus) -> None:
    config = CommonConfig()
    await provision(fresh_bus.js, config)
    for spec in stream_specs(config):
        have = await stream_config(fresh_bus, spec.config.name or "")
        assert have.max_bytes == spec.config.max_bytes and have.max_bytes > 0, have
        assert have.max_msg_size == spec.config.max_msg_size and have.max_msg_size > 0, have
        assert have.discard == DiscardPolicy.NEW, have  # full: refuse the new, never drop the stored
    for kv in bucket_configs(config):
        have = await stream_config(fresh_bus, jsapi.kv_stream(kv.bucket))
        assert have.max_bytes == kv.max_bytes and have.max_bytes > 0, have
        assert have.max_msg_size == kv.max_value_size and have.max_msg_size > 0, have
        assert have.discard == DiscardPolicy.NEW, have
    assert (await stream_config(fresh_bus, subjects.EVENTS_STREAM)).max_bytes == 4 * GiB
    assert (await stream_config(fresh_bus, jsapi.kv_stream(subjects.TASKS_BUCKET))).max_bytes == GiB


async def test_higher_limits_are_raised_in_place(fresh_bus: Bus) -> None:
    config = CommonConfig(events_max_bytes=64 * MiB, tasks_max_bytes=8 * MiB)
    await provision(fresh_bus.js, config)
    await provision(fresh_bus.js, replace(config, events_max_bytes=128 * MiB, tasks_max_bytes=16 * MiB))
    assert (await stream_config(fresh_bus, subjects.EVENTS_STREAM)).max_bytes == 128 * MiB
    assert (await stream_config(fresh_bus, jsapi.kv_stream(subjects.TASKS_BUCKET))).max_bytes == 16 * MiB


@pytest.mark.parametrize(
    ("lower", "store", "change"),
    [
        ({"events_max_bytes": 32 * MiB}, f"stream {subjects.EVENTS_STREAM}", f"max bytes {64 * MiB} -> {32 * MiB}"),
        ({"tasks_max_bytes": 4 * MiB}, f"bucket {subjects.TASKS_BUCKET}", f"max bytes {8 * MiB} -> {4 * MiB}"),
    ],
)
async def test_a_lower_limit_is_refused_unless_allowed(
    fresh_bus: Bus, lower: dict[str, int], store: str, change: str
) -> None:
    config = CommonConfig(events_max_bytes=64 * MiB, tasks_max_bytes=8 * MiB)
    await provision(fresh_bus.js, config)
    lowered = replace(config, **lower)
    with pytest.raises(ProvisioningError) as refused:
        await provision(fresh_bus.js, lowered)
    assert refused.value.code == "would_lower_durability"
    assert store in refused.value.message and change in refused.value.message, refused.value.message
    assert "--allow-smaller-limits" in refused.value.message
    name = store.split()[1]
    stream = name if name == subjects.EVENTS_STREAM else jsapi.kv_stream(name)
    assert (await stream_config(fresh_bus, stream)).max_bytes == 2 * next(iter(lower.values()))  # unchanged
    await provision(fresh_bus.js, lowered, allow=Allow(smaller_limits=True))
    assert (await stream_config(fresh_bus, stream)).max_bytes == next(iter(lower.values()))


async def test_streams_and_buckets_made_without_limits_get_them_only_when_allowed(fresh_bus: Bus) -> None:
    """What an earlier version created has no limits: adding one lowers "unlimited", so an operator says so once.
    The task bucket's direct gets are turned off on the way (its reads must see every acknowledged write)."""
    js = fresh_bus.js
    earlier = StreamConfig(
        name=subjects.EVENTS_STREAM,
        subjects=[subjects.events_all()],
        retention=RetentionPolicy.LIMITS,
        max_age=7 * 86400.0,
        duplicate_window=120.0,
    )
    await js.add_stream(earlier)
    await js.create_key_value(KeyValueConfig(bucket=subjects.TASKS_BUCKET, history=2, direct=True))
    with pytest.raises(ProvisioningError, match=r"SLUICE_EVENTS.*max bytes unlimited -> 4294967296"):
        await provision(js, CommonConfig())
    assert (await stream_config(fresh_bus, subjects.EVENTS_STREAM)).max_bytes == -1
    await provision(js, CommonConfig(), allow=Allow(smaller_limits=True))
    assert (await stream_config(fresh_bus, subjects.EVENTS_STREAM)).max_bytes == 4 * GiB
    bucket = await stream_config(fresh_bus, jsapi.kv_stream(subjects.TASKS_BUCKET))
    assert bucket.max_bytes == GiB and bucket.max_msg_size == MiB and not bucket.allow_direct
    await provision(js, CommonConfig())  # now in line: nothing left to refuse


async def test_a_full_event_log_refuses_the_next_event_and_the_next_submission_at_once(
    fresh_server: NatsServer,
) -> None:
    config = CommonConfig(nats_urls=(fresh_server.url,), events_max_bytes=16 * KiB)
    bus = await connect(config, name="t")
    try:
        await provision(bus.js, config)
        await advertise_shipped_agents(bus)
        bus.publish_deadline_s = AN_HOUR_S
        writer = EventWriter(bus, "edge")
        refusal: StorageFull | None = None
        for _ in range(1000):
            task_id = uuid.uuid4().hex
            data = TaskCanceledData(reason="x" * 512)
            try:
                await writer.emit(TaskCanceled, task_id, data, msg_id=f"{task_id}:end")
            except StorageFull as exc:
                refusal = exc
                break
        assert refusal is not None, "16 KiB of events never filled the log"
        assert refusal.code == "storage_full"
        assert "stream SLUICE_EVENTS (SLUICE_EVENTS_MAX_BYTES) is full" in refusal.message, refusal.message
        async with running_edge(config, bus) as edge:
            response = await edge.client.post("/v1/tasks", json={"input": "hello"})
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"]
        error = response.json()["error"]
        assert error["code"] == "storage_full" and "SLUICE_EVENTS_MAX_BYTES" in error["message"], error
    finally:
        await bus.close()


async def test_a_full_task_bucket_refuses_the_next_submission_at_once(fresh_server: NatsServer) -> None:
    config = CommonConfig(nats_urls=(fresh_server.url,), tasks_max_bytes=16 * KiB)
    bus = await connect(config, name="t")
    try:
        await provision(bus.js, config)
        await advertise_shipped_agents(bus)
        async with running_edge(config, bus) as edge:
            statuses: list[int] = []
            for _ in range(1000):
                response = await edge.client.post("/v1/tasks", json={"input": "hello " + "y" * 256})
                statuses.append(response.status_code)
                if response.status_code != 201:
                    break
        assert statuses[:-1] and set(statuses[:-1]) == {201}, statuses
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "storage_full", error
        assert "bucket sluice-tasks (SLUICE_TASKS_MAX_BYTES) is full" in error["message"], error
    finally:
        await bus.close()
