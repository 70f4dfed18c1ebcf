"""The demo model behind the routes: turns a decoded request into a plan of what to send, or an error.

It owns the server's state (the once-fault ledger and the request log) and knows nothing of HTTP
frameworks: :mod:`demo_llm.app` parses requests into calls here and turns the plans into responses.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import TypeAlias

from demo_llm.chunks import Answer, IssuedCall, Usage, encode_chunks, encode_completion, encode_model_list
from demo_llm.errors import ApiError
from demo_llm.faults import (
    FaultPlan,
    FaultSyntaxError,
    OnceLedger,
    StatusFault,
    corrupt_arguments,
    once_key,
    parse_faults,
)
from demo_llm.request_log import RequestLog
from demo_llm.script import Reply, decide_reply, first_user_text, last_user_text, lengthened, prompt_tokens
from demo_llm.settings import DemoLLMSettings
from demo_llm.wire import ChatRequest

__all__ = ["CompletionPlan", "DemoHeaders", "DemoModel", "Pacing", "Plan", "StreamPlan"]

logger = logging.getLogger(__name__)

_RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class DemoHeaders:
    """The demo-only request headers: ``X-Demo-Fault``, ``X-Demo-Fault-Key``, ``X-Demo-Delay-Ms``."""

    fault: str | None = None
    fault_key: str | None = None
    delay_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Pacing:
    """Seconds between chunks, and the one-off pause after the first chunk."""

    chunk_delay_s: float = 0.0
    stall_s: float = 0.0


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """Stream ``chunks`` (JSON documents) paced by ``pacing``; with ``cut_after``, drop the connection
    after that many chunks instead of finishing."""

    chunks: list[bytes]
    pacing: Pacing
    cut_after: int | None = None


@dataclass(frozen=True, slots=True)
class CompletionPlan:
    """Send ``body`` after ``delay_s``; with ``cut``, drop the connection half-way through it."""

    body: bytes
    delay_s: float = 0.0
    cut: bool = False


Plan: TypeAlias = StreamPlan | CompletionPlan


class DemoModel:
    """The scripted model with its state: one per server."""

    def __init__(self, settings: DemoLLMSettings) -> None:
        self.settings = settings
        self.requests = RequestLog(settings.request_log_size)
        self._once = OnceLedger()

    def complete(self, request: ChatRequest, headers: DemoHeaders, *, path: str) -> Plan:
        """The plan answering ``request``.

        Raises :class:`FaultSyntaxError` for an unknown marker and :class:`ApiError` for an injected error.
        """
        user_text = last_user_text(request.messages)
        offered = {t.function.name: t.function.parameters or {} for t in request.tools or () if t.function}

        def record(status: int, fault: str | None, faults: list[str], reply: str | None = None) -> None:
            self.requests.record(
                "POST", path, status, model=request.model, stream=request.stream, messages=len(request.messages),
                last_user=user_text, fault=fault, faults=faults, reply=reply, tools=offered,
            )  # fmt: skip

        try:
            faults = parse_faults(user_text, headers.fault)
        except FaultSyntaxError:
            record(400, None, [])
            raise
        key = once_key(first_user_text(request.messages), headers.fault_key)
        markers = list(faults.markers)
        if faults.status and self._fires(key, faults.status.marker, once=faults.status.once):
            record(faults.status.status, faults.status.marker, markers)
            logger.info("injected fault %s: HTTP %d", faults.status.marker, faults.status.status)
            raise self._injected_error(faults.status)

        reply = decide_reply(request.messages, request.tool_names, parallel=request.parallel_tool_calls is not False)
        if faults.long_chars is not None:
            reply = lengthened(reply, faults.long_chars)
        answer = self._answer(request, reply, bad_args=faults.bad_args)
        cut = faults.cut if faults.cut and self._fires(key, faults.cut.marker, once=faults.cut.once) else None
        fired = _fired(faults, cut_marker=cut.marker if cut else None, has_calls=bool(reply.tool_calls))
        summary = "tool_calls:" + ",".join(c.name for c in reply.tool_calls) if reply.tool_calls else "text"
        record(200, ",".join(fired) or None, markers, summary)
        logger.info("model=%s stream=%s reply=%s faults=%s", request.model, request.stream, summary, fired)

        pacing = Pacing(chunk_delay_s=self._chunk_delay_s(faults, headers), stall_s=faults.stall_s)
        stream = encode_chunks(answer, include_usage=request.include_usage)
        if request.stream:
            cut_after = min(cut.after_chunks, stream.finish_index) if cut else None
            return StreamPlan(chunks=stream.chunks, pacing=pacing, cut_after=cut_after)
        delay_s = pacing.chunk_delay_s * len(stream.chunks) + pacing.stall_s
        return CompletionPlan(body=encode_completion(answer), delay_s=delay_s, cut=cut is not None)

    def record_rejected(self, path: str, reason: str) -> None:
        """Note a request that could not be decoded (it is answered with a 400)."""
        self.requests.record("POST", path, 400)
        logger.info("rejected request to %s: %s", path, reason)

    def list_models(self, path: str) -> bytes:
        self.requests.record("GET", path, 200)
        return encode_model_list([self.settings.model_name])

    def _fires(self, key: str, marker: str, *, once: bool) -> bool:
        return not once or self._once.first_time(key, marker)

    def _chunk_delay_s(self, faults: FaultPlan, headers: DemoHeaders) -> float:
        if faults.slow_ms is not None:
            return faults.slow_ms / 1000
        if headers.delay_ms is not None:
            return headers.delay_ms / 1000
        return self.settings.chunk_delay_s

    def _injected_error(self, fault: StatusFault) -> ApiError:
        headers = {"Retry-After": str(self.settings.retry_after_s)} if fault.status in _RETRY_AFTER_STATUSES else {}
        if fault.status == 429:
            message = f"Rate limit reached for the Sluice demo model (injected by [fault:{fault.marker}])."
        else:
            message = f"The Sluice demo model failed on purpose (injected by [fault:{fault.marker}])."
        return ApiError(fault.status, message, headers=headers)

    @staticmethod
    def _answer(request: ChatRequest, reply: Reply, *, bad_args: bool) -> Answer:
        calls = tuple(
            IssuedCall(
                id=f"call_{uuid.uuid4().hex[:24]}",
                name=call.name,
                arguments=corrupt_arguments(call.arguments) if bad_args else call.arguments,
            )
            for call in reply.tool_calls
        )
        prompt = prompt_tokens(request.messages)
        completion = reply.completion_tokens
        return Answer(
            completion_id=f"chatcmpl-{uuid.uuid4().hex[:24]}",
            model=request.model,
            created=int(time.time()),
            text=reply.text,
            tool_calls=calls,
            usage=Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
        )


def _fired(faults: FaultPlan, *, cut_marker: str | None, has_calls: bool) -> list[str]:
    """The markers that changed this (successful) response."""
    fired = [cut_marker] if cut_marker else []
    for prefix in ("stall:", "slow:"):
        fired += [m for m in faults.markers if m.startswith(prefix)][:1]
    if faults.bad_args and has_calls:
        fired.append("bad-args")
    if faults.long_chars is not None and not has_calls:
        fired += [m for m in faults.markers if m.startswith("long:")][:1]
    return fired
