"""Creates the streams, durable consumers and the KV buckets of CONTRACT §2 — idempotent and concurrent-safe.

`sluice provision` (the `admin` identity) is the only caller in a deployment; services only check what they need
(`sluice.provisioned`). JetStream's own create is idempotent for an identical config, so several provisioners at
once agree. A stream that exists with other settings is updated where JetStream allows it (replicas, max age,
duplicate window, direct get, subjects, byte limits); a change it forbids (retention, storage) is reported as a
`ProvisioningError` that says what differs and how to resolve it. Provisioning never lowers a stream's replicas,
shortens its retention or lowers a byte limit (of a stream or a bucket, see `sluice.limits`) by itself: it
refuses, naming the change and the flag that allows it (`Allow`). The buckets are in `sluice.provision_buckets`.

A service may start before JetStream can answer: a cluster whose nodes are still meeting has no meta leader (and
without a quorum never will), requests sent then go unanswered, and until as many servers as `replicas` have joined
a replicated stream has "no suitable peers for placement". Provisioning is retried through these for `wait_s`,
then fails (`Unavailable`, or `ProvisioningError` if there are still too few servers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_delay, wait_exponential_jitter

from sluice import jsapi, limits, subjects
from sluice.config import CommonConfig
from sluice.errors import ProvisioningError, Unavailable

__all__ = ["Allow", "StreamSpec", "bucket_configs", "provision", "stream_specs"]

log = logging.getLogger(__name__)
STREAM_NAME_IN_USE = 10058
CONSUMER_ALREADY_EXISTS = 10148
NO_SUITABLE_PEERS = 10005  # fewer servers (yet) than replicas
# JetStream cannot answer yet (no meta leader, no quorum, an election): worth asking again.
NOT_YET = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
)


def _not_yet(exc: BaseException) -> bool:
    return isinstance(exc, NOT_YET) or (isinstance(exc, nats.js.errors.APIError) and exc.err_code == NO_SUITABLE_PEERS)


@dataclass(frozen=True)
class Allow:
    """What an operator lets provisioning lower on existing streams (`sluice provision --allow-…`)."""

    fewer_replicas: bool = False
    shorter_retention: bool = False
    smaller_limits: bool = False


def _lowered(have: StreamConfig, want: StreamConfig, allow: Allow) -> list[str]:
    """Each change that would make an existing stream less durable and is not allowed, with the flag that allows it."""
    refused: list[str] = []
    if (want.num_replicas or 1) < (have.num_replicas or 1) and not allow.fewer_replicas:
        refused.append(
            f"replicas {have.num_replicas} -> {want.num_replicas} (pass --allow-fewer-replicas to lower them)"
        )
    have_age, want_age = have.max_age or 0.0, want.max_age or 0.0  # 0: kept forever
    shorter = want_age > 0 and (have_age == 0 or want_age < have_age)
    if shorter and not allow.shorter_retention:
        refused.append(f"max age {have_age:.0f}s -> {want_age:.0f}s (pass --allow-shorter-retention to shorten it)")
    if not allow.smaller_limits:
        lowered = limits.lowered_limits(have, want)
        refused += [f"{change} (pass --allow-smaller-limits to lower it)" for change in lowered]
    return refused


@dataclass(frozen=True)
class StreamSpec:
    config: StreamConfig
    # Settings JetStream cannot change on an existing stream: a mismatch needs an operator.
    immutable: tuple[str, ...] = ("retention", "storage")


def stream_specs(config: CommonConfig) -> list[StreamSpec]:
    def stream(
        name: str, description: str, subject: str, retention: RetentionPolicy, max_bytes: int, max_msg_size: int
    ) -> StreamSpec:
        events = retention is RetentionPolicy.LIMITS
        return StreamSpec(
            StreamConfig(
                name=name,
                description=description,
                subjects=[subject],
                retention=retention,
                storage=StorageType.FILE,
                num_replicas=config.replicas,
                duplicate_window=config.duplicate_window_s,
                # When full, refuse the new message; never drop stored ones early (see sluice.limits).
                discard=DiscardPolicy.NEW,
                max_bytes=max_bytes,
                max_msg_size=max_msg_size,
                max_age=config.events_max_age_s if events else None,
                max_consumers=config.events_max_consumers if events else None,
                allow_direct=True if events else None,
            )
        )

    return [
        stream(
            subjects.EVENTS_STREAM,
            "Sluice per-task event log, replayed by clients",
            subjects.events_all(),
            RetentionPolicy.LIMITS,
            config.events_max_bytes,
            limits.EVENT_MAX_BYTES,
        ),
        stream(
            subjects.WORK_STREAM,
            "Sluice work queue: run or continue a task",
            subjects.work_stream_subjects(),
            RetentionPolicy.WORK_QUEUE,
            config.queue_max_bytes,
            limits.WORK_MESSAGE_MAX_BYTES,
        ),
        stream(
            subjects.TOOLS_STREAM,
            "Sluice tool calls",
            subjects.tool_stream_subjects(),
            RetentionPolicy.WORK_QUEUE,
            config.queue_max_bytes,
            limits.TOOL_CALL_MAX_BYTES,
        ),
    ]


def consumer_configs(config: CommonConfig) -> list[tuple[str, ConsumerConfig]]:
    def durable(name: str, subject: str) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=name,
            description=f"Sluice shared durable consumer: {name}",
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=subject,
            ack_wait=config.ack_wait_s,
            # Unlimited here: the runner counts deliveries itself and fails a poison task with an event, so
            # nobody waits forever for a message JetStream silently stopped delivering.
            max_deliver=-1,
            max_ack_pending=10_000,
            num_replicas=0,
        )

    return [
        (subjects.WORK_STREAM, durable(subjects.WORK_CONSUMER, subjects.work_all())),
        (subjects.TOOLS_STREAM, durable(subjects.TOOL_CONSUMER, subjects.tool_calls_all())),
    ]


async def _ensure_stream(js: JetStreamContext, spec: StreamSpec, allow: Allow) -> None:
    want = spec.config
    try:
        await js.add_stream(want)
        return
    except nats.js.errors.APIError as exc:
        if _not_yet(exc):
            raise
        if exc.err_code != STREAM_NAME_IN_USE:
            raise rejected("stream_rejected", want.name or "", exc) from exc
    have = (await js.stream_info(want.name or "")).config
    differs = [name for name in spec.immutable if getattr(have, name) != getattr(want, name)]
    if differs:
        detail = ", ".join(f"{n} is {getattr(have, n)} but Sluice needs {getattr(want, n)}" for n in differs)
        raise ProvisioningError(
            "stream_incompatible",
            f"stream {want.name} exists with settings JetStream cannot change ({detail}); "
            f"back it up and delete it (nats stream rm {want.name}) or point Sluice at another account",
        )
    lowered = _lowered(have, want, allow)
    if lowered:
        raise ProvisioningError(
            "would_lower_durability", f"stream {want.name} left unchanged: this would lower {'; '.join(lowered)}"
        )
    try:
        await js.update_stream(want)
    except nats.js.errors.APIError as exc:
        if _not_yet(exc):
            raise
        raise rejected("stream_update_refused", want.name or "", exc) from exc
    log.info("stream settings updated", extra={"stream": want.name})


def rejected(code: str, name: str, exc: nats.js.errors.APIError) -> ProvisioningError:
    """JetStream's refusal of a create or update, with what to do when the byte limits do not fit the server."""
    message = f"{name}: {exc.description}"
    if exc.err_code == limits.INSUFFICIENT_STORAGE:
        message += (
            f" (the server reserves each stream's max bytes: lower the limit of {limits.store_named(name)}, or raise"
            " the server's jetstream max_file_store)"
        )
    return ProvisioningError(code, message)


