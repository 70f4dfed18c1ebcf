"""What a runner says about itself in the catalog (CONTRACT §9): the wire types of the `sluice-catalog` bucket.

    runners.<kind>.<runner_id>  → RunnerAdvert   (written with a per-message TTL, refreshed while the runner lives)
    known.<agent>               → KnownAgent     (no TTL: "some runner once offered this agent")

A tool-runner fills `tools`, an agent-runner `agents`. Every field after the first has a default, so an
advertisement from an older or newer runner still decodes. The AsyncAPI document (`/asyncapi.json`) describes the
same shapes for runners written in other languages.
"""

from __future__ import annotations

import importlib.metadata
import re
from typing import Any, Literal

import msgspec

__all__ = [
    "AgentAdvert",
    "KnownAgent",
    "RunnerAdvert",
    "RunnerKind",
    "ToolAdvert",
    "decode_known",
    "decode_runner",
    "encode_advert",
    "runner_id_token",
    "sluice_version",
]

RunnerKind = Literal["agent-runner", "tool-runner"]


def _empty_object_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


class ToolAdvert(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    name: str
    description: str = ""
    input_schema: dict[str, Any] = msgspec.field(default_factory=_empty_object_schema)
    timeout_s: float = 10.0


class AgentAdvert(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    name: str
    description: str = ""
    crew: bool = False
    # For an agent: the tools it may call (a name, or `<server>__*` for every tool of one MCP server).
    tools: list[str] = msgspec.field(default_factory=list)
    # For a crew: its agents, in order.
    stages: list[str] = msgspec.field(default_factory=list)
    approval_tools: list[str] = msgspec.field(default_factory=list)


class RunnerAdvert(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    runner: str
    kind: RunnerKind
    version: str = ""
    started_at: str = ""
    ttl_s: float = 15.0
    tools: list[ToolAdvert] = msgspec.field(default_factory=list)
    agents: list[AgentAdvert] = msgspec.field(default_factory=list)


class KnownAgent(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    name: str
    first_seen: str = ""
    withdrawn: bool = False


_encoder = msgspec.json.Encoder()
_runner_decoder = msgspec.json.Decoder(RunnerAdvert)
_known_decoder = msgspec.json.Decoder(KnownAgent)


def encode_advert(value: RunnerAdvert | KnownAgent) -> bytes:
    return _encoder.encode(value)


def decode_runner(data: bytes) -> RunnerAdvert:
    """Raises msgspec.DecodeError / ValidationError for a malformed advertisement."""
    return _runner_decoder.decode(data)


def decode_known(data: bytes) -> KnownAgent:
    return _known_decoder.decode(data)


def runner_id_token(raw: str) -> str:
    """`raw` (e.g. `host.example-1234`) made a valid catalog key token: other characters become `-`."""
    token = re.sub(r"[^A-Za-z0-9_-]", "-", raw)[:128]
    return token or "runner"


def sluice_version() -> str:
    try:
        return importlib.metadata.version("sluice")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"
