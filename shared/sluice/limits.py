"""Byte limits of every Sluice stream and bucket (CONTRACT §8), and what a write that meets one becomes.

| stream / bucket | bytes at most (setting, default) | one message at most |
| --- | --- | --- |
| `SLUICE_EVENTS` | `SLUICE_EVENTS_MAX_BYTES`, 4 GiB | 1 MiB |
| `SLUICE_WORK`, `SLUICE_TOOLS` | `SLUICE_QUEUE_MAX_BYTES`, 256 MiB each | 64 KiB, 1 MiB |
| `sluice-tasks` | `SLUICE_TASKS_MAX_BYTES`, 1 GiB | 1 MiB; a record keeps at most 64 KiB of output |
| `sluice-contexts` | `SLUICE_CONTEXTS_MAX_BYTES`, 256 MiB | 1 MiB |
| `sluice-catalog`, `sluice-handbacks` | 64 MiB each | 1 MiB, 64 KiB |
| `sluice-limits` (per-tenant counts) | 256 MiB | 1 MiB |
| `sluice-leases` | 1 MiB | 4 KiB |

Every one of them discards *new*: when full, JetStream refuses the write ("maximum bytes exceeded") and nothing
stored is dropped early. For the event log that is the only safe choice. Discarding old would silently cut the
start of logs that running tasks are rebuilt from and clients replay; refusing new stops new work loudly
(`StorageFull`, 503 at the edge) while the log stays whole, and events still leave at their max age, which makes
room again. The work queues must never drop a task or a tool call silently either.

JetStream reserves each stream's `max_bytes` against the server's storage (`max_file_store`, by default 75 % of
the free disk), so the sum of these limits must fit there: provisioning says so when it does not.

Provisioning raises a limit in place and never lowers one by itself (it refuses, naming `--allow-smaller-limits`).
"""

from __future__ import annotations

from nats.errors import MaxPayloadError
from nats.js.api import StreamConfig
from nats.js.errors import APIError

from sluice import subjects
from sluice.errors import InvalidInput, StorageFull

__all__ = [
    "CATALOG_MAX_BYTES",
    "EVENT_MAX_BYTES",
    "HANDBACKS_MAX_BYTES",
    "HANDBACK_MAX_BYTES",
    "INSUFFICIENT_STORAGE",
    "LEASES_MAX_BYTES",
    "LEASE_MAX_BYTES",
    "RECORD_MAX_BYTES",
    "RECORD_OUTPUT_MAX_BYTES",
    "STORE_FULL",
    "TENANT_LIMITS_MAX_BYTES",
    "TOOL_CALL_MAX_BYTES",
    "TOO_LARGE",
    "WORK_MESSAGE_MAX_BYTES",
    "lowered_limits",
    "refused_for_size",
    "store_named",
    "store_of_subject",
]

KiB, MiB = 1024, 1024 * 1024

# One message. An event is also what one client's buffer (SLUICE_CLIENT_BUFFER_BYTES, 1 MiB) must hold.
EVENT_MAX_BYTES = MiB
WORK_MESSAGE_MAX_BYTES = 64 * KiB  # a task id and a reason, plus trace headers
TOOL_CALL_MAX_BYTES = MiB  # the model's arguments
RECORD_MAX_BYTES = MiB
# What a task record keeps of its output (UTF-8 bytes): the rest is cut, `output_truncated` says so, and the whole
# output stays in the log (`task.completed`). With the input (≤ the edge's body limit) a record stays well under
# RECORD_MAX_BYTES, so no answer, however long, can make its record's writes fail.
RECORD_OUTPUT_MAX_BYTES = 64 * KiB
HANDBACK_MAX_BYTES = 64 * KiB
LEASE_MAX_BYTES = 4 * KiB

