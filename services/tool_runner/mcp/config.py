"""`SLUICE_MCP_SERVERS`: a JSON file in the usual `mcpServers` shape (CONTRACT §9).

    {"mcpServers": {
        "files": {"command": "npx", "args": ["-y", "some-mcp-server"], "env": {"KEY": "value"}},   # stdio
        "search": {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer ..."}}  # HTTP
    }}

Each server may also set `timeout_s` (the deadline of one call, default 30) and `init_timeout_s` (how long it
may take to start and answer `initialize`, default 20). A server name becomes the prefix of its tools' names
(`<server>__<tool>`), so it is 1–30 letters, digits, `_` or `-`, and has no `__`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec

from sluice.errors import InvalidInput

__all__ = ["McpServerConfig", "load_mcp_servers", "parse_mcp_servers"]

_SERVER_NAME_RE = re.compile(r"^(?!.*__)[A-Za-z0-9_-]{1,30}$")
_Positive = Annotated[float, msgspec.Meta(gt=0)]


class _ServerJson(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    command: str | None = None
    args: list[str] = msgspec.field(default_factory=list)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    # Written by some clients' config files; accepted and ignored (the transport follows from command / url).
    type: str | None = None
    timeout_s: _Positive = 30.0
    init_timeout_s: _Positive = 20.0


class _FileJson(msgspec.Struct, kw_only=True):
    mcpServers: dict[str, _ServerJson]


@dataclass(frozen=True)
class McpServerConfig:
    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0
    init_timeout_s: float = 20.0

    @property
    def transport(self) -> str:
        return "stdio" if self.command else "streamable-http"

    def describe(self) -> dict[str, Any]:
        """For logs (as a record's `extra`, so no key may be a LogRecord attribute such as `args`): no header values
        or environment values (they hold keys)."""
        where = {"command": self.command, "command_args": list(self.args)} if self.command else {"url": self.url}
        return {"server": self.name, "transport": self.transport, **where, "env": sorted(self.env),
                "headers": sorted(self.headers)}  # fmt: skip


def _fail(origin: str, message: str) -> InvalidInput:
    return InvalidInput("invalid_mcp_servers", f"{origin}: {message}")


def parse_mcp_servers(text: str, *, origin: str = "SLUICE_MCP_SERVERS") -> list[McpServerConfig]:
    try:
        raw = msgspec.convert(json.loads(text), _FileJson)
    except json.JSONDecodeError as exc:
        raise _fail(origin, f"not valid JSON: {exc}") from None
    except msgspec.ValidationError as exc:
        raise _fail(origin, str(exc)) from None
    servers = []
    for name, s in raw.mcpServers.items():
        if not _SERVER_NAME_RE.fullmatch(name):
            raise _fail(origin, f"server name {name!r} must be 1-30 of [A-Za-z0-9_-] without '__'")
        if bool(s.command) == bool(s.url):
            raise _fail(origin, f"server {name!r} needs exactly one of 'command' (stdio) or 'url' (Streamable HTTP)")
        if s.url is not None and not s.url.startswith(("http://", "https://")):
            raise _fail(origin, f"server {name!r}: url must be http:// or https://")
        servers.append(
            McpServerConfig(name=name, command=s.command, args=tuple(s.args), env=dict(s.env), cwd=s.cwd, url=s.url,
                            headers=dict(s.headers), timeout_s=s.timeout_s, init_timeout_s=s.init_timeout_s)
        )  # fmt: skip
    return servers


def load_mcp_servers(path: Path | None) -> list[McpServerConfig]:
    if path is None:
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(str(path), f"cannot read it: {exc.strerror}") from None
    return parse_mcp_servers(text, origin=str(path))
