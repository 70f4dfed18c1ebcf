"""The NATS connection and JetStream publishing, with production settings and retries that are safe.

A publish that times out (or meets no responders during a leader election or reconnect) is retried with the same
`Nats-Msg-Id`, so JetStream drops the copy if the first attempt was in fact stored. While the first attempt is still
being replicated (a leader that has lost its quorum), JetStream answers the retry "duplicate message id is in
process": that is retried too, until the first attempt is stored or dropped. NATS exceptions are translated
to `Unavailable` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from sluice.config import CommonConfig
from sluice.errors import Unavailable
from sluice.propagation import inject
from sluice.tracing import STREAM_SEQUENCE, send_span, span_for_publish, template_of

__all__ = ["Bus", "connect"]

log = logging.getLogger(__name__)

RETRYABLE = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.errors.ConnectionReconnectingError,
    asyncio.TimeoutError,
)
MSG_ID = "Nats-Msg-Id"
# JSStreamDuplicateMessageConflict: an earlier attempt with this msg id is still being proposed.
DUPLICATE_IN_PROCESS = 10158


def _worth_retrying(exc: BaseException) -> bool:
    if isinstance(exc, nats.js.errors.APIError) and exc.err_code == DUPLICATE_IN_PROCESS:
        return True
    return isinstance(exc, RETRYABLE)


@dataclass
class ConnectionState:
    """Readiness as the callbacks see it; `/readyz` and runner health read it."""

    connected: bool = False
    closing: bool = False
    reconnects: int = 0
    listeners: list[Callable[[str], None]] = field(default_factory=list)

    def notify(self, what: str) -> None:
        for listener in self.listeners:
            listener(what)


class Bus:
    """One NATS connection and its JetStream context, shared by everything in a process."""

    def __init__(self, nc: NATS, state: ConnectionState, *, publish_deadline_s: float = 30.0) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=5.0)
        self.state = state
        self.publish_deadline_s = publish_deadline_s

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str,
        headers: dict[str, str] | None = None,
        expected_stream: str | None = None,
        span: bool | None = None,
    ) -> int:
        """Publishes to JetStream until stored; returns the stream sequence (the original one for a duplicate).

        `span`: open a messaging `send` span around the publish (its context is what the headers carry). By default
        (None) every publish made inside a trace gets one, except `llm.delta` events, which would cost a span per
        token; True/False force it.
        """
        if not (span_for_publish(subject) if span is None else span):
            return await self._publish(subject, payload, msg_id, headers, expected_stream)
        template, task_id = template_of(subject)
        with send_span(template, task_id, msg_id=msg_id, payload_size=len(payload)) as send:
            seq = await self._publish(subject, payload, msg_id, headers, expected_stream)
            send.set_attribute(STREAM_SEQUENCE, seq)
            return seq

    async def _publish(
        self, subject: str, payload: bytes, msg_id: str, headers: dict[str, str] | None, expected_stream: str | None
    ) -> int:
        hdrs = inject(dict(headers or {}))
        hdrs[MSG_ID] = msg_id
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_worth_retrying),
                wait=wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.05),
                stop=stop_after_delay(self.publish_deadline_s),
                reraise=True,
            ):
                with attempt:
                    ack = await self.js.publish(
                        subject, payload, timeout=2.0, headers=dict(hdrs), stream=expected_stream
                    )
        except RETRYABLE as exc:
            raise Unavailable("nats_unavailable", f"publish to {subject} failed: {type(exc).__name__}") from exc
        except nats.js.errors.APIError as exc:
            raise Unavailable("nats_error", f"publish to {subject} refused: {exc.description}") from exc
        return int(ack.seq)

    async def notify(self, subject: str, payload: bytes) -> None:
        """A core NATS publish (not stored), with trace context: prompt notices such as cancel."""
        if not span_for_publish(subject):
            await self.nc.publish(subject, payload, headers=inject({}))
            return
        template, task_id = template_of(subject)
        with send_span(template, task_id, payload_size=len(payload)):
            await self.nc.publish(subject, payload, headers=inject({}))

    async def close(self) -> None:
        self.state.closing = True
        if not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.drain(), timeout=5.0)
            except (TimeoutError, nats.errors.Error):
                await self.nc.close()


async def connect(
    config: CommonConfig,
    *,
    name: str,
    on_event: Callable[[str], None] | None = None,
    wait_s: float = 30.0,
) -> Bus:
    """Connects with unlimited reconnects and a short ping interval; callbacks log and track readiness.

    The first connection is retried for `wait_s`, so services may start before NATS does (compose, `sluice up`).
    """
    state = ConnectionState()
    if on_event is not None:
        state.listeners.append(on_event)

    async def disconnected() -> None:
        state.connected = False
        if not state.closing:
            log.warning("nats disconnected")
        state.notify("disconnected")

    async def reconnected() -> None:
        state.connected = True
        state.reconnects += 1
        log.info("nats reconnected", extra={"server": str(nc.connected_url.netloc if nc.connected_url else "")})
        state.notify("reconnected")

    async def error(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    async def closed() -> None:
        state.connected = False
        state.notify("closed")

    callbacks: dict[str, Callable[..., Awaitable[None]]] = {
        "disconnected_cb": disconnected,
        "reconnected_cb": reconnected,
        "error_cb": error,
        "closed_cb": closed,
    }

    async def attempt() -> NATS:
        return await nats.connect(
            servers=list(config.nats_urls),
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            ping_interval=5,
            max_outstanding_pings=3,
            connect_timeout=3,
            allow_reconnect=True,
            # Keep publishing through a short outage: buffered bytes are flushed on reconnect.
            pending_size=8 * 1024 * 1024,
            **callbacks,
        )

    unreachable = (nats.errors.NoServersError, OSError, TimeoutError)
    try:
        async for retry in AsyncRetrying(
            retry=retry_if_exception_type(unreachable),
            wait=wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.1),
            stop=stop_after_delay(wait_s),
            before_sleep=lambda _: log.info("waiting for NATS at %s", ", ".join(config.nats_urls)),
            reraise=True,
        ):
            with retry:
                nc = await attempt()
    except unreachable as exc:
        raise Unavailable("nats_unavailable", f"cannot reach NATS at {', '.join(config.nats_urls)}: {exc}") from exc
    state.connected = True
    return Bus(nc, state)
