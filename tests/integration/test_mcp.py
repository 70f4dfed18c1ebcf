"""MCP servers as tools (CONTRACT §9), against real MCP servers through the official `mcp` client:

- a server written in the tests with the SDK's server side (`support/mcp_server.py`), over stdio and over
  Streamable HTTP;
- the reference `@modelcontextprotocol/server-everything` from npm over stdio (locked in tests/mcp_everything/);
- servers that cannot start or hang in `initialize`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from sluice.config import CommonConfig
from support.mcp_server import streamable_app
from tool_runner.execution import CallResult, Outcome, execute
from tool_runner.mcp import McpServerConfig, parse_mcp_servers
from tool_runner.toolbox import Toolbox
from tool_runner.tools import REGISTRY

TESTS = Path(__file__).resolve().parents[1]
EVERYTHING = TESTS / "mcp_everything" / "node_modules" / ".bin" / "mcp-server-everything"
NODE = shutil.which("node")


def demo_stdio(name: str = "demo", **options: Any) -> McpServerConfig:
    return McpServerConfig(name=name, command=sys.executable, args=(str(TESTS / "support" / "mcp_server.py"),),
                           timeout_s=options.pop("timeout_s", 10.0), init_timeout_s=20.0, **options)  # fmt: skip


def everything_stdio() -> McpServerConfig:
    if NODE is None or not EVERYTHING.exists():
        pytest.skip("node or tests/mcp_everything/node_modules is missing: run `make node-deps` (make test does)")
    return McpServerConfig(name="everything", command=NODE, args=(str(EVERYTHING), "stdio"), init_timeout_s=30.0)


@contextlib.asynccontextmanager
async def http_server() -> AsyncIterator[str]:
    """The test server over Streamable HTTP, under uvicorn on a free port; yields its MCP URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(streamable_app(), log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 15)
        sock.close()


@contextlib.asynccontextmanager
async def running_toolbox(*servers: McpServerConfig, max_output_bytes: int = 2048) -> AsyncIterator[Toolbox]:
    changes = asyncio.Event()
    box = Toolbox(REGISTRY, servers, max_output_bytes=max_output_bytes, on_change=changes.set)
    box.changes = changes  # type: ignore[attr-defined]
    stopping = asyncio.Event()
    task = asyncio.create_task(box.run(stopping))
    try:
        yield box
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)


async def until(box: Toolbox, check: Callable[[], Any], *, timeout_s: float = 30.0) -> Any:
    """Waits, woken by the toolbox's change notices, until `check()` is truthy."""
    changes: asyncio.Event = box.changes  # type: ignore[attr-defined]
    async with asyncio.timeout(timeout_s):
        while not (result := check()):
            changes.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changes.wait(), 1.0)  # also re-checks what no notice announces (logs)
        return result


async def run(box: Toolbox, name: str, arguments: str, *, deadline_s: float = 10.0) -> CallResult:
    return await execute(box.get(name), name, arguments, deadline_s=deadline_s, max_output_bytes=None)


# ---------------------------------------------------------------- the servers' tools, called


