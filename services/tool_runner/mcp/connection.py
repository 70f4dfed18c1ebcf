"""One MCP server, through the official `mcp` client: connected, its tools listed and followed, restarted when it dies.

    run ─▶ start / connect (stdio process or Streamable HTTP) ─▶ initialize + tools/list, within init_timeout_s
        ─▶ serving: calls go through the session; `notifications/tools/list_changed` ─▶ tools/list again
        ─▶ the connection closes (a stdio server crashed, an HTTP server went away)
             calls in flight fail at once (the SDK answers them "Connection closed"), the tools leave the catalog
        ─▶ wait (exponential backoff with jitter, capped) ─▶ start again

A server that fails to start, hangs in initialize or lists malformed tools is logged (once per kind of failure in
a row) and retried the same way; the rest of the tool-runner goes on. Tools are offered as `<server>__<tool>`;
one whose name no model API accepts, or whose input schema is not a JSON Schema object, is logged once and left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import anyio
import jsonschema
import jsonschema.exceptions
import msgspec
from mcp import ClientSession, McpError, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.message import SessionMessage
from tenacity import wait_exponential_jitter

from sluice import subjects
from sluice.catalog import ToolAdvert
from sluice.errors import InvalidInput
from sluice.signals import first_of

from ..tools import ToolError
from .config import McpServerConfig

__all__ = ["McpConnection", "McpTool"]

log = logging.getLogger(__name__)
_SEPARATOR = "__"


class _Closed(Exception):
    """The server's connection ended (its process exited, the HTTP session went away)."""


class McpTool:
    """An MCP server's tool as the tool-runner runs it (the `Invocable` shape `execution.execute` takes)."""

    def __init__(self, connection: McpConnection, remote_name: str, advert: ToolAdvert, max_output_bytes: int) -> None:
        self.connection = connection
        self.remote_name = remote_name
        self.advert = advert
        self.name = advert.name
        self.timeout_s = advert.timeout_s
        self.max_output_bytes = max_output_bytes

    async def invoke(self, arguments_json: str) -> str:
        from ..tools import ToolArgumentError

        try:
            arguments = json.loads(arguments_json.strip() or "{}")
        except json.JSONDecodeError as exc:
            raise ToolArgumentError(f"invalid arguments for {self.name}: not valid JSON ({exc})") from exc
        if not isinstance(arguments, dict):
            raise ToolArgumentError(f"invalid arguments for {self.name}: a JSON object is needed")
        result = await self.connection.call(self.remote_name, arguments, timeout_s=self.timeout_s)
        text = _result_text(result)
        if result.isError:
            raise ToolError(text or f"{self.name} reported an error")
        return text


