"""Fault injection for tests: markers that make the demo model fail on purpose.

A marker is written ``[fault:SPEC]`` anywhere in the **last user message**, or given in the
``X-Demo-Fault`` request header (the same ``[fault:SPEC]`` syntax; a bare ``SPEC`` or a comma-separated
list of specs is accepted there too). Markers are case-insensitive and are removed from the text before the
model reads it, so they never show up in a reply. Several markers combine; of two of the same kind the first
wins. An unknown marker is a 400 error, so a typo in a test fails loudly.

Markers:

``[fault:429]``, ``[fault:429-always]``
    every such request gets HTTP 429 with ``Retry-After: 1`` and an OpenAI-style error body.
``[fault:429-once]``
    the first such request of a conversation gets 429; the next identical request succeeds.
``[fault:500]``, ``[fault:500-always]``, ``[fault:500-once]``
    the same with HTTP 500 (no ``Retry-After``).
``[fault:NNN]``, ``[fault:NNN-once]``, ``[fault:NNN-always]``
    the same for any status ``NNN`` from 400 to 599 (503 also carries ``Retry-After``).
``[fault:cut:N]``
    the stream stops after ``N`` chunks: the connection is dropped, with no ``finish_reason`` and no
    ``[DONE]`` (the cut comes before the finish chunk even when ``N`` is larger). A non-streaming response
    is dropped half-way through its body. Either way the client sees a broken connection.
``[fault:cut-once:N]``
    as ``cut:N``, for the first such request of a conversation only.
``[fault:stall:S]``
    after the first chunk the stream pauses ``S`` seconds (fractions allowed, at most 300), then goes on;
    a non-streaming response comes ``S`` seconds later.
``[fault:slow:MS]``
    ``MS`` milliseconds between chunks (at most 60000); overrides ``X-Demo-Delay-Ms`` and the configured rate.
``[fault:bad-args]``
    tool calls carry malformed JSON arguments (the closing brace is missing); no effect on text replies.
``[fault:long:N]``
    a text reply is lengthened to ``N`` characters (at most 4,000,000) with filler words of about a kilobyte
    each, for answers larger than a limit; no effect on tool calls.

"A conversation" is identified by the ``X-Demo-Fault-Key`` header when present, otherwise by a hash of the
conversation's first user message; the once-state lives in memory (:class:`OnceLedger`) for the life of the
server, so the SDK's own retry of the same request succeeds.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass, field, replace

from sluice.errors import InvalidInput

__all__ = [
    "CutFault",
    "FaultPlan",
    "FaultSyntaxError",
    "OnceLedger",
    "StatusFault",
    "corrupt_arguments",
    "once_key",
    "parse_faults",
    "strip_markers",
]

MAX_STALL_S = 300.0
MAX_SLOW_MS = 60_000.0
MAX_LONG_CHARS = 4_000_000.0

_MARKER = re.compile(r"\[fault:\s*([^\]]*?)\s*\]", re.IGNORECASE)
_STATUS = re.compile(r"(\d{3})(?:-(once|always))?")
_CUT = re.compile(r"cut(-once)?:(\d+)")
_STALL = re.compile(r"stall:(\d+(?:\.\d+)?)")
_SLOW = re.compile(r"slow:(\d+(?:\.\d+)?)")
_LONG = re.compile(r"long:(\d+)")
_KNOWN = "NNN, NNN-once, NNN-always, cut:N, cut-once:N, stall:S, slow:MS, bad-args, long:N"


class FaultSyntaxError(InvalidInput):
    """A fault marker that names no known fault, or exceeds a limit."""

    code = "invalid_fault_marker"


@dataclass(frozen=True, slots=True)
class StatusFault:
    """Answer with an HTTP error instead of a completion."""

    status: int
    once: bool
    marker: str


@dataclass(frozen=True, slots=True)
class CutFault:
    """Drop the connection after ``after_chunks`` chunks."""

    after_chunks: int
    once: bool
    marker: str


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The faults a request asked for; ``markers`` are their canonical specs, in order."""

    status: StatusFault | None = None
    cut: CutFault | None = None
    stall_s: float = 0.0
    slow_ms: float | None = None
    bad_args: bool = False
    long_chars: int | None = None
    markers: tuple[str, ...] = field(default=())