@pytest.mark.parametrize("transport", ["stdio", "streamable-http"])
async def test_mcp_tools_are_served_as_server__tool_with_results_errors_and_limits(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tool_runner.mcp.connection")
    async with contextlib.AsyncExitStack() as stack:
        if transport == "stdio":
            config = demo_stdio()
        else:
            url = await stack.enter_async_context(http_server())
            config = McpServerConfig(name="demo", url=url, timeout_s=10.0)
        box = await stack.enter_async_context(running_toolbox(config, max_output_bytes=512))
        await until(box, lambda: box.get("demo__add"))
        adverts = {a.name: a for a in box.adverts()}
        added = await run(box, "demo__add", '{"a": 2, "b": 3}')
        weather = await run(box, "demo__weather", '{"city": "Oslo"}')
        refused = await run(box, "demo__refuse", '{"reason": "no"}')
        big = await run(box, "demo__big", '{"size": 5000}')
        slow = await run(box, "demo__slow", '{"seconds": 30}', deadline_s=0.5)
        not_object = await run(box, "demo__add", "[1, 2]")
        after_slow = await run(box, "demo__add", '{"a": 1, "b": 1}')
    assert adverts["demo__add"].input_schema["properties"].keys() == {"a", "b"}
    assert adverts["demo__add"].description == "Add two integers." and adverts["demo__add"].timeout_s == 10.0
    assert "calculator" in adverts  # the registered Python tools are still served
    assert "demo__has space" not in adverts and "demo__broken_schema" not in adverts
    assert (added.ok, added.result) == (True, '{"result":5}')  # FastMCP wraps a plain value as structured
    assert weather.ok and weather.result == '{"city":"Oslo","temp_c":21,"sky":"clear"}'  # structured content
    assert refused.outcome is Outcome.TOOL_ERROR and "refused: no" in (refused.error or "")  # isError → ok:false
    assert big.ok and big.result is not None and len(big.result.encode()) <= 512 and "truncated" in big.result
    assert slow.outcome is Outcome.TIMEOUT
    assert not_object.outcome is Outcome.BAD_ARGUMENTS
    assert after_slow.ok  # a timed-out call leaves the session usable
    messages = [r.getMessage() for r in caplog.records]
    assert sum("'has space' left out" in m for m in messages) == 1, messages
    assert sum("'broken_schema' left out" in m for m in messages) == 1, messages


async def test_a_crashed_stdio_server_fails_its_call_clearly_and_is_restarted() -> None:
    async with running_toolbox(demo_stdio()) as box:
        await until(box, lambda: box.get("demo__add"))
        connection = box.connections[0]
        crashed = await run(box, "demo__crash", "{}", deadline_s=20)
        await until(box, lambda: connection.starts >= 2 and box.get("demo__add"))
        again = await run(box, "demo__add", '{"a": 20, "b": 22}')
    assert crashed.outcome is Outcome.TOOL_ERROR and "closed its connection" in (crashed.error or ""), crashed
    assert (again.ok, again.result) == (True, '{"result":42}')


async def test_a_changed_tool_list_is_followed() -> None:
    async with running_toolbox(demo_stdio()) as box:
        await until(box, lambda: box.get("demo__add"))
        assert box.get("demo__extra") is None
        grown = await run(box, "demo__grow", "{}")
        await until(box, lambda: box.get("demo__extra"))
        extra = await run(box, "demo__extra", '{"text": "hi"}')
    assert grown.ok and (extra.ok, extra.result) == (True, '{"result":"HI"}')


async def test_servers_that_cannot_start_or_hang_are_logged_and_the_rest_keeps_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tool_runner.mcp.connection")
    missing = McpServerConfig(name="missing", command="/nonexistent/mcp-server", init_timeout_s=2.0)
    hangs = McpServerConfig(name="hangs", command=sys.executable, args=("-c", "import time; time.sleep(600)"),
                            init_timeout_s=0.5)  # fmt: skip
    malformed = McpServerConfig(name="malformed", command=sys.executable,
                                args=(str(TESTS / "support" / "mcp_malformed.py"),), init_timeout_s=5.0)  # fmt: skip
    names = ("missing", "hangs", "malformed")
    async with running_toolbox(missing, hangs, malformed, demo_stdio()) as box:
        await until(box, lambda: box.get("demo__add"))
        await until(box, lambda: set(names) <= {
            name for name in names if any(f"MCP server {name} did not start" in r.getMessage()
                                          for r in caplog.records)})  # fmt: skip
        ok = await run(box, "demo__add", '{"a": 1, "b": 2}')
        calculator = await run(box, "calculator", '{"expression": "6*7"}')
    assert ok.ok and calculator.ok and calculator.result == "42"
    assert [a.name for a in box.adverts() if a.name.startswith(("missing__", "hangs__", "malformed__"))] == []
    for name in names:  # logged once, though each is retried with backoff
        assert sum(f"MCP server {name} did not start" in r.getMessage() for r in caplog.records) == 1, name


async def test_the_reference_everything_server_over_stdio() -> None:
    async with running_toolbox(everything_stdio()) as box:
        await until(box, lambda: box.get("everything__echo"), timeout_s=60)
        echoed = await run(box, "everything__echo", '{"message": "hello from sluice"}')
        summed = await run(box, "everything__get-sum", '{"a": 2, "b": 40}')
    assert echoed.ok and "hello from sluice" in (echoed.result or "")
    assert summed.ok and "42" in (summed.result or ""), summed


# ---------------------------------------------------------------- the configuration file


def test_the_mcp_servers_file_takes_the_usual_shape_and_refuses_what_cannot_work() -> None:
    servers = parse_mcp_servers(
        '{"mcpServers": {"files": {"command": "npx", "args": ["-y", "x"], "env": {"K": "v"}},'
        ' "search": {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer s3cret"},'
        ' "timeout_s": 5}}}'
    )
    assert [(s.name, s.transport) for s in servers] == [("files", "stdio"), ("search", "streamable-http")]
    assert "s3cret" not in repr(servers[1].describe()) and servers[1].timeout_s == 5
    for server in servers:  # logged as a record's extra fields: none may clash with a LogRecord attribute
        record = logging.getLogger("t").makeRecord("t", logging.INFO, __file__, 1, "ready", (), None,
                                                   extra=server.describe())  # fmt: skip
        assert record.getMessage() == "ready"
    from sluice.errors import InvalidInput

    for bad in (
        "not json",
        '{"mcpServers": {"a__b": {"command": "x"}}}',
        '{"mcpServers": {"a": {"command": "x", "url": "http://y"}}}',
        '{"mcpServers": {"a": {}}}',
        '{"mcpServers": {"a": {"url": "file:///etc/passwd"}}}',
        '{"mcpServers": {"a": {"command": "x", "unknown": 1}}}',
    ):
        with pytest.raises(InvalidInput):
            parse_mcp_servers(bad)
    assert CommonConfig  # the shared configuration is untouched by MCP settings
