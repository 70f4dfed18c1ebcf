"""Identifiers: task ids (ULID) and event ids (JetStream sequences), minted and validated.

Every id that arrives from outside passes through `parse_task_id` / `parse_event_id` before it can reach a
NATS subject, so `*`, `>`, `.` and whitespace can never widen a subscription.
"""

from __future__ import annotations

import os
import re
import time

from sluice.errors import InvalidInput

__all__ = [
    "CONTEXT_ID_PATTERN",
    "DEFAULT_TENANT",
    "TASK_ID_PATTERN",
    "TENANT_PATTERN",
    "is_task_id",
    "new_task_id",
    "parse_context_id",
    "parse_event_id",
    "parse_task_id",
    "parse_tenant",
]

TASK_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
CONTEXT_ID_PATTERN = TASK_ID_PATTERN
# A tenant name becomes a KV key token (the per-tenant index), so it obeys the same rules as any id.
TENANT_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_TENANT_RE = re.compile(TENANT_PATTERN)
# Who owns what nobody authenticated: every task of an edge with `SLUICE_AUTH=none`, and records older than tenants.
DEFAULT_TENANT = "default"
_TASK_ID_RE = re.compile(TASK_ID_PATTERN)
_EVENT_ID_RE = re.compile(r"^[0-9]{1,19}$")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# JetStream sequences are uint64; anything larger cannot name an event.
MAX_EVENT_ID = 2**64 - 1


def new_task_id() -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, Crockford base32, 26 chars, sortable by time."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_task_id(value: object) -> bool:
    # fullmatch, not match: `$` would accept a trailing newline.
    return isinstance(value, str) and _TASK_ID_RE.fullmatch(value) is not None


def parse_task_id(value: object) -> str:
    if not is_task_id(value):
        raise InvalidInput("invalid_task_id", "task id must match ^[A-Za-z0-9_-]{8,64}$")
    assert isinstance(value, str)
    return value


def parse_context_id(value: object, *, field: str = "context id") -> str:
    """A context id (CONTRACT §1: the pattern of a task id) names a conversation and becomes part of a KV key."""
    if not is_task_id(value):
        raise InvalidInput("invalid_context_id", f"{field} must match {CONTEXT_ID_PATTERN}")
    assert isinstance(value, str)
    return value


def parse_event_id(value: object, *, field: str = "event id") -> int:
    """An event id is a decimal JetStream sequence: 0 means 'before the first event'."""
    if isinstance(value, str) and _EVENT_ID_RE.fullmatch(value):
        seq = int(value)
        if seq <= MAX_EVENT_ID:
            return seq
    raise InvalidInput("invalid_event_id", f"{field} must be a non-negative decimal integer below 2^64")


def parse_tenant(value: object) -> str:
    if not (isinstance(value, str) and _TENANT_RE.fullmatch(value)):
        raise InvalidInput("invalid_tenant", "a tenant name must match ^[A-Za-z0-9_-]{1,64}$")
    return value
