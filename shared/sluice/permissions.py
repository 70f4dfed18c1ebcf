"""Who may publish and subscribe to what on NATS (CONTRACT §8): one table, every subject from the builders.

Each Sluice identity is a list of grants; a grant names what a service does (publishes these event types, pulls
from this durable consumer, writes this bucket) and expands to the exact NATS subjects that takes — the data
subjects and the JetStream API subjects (`sluice.jsapi`). Everything not in an identity's lists is refused by
the server. A stream or bucket added to provisioning is one more grant on the line of each identity that uses it.

    identity       publishes                                        reads
    edge           task.submitted/resumed/canceled/failed, work,   the event log (direct gets, its own feeds),
                   ctl, task records, contexts, leases, limits      task records, contexts, the work stream,
                                                                    the catalog (watch), limits (watch)
    agent-runner   its own event types, tool calls, task records,  its work consumer, the event log (and its own
                   hand-back notes, its catalog entry and its      ordered consumers on it), ctl notices, the
                   agents' known keys, active-task frees            catalog (watch), active tasks
    tool-runner    tool.started, tool.completed, hand-back notes,  its tool consumer, the event log, records,
                   its catalog entry                                the catalog (watch)
    subscriber     nothing (JetStream read requests only)           the event log
    admin          the JetStream API (`sluice provision`)           its inbox

Replies come back on each identity's private inbox (`jsapi.inbox_of`): no identity can read another's answers.
`task.failed` is also the edge's: a submission whose work message could not be published is failed by the edge,
since no runner will ever see it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from sluice import jsapi, subjects
from sluice.events import EVENT_TYPES

__all__ = [
    "AGENT_RUNNER_EVENTS",
    "EDGE_EVENTS",
    "IDENTITIES",
    "TOOL_RUNNER_EVENTS",
    "Grant",
    "Needs",
    "Permissions",
    "needs_of",
    "permissions_of",
]

T = TypeVar("T")
EDGE_EVENTS = ("task.submitted", "task.resumed", "task.canceled", "task.failed")
TOOL_RUNNER_EVENTS = ("tool.started", "tool.completed")
# The runner writes every other event of a task, `tool.completed` included: a call it refuses (approval denied,
# unknown tool) is completed by the runner itself.
AGENT_RUNNER_EVENTS = tuple(t for t in EVENT_TYPES if t not in {"task.submitted", "task.resumed", "tool.started"})


@dataclass(frozen=True)
class Needs:
    """What a service checks at start before it is ready: streams, durable consumers, buckets."""

    streams: tuple[str, ...] = ()
    consumers: tuple[tuple[str, str], ...] = ()  # (stream, durable)
    buckets: tuple[str, ...] = ()

    def __add__(self, other: Needs) -> Needs:
        return Needs(
            streams=_union(self.streams, other.streams),
            consumers=_union(self.consumers, other.consumers),
            buckets=_union(self.buckets, other.buckets),
        )


def _union(a: tuple[T, ...], b: tuple[T, ...]) -> tuple[T, ...]:
    return tuple(dict.fromkeys((*a, *b)))


@dataclass(frozen=True)
class Grant:
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    needs: Needs = field(default_factory=Needs)


# ---------------------------------------------------------------------------------------------- grants


def publishes_events(types: Iterable[str]) -> Grant:
    return Grant(
        publish=tuple(subjects.events_of_type(t) for t in types),
        needs=Needs(streams=(subjects.EVENTS_STREAM,)),
    )


def publishes(stream: str, *subject_patterns: str) -> Grant:
    """Core publishes into a work stream (captured by JetStream) or notices (`stream` empty: not stored)."""
    return Grant(publish=subject_patterns, needs=Needs(streams=(stream,) if stream else ()))


def listens(*subject_patterns: str) -> Grant:
    """Core subscriptions: prompt notices (ctl) and live events."""
    return Grant(subscribe=subject_patterns)


def reads_log() -> Grant:
    """Reads of the event log by sequence and subject: direct gets (any replica) and leader gets."""
    return Grant(
        publish=(*jsapi.direct_get(subjects.EVENTS_STREAM), jsapi.msg_get(subjects.EVENTS_STREAM)),
        needs=Needs(streams=(subjects.EVENTS_STREAM,)),
    )


def reads_work() -> Grant:
    """Leader gets on the work stream (is a work message for this task still queued or held?)."""
    return Grant(publish=(jsapi.msg_get(subjects.WORK_STREAM),), needs=Needs(streams=(subjects.WORK_STREAM,)))


def follows_log() -> Grant:
    """Its own short-lived consumers on the event log (ordered push or pull, no acks that matter)."""
    stream = subjects.EVENTS_STREAM
    return Grant(
        publish=(
            *jsapi.consumer_create(stream),
            jsapi.consumer_delete(stream),
            jsapi.consumer_info(stream, "*"),
            jsapi.consumer_next(stream, "*"),
            jsapi.flow_control(stream),
            jsapi.ack(stream),
        ),
        needs=Needs(streams=(stream,)),
    )


def pulls(stream: str, consumer: str) -> Grant:
    """One shared durable consumer: pull requests, acks, in-progress, nak and term — on it alone."""
    return Grant(
        publish=(
            jsapi.consumer_info(stream, consumer),
            jsapi.consumer_next(stream, consumer),
            jsapi.ack(stream, consumer),
        ),
        needs=Needs(streams=(stream,), consumers=((stream, consumer),)),
    )


def reads_bucket(bucket: str) -> Grant:
    """Gets through the bucket's stream leader (Sluice's buckets have direct gets off)."""
    return Grant(publish=(jsapi.msg_get(jsapi.kv_stream(bucket)),), needs=Needs(buckets=(bucket,)))


def writes_bucket(bucket: str) -> Grant:
    return Grant(
        publish=(jsapi.msg_get(jsapi.kv_stream(bucket)), jsapi.kv_keys(bucket)), needs=Needs(buckets=(bucket,))
    )


def watches_bucket(bucket: str) -> Grant:
    """A KV watch: its own ordered consumers on the bucket's stream, created, followed and deleted (the edge lists
    a tenant's tasks through the watch of its index keys)."""
    stream = jsapi.kv_stream(bucket)
    return Grant(
        publish=(
            *jsapi.consumer_create(stream),
            jsapi.consumer_delete(stream),
            jsapi.consumer_info(stream, "*"),
            jsapi.flow_control(stream),
        ),
        needs=Needs(buckets=(bucket,)),
    )