async def _ensure_consumer(js: JetStreamContext, stream: str, cfg: ConsumerConfig) -> None:
    try:
        await js.add_consumer(stream, cfg)
    except nats.js.errors.APIError as exc:
        if _not_yet(exc):
            raise
        raise ProvisioningError("consumer_rejected", f"{stream}/{cfg.durable_name}: {exc.description}") from exc


async def provision(
    js: JetStreamContext, config: CommonConfig, *, wait_s: float = 30.0, allow: Allow | None = None
) -> None:
    """Creates or reconciles everything; while JetStream cannot answer yet, tries again for `wait_s`."""
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_not_yet),
            wait=wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.1),
            stop=stop_after_delay(wait_s),
            before_sleep=_log_not_ready,
            reraise=True,
        ):
            with attempt:
                await _provision_once(js, config, allow or Allow())
    except NOT_YET as exc:
        raise Unavailable("jetstream_unavailable", f"JetStream did not answer for {wait_s:.0f}s: {exc!r}") from exc
    except nats.js.errors.APIError as exc:
        if exc.err_code != NO_SUITABLE_PEERS:
            raise
        raise ProvisioningError(
            "too_few_servers",
            f"{exc.description} after {wait_s:.0f}s: SLUICE_REPLICAS={config.replicas} needs that many JetStream "
            "servers in the cluster",
        ) from exc


