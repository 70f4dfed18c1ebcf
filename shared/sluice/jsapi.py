"""The JetStream API subjects a client uses for a stream, consumer or bucket — built here, for the permission table.

A JetStream client does everything by publishing requests to `$JS.API.…` subjects and reading the answers on its
inbox; deliveries of a pull consumer arrive on the pull request's reply subject, and acknowledgements and flow
control replies are publishes to `$JS.ACK.…` / `$JS.FC.…`. A KV bucket is the stream `KV_<bucket>`, and a write to
key K is a publish to `$KV.<bucket>.K`. These builders name exactly those subjects, so a permission can be given
for one stream, one consumer or one bucket instead of `$JS.API.>`.

    $JS.API.STREAM.INFO.<stream>                  does it exist, with what settings (every service checks this)
    $JS.API.STREAM.MSG.GET.<stream>               a read answered by the stream leader
    $JS.API.DIRECT.GET.<stream>[.<subject>]       a read answered by any replica (allow_direct)
    $JS.API.CONSUMER.INFO.<stream>.<consumer>
    $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer> a pull request
    $JS.API.CONSUMER.CREATE.<stream>[.<name>[.<filter>]]   and DELETE: ephemeral readers
    $JS.ACK.<stream>.<consumer>.>                 ack / nak / in-progress / term
    $JS.FC.<stream>.>                             flow control replies of a push (ordered) consumer
"""

from __future__ import annotations

__all__ = [
    "API_ALL",
    "ack",
    "consumer_create",
    "consumer_delete",
    "consumer_info",
    "consumer_next",
    "direct_get",
    "flow_control",
    "inbox_of",
    "kv_key",
    "kv_keys",
    "kv_stream",
    "msg_get",
    "stream_info",
]

API = "$JS.API"
API_ALL = f"{API}.>"


def stream_info(stream: str) -> str:
    return f"{API}.STREAM.INFO.{stream}"


def msg_get(stream: str) -> str:
    return f"{API}.STREAM.MSG.GET.{stream}"


def direct_get(stream: str) -> tuple[str, str]:
    """By sequence (with the request in the body) and by last-of-subject (the subject appended)."""
    return f"{API}.DIRECT.GET.{stream}", f"{API}.DIRECT.GET.{stream}.>"


def consumer_info(stream: str, consumer: str) -> str:
    return f"{API}.CONSUMER.INFO.{stream}.{consumer}"


def consumer_next(stream: str, consumer: str) -> str:
    return f"{API}.CONSUMER.MSG.NEXT.{stream}.{consumer}"


def consumer_create(stream: str) -> tuple[str, str]:
    """Ephemeral or named consumers on `stream`: the old form and the one with name (and filter) in the subject."""
    return f"{API}.CONSUMER.CREATE.{stream}", f"{API}.CONSUMER.CREATE.{stream}.>"


def consumer_delete(stream: str) -> str:
    return f"{API}.CONSUMER.DELETE.{stream}.*"


def ack(stream: str, consumer: str | None = None) -> str:
    """Acks of one consumer's deliveries (or of any consumer on the stream)."""
    return f"$JS.ACK.{stream}.{consumer or '*'}.>"


def flow_control(stream: str) -> str:
    return f"$JS.FC.{stream}.>"


def kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def kv_keys(bucket: str) -> str:
    """Writes to any key of the bucket."""
    return f"$KV.{bucket}.>"


def kv_key(bucket: str, key: str) -> str:
    return f"$KV.{bucket}.{key}"


def inbox_of(identity: str) -> str:
    """An identity's private inbox prefix: replies to its requests go only to it (nobody else may subscribe there).

    Every reply subject nats-py makes starts with the connection's `inbox_prefix`."""
    return f"_INBOX_{identity.replace('-', '_')}"
