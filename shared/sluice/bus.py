"""The NATS connection and JetStream publishing, with production settings and retries that are safe.

A publish that times out (or meets no responders during a leader election or reconnect) is retried with the same
`Nats-Msg-Id`, so JetStream drops the copy if the first attempt was in fact stored. While the first attempt is still
being replicated (a leader that has lost its quorum), JetStream answers the retry "duplicate message id is in
process": that is retried too, until the first attempt is stored or dropped. NATS exceptions are translated
to `Unavailable` here and nowhere else (a guarded publish whose expectation failed: `LogMovedOn`; a stream at its
byte limit: `StorageFull`, at once).

The connection is made as the process's own NATS identity (CONTRACT §8): an NKey seed file or a JWT creds file,
TLS with a CA and client certificate, or a user and password in the URL, with replies on the identity's private
inbox. A subject the server refuses this identity is logged once, naming the identity and the subject, and a
publish to it fails at once with `PermissionDenied` instead of being retried until its deadline.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

from sluice import jsapi, limits
from sluice.config import CommonConfig
from sluice.errors import InvalidInput, LogMovedOn, PermissionDenied, Unavailable
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
_REFUSED_RE = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"', re.IGNORECASE)
# JSStreamDuplicateMessageConflict: an earlier attempt with this msg id is still being proposed.
DUPLICATE_IN_PROCESS = 10158
# An expected-last-sequence header did not hold (a guarded write, see guard.py): JSStreamWrongLastSequenceErrF, and
# on a clustered stream JSStreamWrongLastSequenceConstantErr.
WRONG_LAST_SEQUENCE = frozenset({10071, 10164})


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
    identity: str = "anonymous"
    last_error: str = ""
    # Subjects the server refused this identity (lowercased, as the server reports them): "publish"/"subscription".
    refused: dict[str, str] = field(default_factory=dict)

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

        def retry_unless_refused(exc: BaseException) -> bool:
            return subject.lower() not in self.state.refused and _worth_retrying(exc)

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(retry_unless_refused),
                wait=wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.05),
                stop=stop_after_delay(self.publish_deadline_s),
                reraise=True,
            ):
                with attempt:
                    ack = await self.js.publish(
                        subject, payload, timeout=2.0, headers=dict(hdrs), stream=expected_stream
                    )
        except RETRYABLE as exc:
            if subject.lower() in self.state.refused:
                raise PermissionDenied(
                    "nats_permission_denied", f"NATS refused identity {self.state.identity} publish to {subject}"
                ) from exc
            raise Unavailable("nats_unavailable", f"publish to {subject} failed: {type(exc).__name__}") from exc
        except nats.errors.MaxPayloadError as exc:
            too_big = limits.refused_for_size(exc, f"publish to {subject}", limits.store_of_subject(subject))
            assert too_big is not None
            raise too_big from exc
        except nats.js.errors.APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise LogMovedOn("log_moved_on", f"publish to {subject} refused: {exc.description}") from exc
            too_big = limits.refused_for_size(exc, f"publish to {subject}", limits.store_of_subject(subject))
            if too_big is not None:
                raise too_big from exc
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


def _credentials(config: CommonConfig, identity: str | None) -> dict[str, Any]:
    """nats-py's connect options for who we are: seed or creds file, TLS, private inbox. A seed file that is missing
    or malformed is refused here, in one line, before any connection attempt."""
    options: dict[str, Any] = {}
    if identity is not None:
        options["inbox_prefix"] = jsapi.inbox_of(identity)
    if config.nats_nkey_file:
        from sluice.nats_auth import load_seed  # needs `nkeys`, which only a process with a seed uses

        load_seed(Path(config.nats_nkey_file))
        options["nkeys_seed"] = config.nats_nkey_file
    if config.nats_creds_file:
        if not Path(config.nats_creds_file).is_file():
            raise InvalidInput("nats_creds_unreadable", f"NATS creds file {config.nats_creds_file} does not exist")
        options["user_credentials"] = config.nats_creds_file
    if config.nats_tls_ca or config.nats_tls_cert:
        try:
            context = ssl.create_default_context(cafile=config.nats_tls_ca)
            if config.nats_tls_cert:
                context.load_cert_chain(config.nats_tls_cert, config.nats_tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidInput("nats_tls_invalid", f"NATS TLS files: {exc}") from None
        options["tls"] = context
    return options


async def connect(
    config: CommonConfig,
    *,
    name: str,
    identity: str | None = None,
    on_event: Callable[[str], None] | None = None,
    wait_s: float = 30.0,
) -> Bus:
    """Connects with unlimited reconnects and a short ping interval; callbacks log and track readiness.

    `identity`: the Sluice NATS identity this process is (`sluice.permissions`), for its private inbox and its log
    lines. The first connection is retried for `wait_s`, so services may start before NATS does (compose,
    `sluice up`); a server that refuses the credentials is not retried: that is one line and `Unavailable`.
    """
    credentials = _credentials(config, identity)
    state = ConnectionState(identity=identity or name)
    if on_event is not None:
        state.listeners.append(on_event)

    async def disconnected() -> None:
        state.connected = False
        if not state.closing:
            log.warning("nats disconnected")
        state.notify("disconnected")

    async def reconnected() -> None:
        state.connected = True
        state.last_error = ""
        state.reconnects += 1
        log.info("nats reconnected", extra={"server": str(nc.connected_url.netloc if nc.connected_url else "")})
        state.notify("reconnected")

    async def error(exc: Exception) -> None:
        if isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in str(exc).lower():
            if not state.connected and state.reconnects == 0:
                # Raised inside nats-py's first connect loop, which would otherwise try the same key forever.
                raise Unavailable(
                    "nats_refused",
                    f"NATS refused the credentials of identity {state.identity} (authorization violation): "
                    "check SLUICE_NATS_NKEY_FILE / SLUICE_NATS_CREDS and the server's authorization include",
                )
            log.error("NATS refused the credentials of identity %s on reconnect", state.identity)
            return
        if isinstance(exc, ssl.SSLError) and not state.connected and state.reconnects == 0:
            # Not a server still starting: a certificate this process does not trust (or none). Said once.
            raise Unavailable(
                "nats_tls_refused",
                f"TLS to NATS failed for identity {state.identity}: {exc}; check SLUICE_NATS_TLS_CA / _CERT / _KEY",
            )
        refused = _REFUSED_RE.search(str(exc))
        if refused is None:
            # Said once, not every half second while a server stays unreachable.
            log.log(logging.DEBUG if str(exc) == state.last_error else logging.WARNING, "nats error: %s", exc)
            state.last_error = str(exc)
            return
        what, subject = refused.group(1).lower(), refused.group(2)
        if state.refused.get(subject) != what:
            log.error("NATS refused identity %s %s to %s", state.identity, what, subject)
        state.refused[subject] = what
        state.notify("refused")

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
            **credentials,
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
    except nats.errors.Error as exc:  # the server answered: bad credentials, TLS required, ...
        raise Unavailable(
            "nats_refused", f"NATS refused the connection of identity {state.identity}: {exc or type(exc).__name__}"
        ) from exc
    state.connected = True
    return Bus(nc, state)