def _log_not_ready(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    why = error.description if isinstance(error, nats.js.errors.APIError) else type(error).__name__
    log.info("JetStream not ready (%s); provisioning again", why)


async def _provision_once(js: JetStreamContext, config: CommonConfig, allow: Allow) -> None:
    if config.events_max_age_s < config.duplicate_window_s:
        raise ProvisioningError(
            "retention_below_duplicate_window",
            f"event retention {config.events_max_age_s:.0f}s is shorter than the {config.duplicate_window_s:.0f}s "
            "duplicate window that makes retried publishes safe",
        )
    for spec in stream_specs(config):
        await _ensure_stream(js, spec, allow)
    for stream, cfg in consumer_configs(config):
        await _ensure_consumer(js, stream, cfg)
    await ensure_buckets(js, config, allow)


# A work message lives as long as its task runs; a day of hand-back notes outlasts any sensible task.
_HANDBACKS_TTL_S = 86400.0
# A lease (e.g. the reconciler's) not renewed for this long is free for another holder.
_LEASE_TTL_S = 15.0
# How long the server keeps the marker it writes when an advertisement's TTL ends (watchers see it as a delete).
CATALOG_MARKER_TTL_S = 60.0
# The delete marker an expired count leaves: watchers (the edges' open-stream totals) see the count go.
LIMITS_MARKER_TTL_S = 60.0


def bucket_configs(config: CommonConfig) -> list[KeyValueConfig]:
    """Every KV bucket, read through its stream leader (direct gets off):

    - `sluice-tasks`: the records decide cancel and state, so a read must see every acknowledged write (a direct
      get may be answered by a follower that has not applied one yet: a 404 right after the 201).
    - `sluice-contexts` (CONTRACT §10): one key per conversation listing its tasks, so a follow-up finds its history
      without scanning the task bucket; read like the records (a follow-up sent right after an answer must see it).
    - `sluice-handbacks`, `sluice-leases`: clean hand-backs per message; one holder of each singleton job.
    - `sluice-catalog` (CONTRACT §9): per-message TTLs, and a delete marker when one ends, so a watcher is told that
      a runner's advertisement expired (its runner died) instead of having to notice by itself.
    - `sluice-limits`: the per-tenant abuse limits' counts (CONTRACT §8, `sluice.active_tasks`, the edge's
      `limits`): no bucket TTL (a tenant's unfinished tasks stay counted as long as they run) but per-message TTLs,
      so a minute's creation count and a dead edge's open-stream counts vanish by themselves; read through the
      leader, since a count must see every acknowledged write.
    """

    def bucket(
        name: str, description: str, max_bytes: int, max_value: int, *, history: int = 1, ttl_s: float | None = None
    ) -> KeyValueConfig:
        return KeyValueConfig(
            bucket=name,
            description=description,
            history=history,
            replicas=config.replicas,
            storage=StorageType.FILE,
            ttl=ttl_s or config.events_max_age_s,
            direct=False,
            max_bytes=max_bytes,
            max_value_size=max_value,
        )

    catalog = bucket(
        subjects.CATALOG_BUCKET,
        "Sluice catalog: live runners' advertisements, and every agent ever advertised",
        limits.CATALOG_MAX_BYTES,
        limits.RECORD_MAX_BYTES,
    )
    catalog.ttl, catalog.direct, catalog.limit_marker_ttl = None, None, CATALOG_MARKER_TTL_S
    tenant_limits = bucket(
        subjects.LIMITS_BUCKET,
        "Sluice per-tenant limits: unfinished tasks, creations per minute, open streams",
        limits.TENANT_LIMITS_MAX_BYTES,
        limits.RECORD_MAX_BYTES,
    )
    tenant_limits.ttl, tenant_limits.limit_marker_ttl = None, LIMITS_MARKER_TTL_S
    return [
        bucket(subjects.TASKS_BUCKET, "Sluice task records", config.tasks_max_bytes, limits.RECORD_MAX_BYTES,
               history=5),
        bucket(subjects.CONTEXTS_BUCKET, "Sluice conversations: each context's tasks, oldest first",
               config.contexts_max_bytes, limits.RECORD_MAX_BYTES),
        bucket(subjects.HANDBACKS_BUCKET, "Sluice clean hand-backs per message (not crashes)",
               limits.HANDBACKS_MAX_BYTES, limits.HANDBACK_MAX_BYTES, ttl_s=_HANDBACKS_TTL_S),
        bucket(subjects.LEASES_BUCKET, "Sluice leases: one holder of each singleton job", limits.LEASES_MAX_BYTES,
               limits.LEASE_MAX_BYTES, ttl_s=_LEASE_TTL_S),
        catalog,
        tenant_limits,
    ]  # fmt: skip


async def ensure_buckets(js: JetStreamContext, config: CommonConfig, allow: Allow) -> None:
    for kv in bucket_configs(config):
        await _ensure_bucket(js, kv, allow)


async def _ensure_bucket(js: JetStreamContext, kv: KeyValueConfig, allow: Allow) -> None:
    """Creates a bucket. One that exists with other settings (another version, another replica count) is kept as it
    is, except for its byte limits (raised in place, never lowered unless allowed) and, for the task records, direct
    gets (turned off, also on a bucket an earlier version created with them on)."""
    try:
        await js.create_key_value(kv)
        return
    except nats.js.errors.APIError as exc:
        if _not_yet(exc):
            raise
        if exc.err_code != STREAM_NAME_IN_USE:
            raise rejected("bucket_rejected", kv.bucket, exc) from exc
    stream = jsapi.kv_stream(kv.bucket)
    have = (await js.stream_info(stream)).config
    want = dataclasses.replace(have, max_bytes=kv.max_bytes, max_msg_size=kv.max_value_size)
    lowered = [] if allow.smaller_limits else limits.lowered_limits(have, want)
    if lowered:
        raise ProvisioningError(
            "would_lower_durability",
            f"bucket {kv.bucket} left unchanged: this would lower {'; '.join(lowered)} (pass --allow-smaller-limits"
            " to lower it)",
        )
    if kv.direct is False:
        want.allow_direct = False
    if want == have:
        return
    try:
        await js.update_stream(want)
    except nats.js.errors.APIError as exc:
        if _not_yet(exc):
            raise
        raise rejected("bucket_update_refused", kv.bucket, exc) from exc
    log.info("bucket settings updated (its other settings are kept)", extra={"bucket": kv.bucket})