class McpConnection:
    def __init__(
        self,
        config: McpServerConfig,
        *,
        max_output_bytes: int,
        on_change: Callable[[], None],
        backoff_max_s: float = 30.0,
    ) -> None:
        self.config = config
        self.max_output_bytes = max_output_bytes
        self.on_change = on_change
        self.tools: dict[str, McpTool] = {}
        self.up = asyncio.Event()
        self.starts = 0  # connections made (a restart adds one)
        self._session: ClientSession | None = None
        self._list_changed = asyncio.Event()
        self._backoff = wait_exponential_jitter(multiplier=0.5, max=backoff_max_s, jitter=0.5)
        self._logged: set[str] = set()

    @property
    def name(self) -> str:
        return self.config.name

    # ------------------------------------------------------------------ supervision

    async def run(self, stopping: asyncio.Event) -> None:
        failures = 0
        while not stopping.is_set():
            try:
                await self._serve(stopping)
                failures = 0
            # ValueError: what the SDK raises for an answer that does not validate (a malformed tools list, ...).
            except (
                _Closed,
                OSError,
                McpError,
                TimeoutError,
                ValueError,
                anyio.BrokenResourceError,
                ExceptionGroup,
            ) as exc:
                if _is_closed(exc):
                    log.warning("MCP server %s closed its connection; restarting it", self.name)
                    failures = 1
                else:
                    failures += 1
                    self._log_once(f"start:{type(exc).__name__}", "MCP server %s did not start: %s", self.name,
                                   _describe(exc))  # fmt: skip
            if stopping.is_set():
                return
            delay = self._backoff(_Attempt(failures))  # type: ignore[arg-type]  # tenacity's jittered backoff
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)

    async def _serve(self, stopping: asyncio.Event) -> None:
        closed = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            read, write = await stack.enter_async_context(self._transport())
            relay_send, relay_recv = anyio.create_memory_object_stream[SessionMessage | Exception](0)
            group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(group.cancel_scope.cancel)
            group.start_soon(_relay, read, relay_send, closed)
            session = await stack.enter_async_context(
                ClientSession(relay_recv, write, message_handler=self._on_message)
            )
            with anyio.fail_after(self.config.init_timeout_s):
                await session.initialize()
                await self._refresh(session)
            self._session = session
            self.starts += 1
            self.up.set()
            self._logged.clear()
            log.info("MCP server %s ready", self.name, extra={"tools": sorted(self.tools), **self.config.describe()})
            try:
                while True:
                    self._list_changed.clear()
                    await first_of(closed, stopping, self._list_changed)
                    if stopping.is_set():
                        return
                    if closed.is_set():
                        raise _Closed
                    with anyio.fail_after(self.config.init_timeout_s):
                        await self._refresh(session)
            finally:
                self._session = None
                self.up.clear()
                if self.tools:
                    self.tools = {}
                    self.on_change()

    @contextlib.asynccontextmanager
    async def _transport(self) -> AsyncIterator[tuple[Any, Any]]:
        c = self.config
        if c.command:
            params = StdioServerParameters(command=c.command, args=list(c.args), env=c.env or None, cwd=c.cwd)
            async with stdio_client(params) as (read, write):
                yield read, write
        else:
            assert c.url is not None
            async with streamablehttp_client(c.url, headers=c.headers or None, timeout=c.init_timeout_s) as (
                read,
                write,
                _,
            ):
                yield read, write

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ToolListChangedNotification
        ):
            self._list_changed.set()

    # ------------------------------------------------------------------ tools

    async def _refresh(self, session: ClientSession) -> None:
        listed: list[types.Tool] = []
        cursor: str | None = None
        while True:
            page = await session.list_tools(cursor)
            listed.extend(page.tools)
            cursor = page.nextCursor
            if not cursor:
                break
        tools = {}
        for tool in listed:
            advert = self._advert(tool)
            if advert is not None:
                tools[advert.name] = McpTool(self, tool.name, advert, self.max_output_bytes)
        if set(tools) != set(self.tools) or any(t.advert != self.tools[n].advert for n, t in tools.items()):
            self.tools = tools
            self.on_change()

    def _advert(self, tool: types.Tool) -> ToolAdvert | None:
        name = f"{self.name}{_SEPARATOR}{tool.name}"
        try:
            subjects.tool_name(name)
        except InvalidInput:
            self._log_once(f"name:{tool.name}", "MCP server %s: tool %r left out: %s is not a name model APIs "
                           "accept (^[A-Za-z0-9_-]{1,64}$)", self.name, tool.name[:80], name[:80])  # fmt: skip
            return None
        schema = tool.inputSchema
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
            if schema.get("type") != "object":
                raise jsonschema.exceptions.SchemaError("the input schema of a tool must be of type 'object'")
        except jsonschema.exceptions.SchemaError as exc:
            self._log_once(f"schema:{tool.name}", "MCP server %s: tool %r left out: its input schema is not valid "
                           "JSON Schema: %s", self.name, tool.name, exc.message)  # fmt: skip
            return None
        description = tool.description or tool.title or tool.name
        return ToolAdvert(
            name=name, description=description, input_schema=dict(schema), timeout_s=self.config.timeout_s
        )

    # ------------------------------------------------------------------ calls

    async def call(self, remote_name: str, arguments: dict[str, Any], *, timeout_s: float) -> types.CallToolResult:
        session = self._session
        if session is None:
            raise ToolError(f"the MCP server {self.name} is not running (it is being restarted); try again later")
        try:
            return await session.call_tool(remote_name, arguments, read_timeout_seconds=timedelta(seconds=timeout_s))
        except McpError as exc:
            if exc.error.code == types.CONNECTION_CLOSED:
                raise ToolError(f"the MCP server {self.name} closed its connection during the call") from exc
            raise ToolError(f"the MCP server {self.name} refused the call: {exc.error.message}") from exc

    def _log_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(message, *args)


class _Attempt:
    """The one field of tenacity's RetryCallState its wait strategies read."""

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = max(1, attempt_number)


async def _relay(source: Any, sink: Any, closed: asyncio.Event) -> None:
    """Passes the transport's messages to the session; when the transport ends, says so (and ends the session's)."""
    try:
        async with sink:
            async for item in source:
                await sink.send(item)
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
        pass
    finally:
        closed.set()


def _result_text(result: types.CallToolResult) -> str:
    """Structured content as JSON when the tool gives it, else its text parts (other parts named, not inlined)."""
    if result.structuredContent is not None and not result.isError:
        return msgspec.json.encode(result.structuredContent).decode()
    parts = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, types.EmbeddedResource) and isinstance(block.resource, types.TextResourceContents):
            parts.append(block.resource.text)
        else:
            parts.append(f"[{block.type} content: {getattr(block, 'mimeType', '') or 'not text'}]")
    return "\n".join(parts)


def _is_closed(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(_Closed) is not None
    return isinstance(exc, _Closed)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    if isinstance(exc, McpError):
        return exc.error.message
    return str(exc) or type(exc).__name__