# The small buckets: what they hold is bounded by the number of runners and messages, not by the tasks' sizes.
CATALOG_MAX_BYTES = 64 * MiB
HANDBACKS_MAX_BYTES = 64 * MiB
TENANT_LIMITS_MAX_BYTES = 256 * MiB
LEASES_MAX_BYTES = MiB

# JetStream's error codes for a write refused for its size, and for a limit the server cannot reserve.
STORE_FULL = 10077  # JSStreamStoreFailedF: "maximum bytes exceeded"
TOO_LARGE = 10054  # JSStreamMessageExceedsMaximumErr
INSUFFICIENT_STORAGE = 10047  # JSStorageResourcesExceededErr


# The setting that sizes each configurable stream or bucket, for the messages an operator reads.
_SETTING = {
    subjects.EVENTS_STREAM: "SLUICE_EVENTS_MAX_BYTES",
    subjects.WORK_STREAM: "SLUICE_QUEUE_MAX_BYTES",
    subjects.TOOLS_STREAM: "SLUICE_QUEUE_MAX_BYTES",
    subjects.TASKS_BUCKET: "SLUICE_TASKS_MAX_BYTES",
    subjects.CONTEXTS_BUCKET: "SLUICE_CONTEXTS_MAX_BYTES",
}
_STREAM_OF_PREFIX = (
    (subjects.events_all().removesuffix(">"), subjects.EVENTS_STREAM),
    (subjects.work_stream_subjects().removesuffix(">"), subjects.WORK_STREAM),
    (subjects.tool_stream_subjects().removesuffix(">"), subjects.TOOLS_STREAM),
)


def store_named(name: str) -> str:
    """`stream SLUICE_EVENTS (SLUICE_EVENTS_MAX_BYTES)`, `bucket sluice-tasks (SLUICE_TASKS_MAX_BYTES)`."""
    kind = "stream" if name.isupper() else "bucket"
    setting = _SETTING.get(name)
    return f"{kind} {name}" + (f" ({setting})" if setting else "")


def store_of_subject(subject: str) -> str:
    """The stream or bucket a JetStream publish to `subject` lands in, as `store_named` says it."""
    if subject.startswith("$KV."):
        return store_named(subject.split(".", 2)[1])
    for prefix, stream in _STREAM_OF_PREFIX:
        if subject.startswith(prefix):
            return store_named(stream)
    return "its stream"


def _bound(value: int | None) -> int:
    """A limit as a number of bytes; 0 for none (JetStream says -1, or leaves it out)."""
    return value if value is not None and value > 0 else 0


def lowered_limits(have: StreamConfig, want: StreamConfig) -> list[str]:
    """Each byte limit `want` would lower on an existing stream (none → some counts as lowering)."""
    lowered: list[str] = []
    for field, label in (("max_bytes", "max bytes"), ("max_msg_size", "max message size")):
        had, wanted = _bound(getattr(have, field)), _bound(getattr(want, field))
        if wanted and (not had or wanted < had):
            lowered.append(f"{label} {had or 'unlimited'} -> {wanted}")
    return lowered


def refused_for_size(exc: BaseException, what: str, store: str) -> StorageFull | InvalidInput | None:
    """A JetStream answer that refused a write for its size, as the error to raise at once (retrying cannot help);
    None for any other answer. `what` is the write, `store` the stream or bucket (`store_named`)."""
    if isinstance(exc, MaxPayloadError):  # the client's own check, before the server's: over its max_payload
        return InvalidInput("message_too_large", f"{what}: larger than the NATS server accepts (max_payload)")
    if not isinstance(exc, APIError):
        return None
    code = getattr(exc, "err_code", None)  # some subclasses (KeyNotFoundError) never set it
    if code == STORE_FULL:
        return StorageFull(
            "storage_full",
            f"{what}: refused, {store} is full ({exc.description}); raise its limit and run `sluice provision`, "
            "or wait for old data to age out",
        )
    if code == TOO_LARGE:
        return InvalidInput("message_too_large", f"{what}: refused by {store}: {exc.description}")
    return None
