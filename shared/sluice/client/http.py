"""`EdgeClient`: the HTTP API of stream-edge (CONTRACT §4–§5) for Python programs, typed end to end.

    async with EdgeClient("http://127.0.0.1:8080") as edge:
        task = await edge.submit("What is 17*23?")
        async for event in edge.events(task.id):
            ...

`events()` reads the NDJSON stream and resumes by itself: it remembers the last event id, reconnects with
`Last-Event-ID` after a dropped connection or an edge restart (backing off with tenacity while the edge is away),
skips anything it has already yielded, and stops after the task's terminal event. Every failure arrives as a
`sluice.errors` class (see `sluice.client.errors` for the table).
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import httpx
import msgspec
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_delay, wait_exponential_jitter

from sluice.client import settings
from sluice.client.errors import error_from_response, error_from_transport, is_transient
from sluice.client.settings import edge_url
from sluice.errors import SluiceError, Unavailable
from sluice.events import TERMINAL_TYPES, Budget, Event, HistoryMessage, TaskRecord, decode_event, event_type
from sluice.ids import parse_event_id, parse_task_id

__all__ = ["ConnectionStatus", "EdgeClient", "Served", "StatusHook", "new_idempotency_key"]

log = logging.getLogger(__name__)

ConnectionStatus = Literal["connected", "reconnecting"]
# Called as hook("reconnecting", "connection refused") before each wait, and hook("connected", "") once a stream
# is open again after a reconnect — what a UI needs to show "reconnecting…".
StatusHook = Callable[[ConnectionStatus, str], None]

_NDJSON = "application/x-ndjson"
_record_decoder = msgspec.json.Decoder(TaskRecord)
_encoder = msgspec.json.Encoder()


class Served(NamedTuple):
    """One event as the edge served it: decoded, and the exact envelope line (no trailing newline)."""

    event: Event
    line: bytes

    @property
    def type(self) -> str:
        return event_type(type(self.event))


class EdgeClient:
    """A client of one edge (or a load balancer in front of several). Use as an async context manager."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout_s: float = 10.0,
        idle_timeout_s: float = 45.0,
        retry_for_s: float = 5.0,
        reconnect_for_s: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        """`idle_timeout_s`: a stream silent for this long (no event, no heartbeat) is taken as dead and resumed.
        `retry_for_s`: how long a request (or a stream's first connection) keeps retrying an unreachable or
        unavailable edge before failing with `Unavailable` — short, so a mistyped URL says so at once.
        `reconnect_for_s`: how long a stream that was connected keeps trying to resume.
        `api_key`: sent as `Authorization: Bearer` on every request (default: `SLUICE_API_KEY`, if set)."""
        self.base_url = (base_url or edge_url()).rstrip("/")
        self.idle_timeout_s = idle_timeout_s
        self.retry_for_s = retry_for_s
        self.reconnect_for_s = reconnect_for_s
        headers = {"User-Agent": "sluice-client", "Accept": "application/json"}
        credential = api_key if api_key is not None else settings.api_key()
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s),
            headers=headers,
            transport=transport,
        )

    async def __aenter__(self) -> EdgeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ requests

    async def submit(
        self,
        input: str,
        *,
        agent: str = "assistant",
        history: Sequence[HistoryMessage | Mapping[str, str]] = (),
        metadata: Mapping[str, Any] | None = None,
        budget: Budget | Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        context_id: str | None = None,
    ) -> TaskRecord:
        """Submits a task and returns its record. With an `idempotency_key` a lost answer is retried safely
        (the edge returns the same task); without one, only a request that never reached the edge is retried.
        `context_id` continues that conversation (its earlier turns become the task's history)."""
        body: dict[str, Any] = {"input": input, "agent": agent}
        if context_id is not None:
            body["context_id"] = context_id
        if history:
            body["history"] = [m if isinstance(m, Mapping) else msgspec.to_builtins(m) for m in history]
        if metadata:
            body["metadata"] = dict(metadata)
        if budget is not None:
            body["budget"] = msgspec.to_builtins(budget) if isinstance(budget, Budget) else dict(budget)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = await self._request("POST", "/v1/tasks", json=body, headers=headers, safe=bool(idempotency_key))
        return _record_decoder.decode(response.content)

    async def get(self, task_id: str) -> TaskRecord:
        """The task record (`NotFound` for an unknown task)."""
        response = await self._request("GET", f"/v1/tasks/{parse_task_id(task_id)}", safe=True)
        return _record_decoder.decode(response.content)

    async def cancel(self, task_id: str, reason: str = "") -> TaskRecord:
        """Cancels the task and returns its record (now `canceled`); `Conflict` if it has already ended."""
        body = {"reason": reason} if reason else None
        response = await self._request("POST", f"/v1/tasks/{parse_task_id(task_id)}/cancel", json=body, safe=False)
        return _record_decoder.decode(response.content)

    async def input(self, task_id: str, text: str | None = None, *, approve: bool | None = None) -> TaskRecord:
        """Answers a task waiting for input — `text` for a question, `approve=` for an approval — and returns
        its record (now `working`). `Conflict` unless the task is `input-required`."""
        if (text is None) == (approve is None):
            raise ValueError("give exactly one of text or approve=")
        body: dict[str, Any] = {"input": text} if text is not None else {"approve": approve}
        response = await self._request("POST", f"/v1/tasks/{parse_task_id(task_id)}/input", json=body, safe=False)
        return _record_decoder.decode(response.content)

    # ------------------------------------------------------------------ the event stream

    async def events(
        self, task_id: str, after: str | int | None = None, *, on_status: StatusHook | None = None
    ) -> AsyncIterator[Event]:
        """The task's events after `after` (default: from its first), typed, each exactly once, until the
        terminal event — resuming by itself across disconnects and edge restarts."""
        async for served in self.stream(task_id, after, on_status=on_status):
            yield served.event

    async def stream(
        self,
        task_id: str,
        after: str | int | None = None,
        *,
        follow: bool = True,
        on_status: StatusHook | None = None,
    ) -> AsyncIterator[Served]:
        """As `events()`, with each event's envelope exactly as served (for `--json`). `follow=False` ends
        with what exists now."""
        task_id = parse_task_id(task_id)
        last: int | None = None if after is None else parse_event_id(str(after), field="after")
        fruitless = 0  # connections in a row that ended before yielding anything: back off between them
        reconnecting = False
        troubled = False  # we told on_status "reconnecting" and owe it a "connected"

        def status(what: ConnectionStatus, detail: str) -> None:
            nonlocal troubled
            troubled = what == "reconnecting"
            if on_status is not None:
                on_status(what, detail)

        while True:
            if fruitless:
                await asyncio.sleep(min(5.0, 0.25 * 2 ** (fruitless - 1)) * random.uniform(0.8, 1.2))
            window = self.reconnect_for_s if reconnecting else self.retry_for_s
            response = await self._open_stream(task_id, last, follow, status, window)
            if troubled:
                status("connected", "")
            yielded = False
            reason = "the stream ended before the task did"
            try:
                async for line in response.aiter_lines():
                    served = _decode_line(line)
                    if served is None:
                        continue
                    if served.event.id is not None:
                        seq = int(served.event.id)
                        if last is not None and seq <= last:
                            continue  # already yielded before a reconnect
                        last = seq
                    yielded = True
                    yield served
                    if served.type in TERMINAL_TYPES:
                        return
                if not follow:
                    return
            except httpx.TransportError as exc:
                reason = error_from_transport(exc, self.base_url).message
            finally:
                await response.aclose()
            log.info("event stream of task %s interrupted (%s); resuming after %s", task_id, reason, last)
            status("reconnecting", reason)
            reconnecting = True
            fruitless = 0 if yielded else fruitless + 1

    async def _open_stream(
        self, task_id: str, last: int | None, follow: bool, on_status: StatusHook | None, window_s: float
    ) -> httpx.Response:
        """Opens the NDJSON stream after event `last`, retrying while the edge is away or unavailable."""
        headers = {"Accept": _NDJSON, "Accept-Encoding": "identity", "Cache-Control": "no-cache"}
        params = {"format": "ndjson"}
        if last is not None:
            headers["Last-Event-ID"] = str(last)
            params["after"] = str(last)
        if not follow:
            params["follow"] = "false"
        timeout = httpx.Timeout(self._http.timeout.connect, read=self.idle_timeout_s)

        async def open_once() -> httpx.Response:
            request = self._http.build_request(
                "GET", f"/v1/tasks/{task_id}/events", headers=headers, params=params, timeout=timeout
            )
            try:
                response = await self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                raise error_from_transport(exc, self.base_url) from exc
            if response.status_code >= 400:
                body = await response.aread()
                await response.aclose()
                raise error_from_response(response.status_code, body, response.headers)
            return response

        return await self._retrying(open_once, on_status, window_s)

    # ------------------------------------------------------------------ plumbing

    async def _request(
        self,
        method: str,
        path: str,
        *,
        safe: bool,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request with retries: every transient failure when `safe`, else only failures to connect."""
        content = None if json is None else _encoder.encode(json)
        all_headers = {**({"Content-Type": "application/json"} if content is not None else {}), **(headers or {})}

        async def once() -> httpx.Response:
            try:
                response = await self._http.request(method, path, content=content, headers=all_headers)
            except httpx.ConnectError as exc:
                raise error_from_transport(exc, self.base_url) from exc
            except httpx.TransportError as exc:
                error = error_from_transport(exc, self.base_url)
                raise (error if safe else _Final(error)) from exc
            if response.status_code >= 400:
                raise error_from_response(response.status_code, response.content, response.headers)
            return response

        try:
            return await self._retrying(once, None, self.retry_for_s)
        except _Final as final:
            raise final.error from final.__cause__

    async def _retrying(self, call: Callable[[], Any], on_status: StatusHook | None, window_s: float) -> Any:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            reason = exc.message if isinstance(exc, SluiceError) else str(exc)
            log.info("edge unavailable (%s); retrying", reason)
            if on_status is not None:
                on_status("reconnecting", reason)

        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential_jitter(multiplier=0.1, max=3.0, jitter=0.2),
            stop=stop_after_delay(window_s),
            before_sleep=before_sleep,
            reraise=True,
        )
        return await retrying(call)


class _Final(Exception):
    """A transient error that must not be retried (the request may have reached the edge)."""

    def __init__(self, error: Unavailable) -> None:
        super().__init__(error.message)
        self.error = error


def _decode_line(line: str) -> Served | None:
    """An envelope line → Served; None for blank lines, heartbeats and event types this client does not know."""
    line = line.strip()
    if not line:
        return None
    raw = line.encode()
    try:
        return Served(decode_event(raw, served=True), raw)
    except msgspec.DecodeError:  # includes ValidationError
        kind = _peek_type(raw)
        if kind != "heartbeat":
            log.warning("skipping an event this client cannot read (type %r)", kind)
        return None


def _peek_type(raw: bytes) -> object:
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    return value.get("type") if isinstance(value, dict) else None


def new_idempotency_key() -> str:
    return uuid.uuid4().hex