def advertises(kind: str, *, agents: bool = False) -> Grant:
    """Its own kind's catalog advertisements (CONTRACT §9), and for an agent-runner the agents it registers."""
    keys = [subjects.catalog_runner_keys(kind)] + ([subjects.catalog_known_keys()] if agents else [])
    return Grant(
        publish=tuple(jsapi.kv_key(subjects.CATALOG_BUCKET, key) for key in keys),
        needs=Needs(buckets=(subjects.CATALOG_BUCKET,)),
    )


def frees_active_tasks() -> Grant:
    """Removes tasks it ended from their tenant's unfinished tasks (`sluice.active_tasks`); no other limit's count."""
    bucket = subjects.LIMITS_BUCKET
    return Grant(
        publish=(jsapi.msg_get(jsapi.kv_stream(bucket)), jsapi.kv_key(bucket, subjects.active_tasks_keys())),
        needs=Needs(buckets=(bucket,)),
    )


def administers() -> Grant:
    return Grant(publish=(jsapi.API_ALL,))


# ---------------------------------------------------------------------------------------------- the table

IDENTITIES: dict[str, tuple[Grant, ...]] = {
    "edge": (
        publishes_events(EDGE_EVENTS),
        publishes(subjects.WORK_STREAM, subjects.work_all()),
        publishes("", subjects.control_all()),
        writes_bucket(subjects.TASKS_BUCKET),
        watches_bucket(subjects.TASKS_BUCKET),
        writes_bucket(subjects.CONTEXTS_BUCKET),
        reads_work(),  # cancel and the reconciler: is a work message left for the task?
        writes_bucket(subjects.LEASES_BUCKET),  # the reconciler's lease
        watches_bucket(subjects.TASKS_BUCKET),  # the reconciler's sweep over the records
        writes_bucket(subjects.LIMITS_BUCKET),  # the per-tenant limits' counts
        watches_bucket(subjects.LIMITS_BUCKET),  # other edges' open streams; the reconciler's sweep of active tasks
        reads_bucket(subjects.CATALOG_BUCKET),
        watches_bucket(subjects.CATALOG_BUCKET),
        reads_log(),
        follows_log(),
    ),
    "agent-runner": (
        publishes_events(AGENT_RUNNER_EVENTS),
        publishes(subjects.TOOLS_STREAM, subjects.tool_calls_all()),
        pulls(subjects.WORK_STREAM, subjects.WORK_CONSUMER),
        writes_bucket(subjects.TASKS_BUCKET),
        writes_bucket(subjects.HANDBACKS_BUCKET),
        frees_active_tasks(),  # the tasks it ends
        advertises("agent-runner", agents=True),
        reads_bucket(subjects.CATALOG_BUCKET),
        watches_bucket(subjects.CATALOG_BUCKET),
        reads_log(),
        follows_log(),  # tool results awaited through an ordered consumer
        listens(subjects.control_all()),
    ),
    "tool-runner": (
        publishes_events(TOOL_RUNNER_EVENTS),
        pulls(subjects.TOOLS_STREAM, subjects.TOOL_CONSUMER),
        reads_bucket(subjects.TASKS_BUCKET),
        writes_bucket(subjects.HANDBACKS_BUCKET),
        advertises("tool-runner"),
        reads_bucket(subjects.CATALOG_BUCKET),
        watches_bucket(subjects.CATALOG_BUCKET),
        reads_log(),
    ),
    "subscriber": (reads_log(), follows_log(), listens(subjects.events_all())),
    "admin": (administers(),),
}


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def _grants(identity: str) -> tuple[Grant, ...]:
    try:
        return IDENTITIES[identity]
    except KeyError:
        raise KeyError(f"unknown NATS identity {identity!r}; known: {', '.join(IDENTITIES)}") from None


def needs_of(identity: str) -> Needs:
    total = Needs()
    for grant in _grants(identity):
        total = total + grant.needs
    return total


def permissions_of(identity: str) -> Permissions:
    """The allow-lists of one identity: its grants, a STREAM.INFO for each stream and bucket it checks at start,
    and its private inbox."""
    grants = _grants(identity)
    needs = needs_of(identity)
    checks = [jsapi.stream_info(s) for s in needs.streams]
    checks += [jsapi.stream_info(jsapi.kv_stream(b)) for b in needs.buckets]
    checks += [jsapi.consumer_info(s, c) for s, c in needs.consumers]
    publish = [p for g in grants for p in g.publish] + checks
    subscribe = [s for g in grants for s in g.subscribe] + [jsapi.inbox_of(identity) + ".>"]
    return Permissions(publish=tuple(dict.fromkeys(publish)), subscribe=tuple(dict.fromkeys(subscribe)))
