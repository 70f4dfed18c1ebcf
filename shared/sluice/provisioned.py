"""What a service does at start instead of provisioning: check that what it needs exists, wait until it does.

Only `sluice provision` (the `admin` identity) creates or changes streams, consumers and buckets. A service asks
JetStream about the streams, durable consumers and buckets its identity uses (`permissions.needs_of`) and stays
not ready — saying once what is missing and what to run — until each exists with the settings its code relies on
(the subjects it publishes to, the retention a work queue needs, direct gets on the event log, a consumer's
filter). Settings that are the operator's choice (replicas, retention, duplicate window) are never changed from
here: where they differ from this service's configuration, it says so once and goes on with what the cluster has.
A service started with `SLUICE_REPLICAS=1` against 3-replica streams therefore leaves them at 3.
"""

from __future__ import annotations

import logging

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from sluice import jsapi
from sluice.config import CommonConfig
from sluice.errors import SluiceError
from sluice.permissions import Needs
from sluice.provision import NOT_YET, consumer_configs, stream_specs

__all__ = ["NotProvisioned", "wait_provisioned"]

log = logging.getLogger(__name__)
PROVISION_HINT = "run `sluice provision` (the admin identity) to create or fix it"


class NotProvisioned(SluiceError):
    code = "not_provisioned"


def _differences(have: StreamConfig, want: StreamConfig) -> tuple[list[str], list[str]]:
    """(what this service cannot work without, what is only the operator's choice) between two stream configs."""
    blocking: list[str] = []
    if not set(want.subjects or ()).issubset(set(have.subjects or ())):
        blocking.append(f"subjects are {have.subjects}, need {want.subjects}")
    if have.retention != want.retention:
        blocking.append(f"retention is {have.retention}, need {want.retention}")
    if want.allow_direct and not have.allow_direct:
        blocking.append("direct gets are off, need them on")
    advisory: list[str] = []
    if have.num_replicas != want.num_replicas:
        advisory.append(f"{have.num_replicas} replicas (this service's SLUICE_REPLICAS={want.num_replicas})")
    if want.max_age and have.max_age != want.max_age:
        advisory.append(f"max age {have.max_age:.0f}s (this service's SLUICE_EVENTS_MAX_AGE is {want.max_age:.0f}s)")
    return blocking, advisory


async def _missing(js: JetStreamContext, config: CommonConfig, needs: Needs, said: set[str]) -> list[str]:
    specs = {spec.config.name: spec.config for spec in stream_specs(config)}
    consumers = {(stream, cfg.durable_name): cfg for stream, cfg in consumer_configs(config)}
    missing: list[str] = []
    for name in needs.streams:
        try:
            have = (await js.stream_info(name)).config
        except nats.js.errors.NotFoundError:
            missing.append(f"stream {name} does not exist")
            continue
        want = specs.get(name)
        if want is None:
            continue
        blocking, advisory = _differences(have, want)
        missing += [f"stream {name}: {d}" for d in blocking]
        note = f"stream {name} has {', '.join(advisory)}: left as it is, only `sluice provision` changes streams"
        if advisory and note not in said:
            said.add(note)
            log.warning(note)
    for stream, durable in needs.consumers:
        try:
            info = await js.consumer_info(stream, durable)
        except nats.js.errors.NotFoundError:
            missing.append(f"consumer {stream}/{durable} does not exist")
            continue
        wanted = consumers.get((stream, durable))
        if wanted is not None and info.config.filter_subject != wanted.filter_subject:
            missing.append(
                f"consumer {stream}/{durable} filters {info.config.filter_subject}, need {wanted.filter_subject}"
            )
    for bucket in needs.buckets:
        try:
            await js.stream_info(jsapi.kv_stream(bucket))
        except nats.js.errors.NotFoundError:
            missing.append(f"bucket {bucket} does not exist")
    return missing


def _worth_waiting(exc: BaseException) -> bool:
    return isinstance(exc, (NotProvisioned, *NOT_YET))


async def wait_provisioned(js: JetStreamContext, config: CommonConfig, needs: Needs, *, service: str) -> None:
    """Returns once everything in `needs` is there and usable; until then, not ready (the caller races this against
    its stop signal). What is missing is logged when it changes, not on every look."""
    said: set[str] = set()
    last: list[str] = []

    def report(missing: list[str]) -> None:
        nonlocal last
        if missing != last and missing != ["JetStream"]:
            log.warning("%s not ready: %s; %s", service, "; ".join(missing), PROVISION_HINT)
        last = missing

    def unanswered(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, NOT_YET) and last != ["JetStream"]:
            report(["JetStream"])
            log.info("%s: JetStream not ready (%s); waiting", service, type(error).__name__)

    async for attempt in AsyncRetrying(
        retry=retry_if_exception(_worth_waiting),
        wait=wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.2),
        before_sleep=unanswered,
        reraise=True,
    ):
        with attempt:
            missing = await _missing(js, config, needs, said)
            if missing:
                report(missing)
                raise NotProvisioned("not_provisioned", "; ".join(missing))
    if last:
        log.info("%s: everything it needs is provisioned now", service)