def strip_markers(text: str) -> str:
    """``text`` without its fault markers (and without the double spaces they leave)."""
    return re.sub(r"[ \t]{2,}", " ", _MARKER.sub("", text)).strip()


def parse_faults(text: str, header: str | None = None) -> FaultPlan:
    """The fault plan of a request: markers in ``text`` first, then those in the ``X-Demo-Fault`` header."""
    specs = [m.group(1) for m in _MARKER.finditer(text)]
    if header:
        if _MARKER.search(header):
            specs += [m.group(1) for m in _MARKER.finditer(header)]
        else:
            specs += [s.strip().removeprefix("fault:") for s in header.split(",") if s.strip()]
    plan = FaultPlan()
    for spec in specs:
        plan = _add(plan, spec.strip().lower())
    return plan


def _add(plan: FaultPlan, spec: str) -> FaultPlan:
    plan = replace(plan, markers=(*plan.markers, spec))
    if m := _STATUS.fullmatch(spec):
        status = int(m.group(1))
        if not 400 <= status <= 599:
            raise FaultSyntaxError(message=f"fault status must be 400-599, got [fault:{spec}]")
        fault = StatusFault(status=status, once=m.group(2) == "once", marker=spec)
        return plan if plan.status else replace(plan, status=fault)
    if m := _CUT.fullmatch(spec):
        cut = CutFault(after_chunks=int(m.group(2)), once=m.group(1) is not None, marker=spec)
        return plan if plan.cut else replace(plan, cut=cut)
    if m := _STALL.fullmatch(spec):
        stall_s = _bounded(float(m.group(1)), MAX_STALL_S, spec)
        return plan if plan.stall_s else replace(plan, stall_s=stall_s)
    if m := _SLOW.fullmatch(spec):
        slow_ms = _bounded(float(m.group(1)), MAX_SLOW_MS, spec)
        return plan if plan.slow_ms is not None else replace(plan, slow_ms=slow_ms)
    if spec == "bad-args":
        return replace(plan, bad_args=True)
    if m := _LONG.fullmatch(spec):
        long_chars = int(_bounded(float(m.group(1)), MAX_LONG_CHARS, spec))
        return plan if plan.long_chars is not None else replace(plan, long_chars=long_chars)
    raise FaultSyntaxError(message=f"unknown fault marker [fault:{spec}]; known: {_KNOWN}")


def _bounded(value: float, limit: float, spec: str) -> float:
    if value > limit:
        raise FaultSyntaxError(message=f"[fault:{spec}] exceeds the limit of {limit:g}")
    return value


def corrupt_arguments(arguments: str) -> str:
    """Tool-call arguments made invalid JSON by dropping the closing brace (``{"a": 1`` from ``{"a": 1}``)."""
    return arguments[:-1] if arguments.endswith("}") else arguments + "{"


def once_key(first_user_text: str, explicit: str | None = None) -> str:
    """The conversation identity that ``-once`` faults are remembered under."""
    if explicit:
        return f"key:{explicit}"
    return "sha256:" + hashlib.sha256(first_user_text.encode()).hexdigest()


class OnceLedger:
    """Remembers which ``-once`` faults have fired, per conversation; bounded, oldest forgotten first."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._fired: OrderedDict[tuple[str, str], None] = OrderedDict()

    def first_time(self, key: str, marker: str) -> bool:
        """True (and remembered) the first time ``marker`` is seen for ``key``; False afterwards."""
        entry = (key, marker)
        if entry in self._fired:
            return False
        self._fired[entry] = None
        while len(self._fired) > self._capacity:
            self._fired.popitem(last=False)
        return True

    def clear(self) -> None:
        self._fired.clear()
