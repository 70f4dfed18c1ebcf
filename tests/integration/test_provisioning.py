"""Provisioning against a real nats-server: idempotent, concurrent-safe, and clear about conflicts."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import nats.js.errors
import pytest
from nats.js.api import KeyValueConfig, RetentionPolicy, StreamConfig

from sluice import subjects
from sluice.bus import connect
from sluice.config import CommonConfig
from sluice.errors import ProvisioningError
from sluice.provision import Allow, bucket_configs, provision
from support.nats_server import running_server


@pytest.fixture
def fresh_server(tmp_path):  # type: ignore[no-untyped-def]
    with running_server(tmp_path) as server:
        yield server


async def test_provisioning_twice_and_from_five_concurrent_tasks(fresh_server) -> None:  # type: ignore[no-untyped-def]
    config = CommonConfig(nats_urls=(fresh_server.url,))
    bus = await connect(config, name="t")
    try:
        await provision(bus.js, config)
        await provision(bus.js, config)
        await asyncio.gather(*(provision(bus.js, config) for _ in range(5)))
        info = await bus.js.stream_info(subjects.EVENTS_STREAM)
        assert info.config.allow_direct and info.config.duplicate_window >= 120
        assert info.config.max_age == pytest.approx(7 * 86400)
        assert info.config.max_consumers == 100_000  # explicit: the server's default caps edges at 1,000 feeds
        consumer = await bus.js.consumer_info(subjects.WORK_STREAM, subjects.WORK_CONSUMER)
        assert consumer.config.filter_subject == "sluice.run.*"
        bucket = await bus.js.stream_info(f"KV_{subjects.TASKS_BUCKET}")
        assert not bucket.config.allow_direct  # reads go to the leader: a record just written is always found
    finally:
        await bus.close()


async def test_longer_retention_is_updated_in_place(fresh_server) -> None:  # type: ignore[no-untyped-def]
    config = CommonConfig(nats_urls=(fresh_server.url,), events_max_age_s=3600.0)
    bus = await connect(config, name="t")
    try:
        await provision(bus.js, config)
        await provision(bus.js, replace(config, events_max_age_s=7200.0))
        info = await bus.js.stream_info(subjects.EVENTS_STREAM)
        assert info.config.max_age == pytest.approx(7200)
    finally:
        await bus.close()


async def test_shorter_retention_is_refused_unless_allowed(fresh_server) -> None:  # type: ignore[no-untyped-def]
    """Provisioning never throws events away by itself: it says what it would change and which flag allows it."""
    config = CommonConfig(nats_urls=(fresh_server.url,))
    bus = await connect(config, name="t")
    try:
        await provision(bus.js, config)
        shorter = replace(config, events_max_age_s=3600.0)
        with pytest.raises(ProvisioningError) as refused:
            await provision(bus.js, shorter)
        assert refused.value.code == "would_lower_durability"
        assert "SLUICE_EVENTS" in refused.value.message and "604800s -> 3600s" in refused.value.message
        assert "--allow-shorter-retention" in refused.value.message
        assert (await bus.js.stream_info(subjects.EVENTS_STREAM)).config.max_age == pytest.approx(7 * 86400)
        await provision(bus.js, shorter, allow=Allow(shorter_retention=True))
        assert (await bus.js.stream_info(subjects.EVENTS_STREAM)).config.max_age == pytest.approx(3600)
    finally:
        await bus.close()


async def test_retention_below_the_duplicate_window_is_refused_before_any_change(fresh_server) -> None:  # type: ignore[no-untyped-def]
    config = CommonConfig(nats_urls=(fresh_server.url,), events_max_age_s=6.0)
    bus = await connect(config, name="t")
    try:
        with pytest.raises(ProvisioningError, match="duplicate window") as refused:
            await provision(bus.js, config)
        assert refused.value.code == "retention_below_duplicate_window"
        with pytest.raises(nats.js.errors.NotFoundError):
            await bus.js.stream_info(subjects.EVENTS_STREAM)
    finally:
        await bus.close()


async def test_a_bucket_created_with_direct_gets_is_switched_to_leader_reads(fresh_server) -> None:  # type: ignore[no-untyped-def]
    config = CommonConfig(nats_urls=(fresh_server.url,))
    bus = await connect(config, name="t")
    try:
        tasks = next(kv for kv in bucket_configs(config) if kv.bucket == subjects.TASKS_BUCKET)
        earlier = KeyValueConfig(bucket=tasks.bucket, history=2, direct=True, max_bytes=tasks.max_bytes,
                                 max_value_size=tasks.max_value_size)  # fmt: skip
        await bus.js.create_key_value(earlier)
        await provision(bus.js, config)
        bucket = await bus.js.stream_info(f"KV_{subjects.TASKS_BUCKET}")
        assert not bucket.config.allow_direct
    finally:
        await bus.close()


async def test_incompatible_retention_is_reported_not_papered_over(fresh_server) -> None:  # type: ignore[no-untyped-def]
    config = CommonConfig(nats_urls=(fresh_server.url,))
    bus = await connect(config, name="t")
    try:
        await bus.js.add_stream(
            StreamConfig(name=subjects.WORK_STREAM, subjects=["sluice.run.>"], retention=RetentionPolicy.LIMITS)
        )
        with pytest.raises(ProvisioningError, match=r"SLUICE_WORK.*retention") as info:
            await provision(bus.js, config)
        assert info.value.code == "stream_incompatible"
    finally:
        await bus.close()
