"""The NATS permission table (sluice.permissions), checked as data: least privilege holds by construction, and
every stream and bucket that provisioning declares is used by some identity's grants."""

from __future__ import annotations

import pytest

from sluice import jsapi, subjects
from sluice.config import CommonConfig
from sluice.permissions import IDENTITIES, needs_of, permissions_of
from sluice.provision import bucket_configs, consumer_configs, stream_specs

ADMIN_ONLY = ("$JS.API.>", "$JS.API.STREAM.CREATE", "$JS.API.STREAM.UPDATE", "$JS.API.STREAM.DELETE", ">")


def test_the_tool_runner_publishes_only_its_two_event_types_and_its_consumer_requests() -> None:
    publish = permissions_of("tool-runner").publish
    events = [p for p in publish if p.startswith("sluice.")]
    assert events == [subjects.events_of_type("tool.started"), subjects.events_of_type("tool.completed")]
    assert not any(p.startswith(f"$KV.{subjects.TASKS_BUCKET}.") for p in publish), "it never writes a task record"


def test_only_the_edge_submits_resumes_and_sends_control_notices_and_work() -> None:
    for identity in IDENTITIES:
        publish = permissions_of(identity).publish
        edge_only = {
            subjects.events_of_type("task.submitted"),
            subjects.events_of_type("task.resumed"),
            subjects.control_all(),
            subjects.work_all(),
        }
        assert bool(edge_only & set(publish)) == (identity == "edge"), identity


@pytest.mark.parametrize("identity", [i for i in IDENTITIES if i != "admin"])
def test_no_service_identity_may_administer_streams(identity: str) -> None:
    for subject in permissions_of(identity).publish:
        assert not subject.startswith(ADMIN_ONLY), f"{identity} may publish {subject}"
        if subject.startswith("$JS.API.STREAM."):
            assert ".INFO." in subject or ".MSG.GET." in subject, f"{identity} may publish {subject}"


@pytest.mark.parametrize("identity", list(IDENTITIES))
def test_replies_come_only_to_the_identitys_own_inbox(identity: str) -> None:
    subscribe = permissions_of(identity).subscribe
    inboxes = [s for s in subscribe if s.startswith("_INBOX")]
    assert inboxes == [jsapi.inbox_of(identity) + ".>"]
    assert ">" not in subscribe


def test_every_provisioned_stream_consumer_and_bucket_is_some_identitys_need() -> None:
    """A stream or bucket added to provisioning without a grant would be usable by nobody but the admin."""
    config = CommonConfig()
    needed_streams = {s for i in IDENTITIES for s in needs_of(i).streams}
    needed_consumers = {c for i in IDENTITIES for c in needs_of(i).consumers}
    needed_buckets = {b for i in IDENTITIES for b in needs_of(i).buckets}
    assert {spec.config.name for spec in stream_specs(config)} <= needed_streams
    assert {(stream, cfg.durable_name) for stream, cfg in consumer_configs(config)} <= needed_consumers
    assert {kv.bucket for kv in bucket_configs(config)} <= needed_buckets


def test_each_identity_may_ask_about_everything_it_checks_at_start() -> None:
    for identity in IDENTITIES:
        publish = set(permissions_of(identity).publish)
        needs = needs_of(identity)
        assert {jsapi.stream_info(s) for s in needs.streams} <= publish
        assert {jsapi.stream_info(jsapi.kv_stream(b)) for b in needs.buckets} <= publish
        assert {jsapi.consumer_info(s, c) for s, c in needs.consumers} <= publish
