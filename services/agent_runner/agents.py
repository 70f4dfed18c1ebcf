"""Agents and crews, loaded from TOML: what each agent is told, which tools it may call, its limits and prices.

The shipped `agents.toml` sits next to this module; `SLUICE_AGENTS_FILE` replaces it. A file looks like:

    [agents.assistant]
    instructions = "You are a helpful assistant."
    tools = ["calculator", "ask_user"]
    approval_tools = []              # tool calls a human must approve first (a subset of tools)
    max_steps = 8                    # budget ceilings; a task's own budget may lower each one, never raise it
    # max_output_tokens = 4000, max_cost_usd = 0.5, timeout_s = 300
    price_input_per_million = 0.15   # USD per million tokens, for usage.cost_usd
    price_output_per_million = 0.60
    # model = "gpt-4o-mini"          # default: SLUICE_MODEL

    [crews.dev-team]
    stages = ["architect", "coder", "reviewer", "documenter"]

An agent's `tools` name catalog tools (what the live tool-runners advertise, CONTRACT §9), or every tool of one MCP
server as `"<server>__*"`; `ask_user` is the agent-runner's own. A tool that no runner offers right now is simply not
offered to the model. Unknown keys, tool names that no tool could have, unknown stage agents, approval tools that
are not tools, or a crew named like an agent are errors at load time, with the file and the offending key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated

import msgspec

from sluice.errors import InvalidInput
from sluice.events import Budget

__all__ = ["AgentSpec", "Catalog", "Plan", "load_catalog", "parse_catalog"]

# A tool name (the catalog's and the model APIs' rule), or `<server>__*`: every tool of one MCP server.
_TOOL_REF_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$|^[A-Za-z0-9_-]{1,60}__\*$")
_Positive = Annotated[int, msgspec.Meta(ge=1)]
_NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class _AgentToml(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    instructions: str
    description: str = ""
    model: str | None = None
    tools: list[str] = msgspec.field(default_factory=list)
    approval_tools: list[str] = msgspec.field(default_factory=list)
    max_steps: _Positive = 10
    max_output_tokens: _Positive | None = None
    max_cost_usd: _NonNegative | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    price_input_per_million: _NonNegative = 0.0
    price_output_per_million: _NonNegative = 0.0


class _CrewToml(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    stages: Annotated[list[str], msgspec.Meta(min_length=1)]
    description: str = ""
    max_steps: _Positive | None = None
    max_output_tokens: _Positive | None = None
    max_cost_usd: _NonNegative | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None


class _FileToml(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    agents: dict[str, _AgentToml]
    crews: dict[str, _CrewToml] = msgspec.field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class AgentSpec:
    name: str
    model: str
    instructions: str
    tools: tuple[str, ...] = ()
    approval_tools: frozenset[str] = frozenset()
    description: str = ""
    max_steps: int = 10
    max_output_tokens: int | None = None
    max_cost_usd: float | None = None
    timeout_s: float | None = None
    price_input_per_million: float = 0.0
    price_output_per_million: float = 0.0

    def offers(self, tool: str) -> bool:
        """Whether this agent may call `tool`: named in its tools, or covered by a `<server>__*` entry."""
        return _covers(self.tools, tool)

    def tool_names(self, available: Iterable[str]) -> list[str]:
        """The tools of `available` this agent may call: named ones in their order, then each server's, sorted."""
        present = set(available)
        names: list[str] = []
        for ref in self.tools:
            matches = sorted(t for t in present if t.startswith(ref[:-1])) if ref.endswith("__*") else [ref]
            names.extend(t for t in matches if t in present and t not in names)
        return names

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        cost = input_tokens * self.price_input_per_million + output_tokens * self.price_output_per_million
        return round(cost / 1_000_000, 10)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What running a task means: one stage for an agent, several for a crew, and the budget ceilings."""

    name: str
    stages: tuple[AgentSpec, ...]
    crew: bool
    ceilings: Budget


@dataclass(frozen=True)
class Catalog:
    agents: dict[str, AgentSpec]
    crews: dict[str, tuple[str, ...]]
    crew_ceilings: dict[str, Budget]
    crew_descriptions: dict[str, str] = field(default_factory=dict)

    def plan(self, name: str) -> Plan | None:
        """The plan for `task.submitted.data.agent`, or None when no agent or crew has that name."""
        if name in self.agents:
            spec = self.agents[name]
            ceilings = Budget(
                max_output_tokens=spec.max_output_tokens,
                max_cost_usd=spec.max_cost_usd,
                max_steps=spec.max_steps,
                timeout_s=spec.timeout_s,
            )
            return Plan(name=name, stages=(spec,), crew=False, ceilings=ceilings)
        if name in self.crews:
            stages = tuple(self.agents[n] for n in self.crews[name])
            return Plan(name=name, stages=stages, crew=True, ceilings=self.crew_ceilings[name])
        return None

    @property
    def names(self) -> list[str]:
        return sorted([*self.agents, *self.crews])


def _covers(refs: Iterable[str], tool: str) -> bool:
    return any(tool == ref or (ref.endswith("__*") and tool.startswith(ref[:-1])) for ref in refs)


def _fail(origin: str, message: str) -> InvalidInput:
    return InvalidInput("invalid_agents_file", f"{origin}: {message}")


def parse_catalog(
    text: str, *, default_model: str, known_tools: Collection[str] | None = None, origin: str = "agents.toml"
) -> Catalog:
    """Parses and checks an agents file. `known_tools` (when given) is the registry every tool must be in."""
    try:
        raw = msgspec.convert(tomllib.loads(text), _FileToml)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(origin, f"not valid TOML: {exc}") from None
    except msgspec.ValidationError as exc:
        raise _fail(origin, str(exc)) from None
    agents: dict[str, AgentSpec] = {}
    for name, a in raw.agents.items():
        malformed = [t for t in a.tools if not _TOOL_REF_RE.fullmatch(t)]
        if malformed:
            raise _fail(origin, f"agent {name!r}: {malformed} are not tool names (nor '<server>__*')")
        unknown = [t for t in a.tools if known_tools is not None and t not in known_tools and not t.endswith("__*")]
        if unknown:
            raise _fail(origin, f"agent {name!r} names unknown tools {unknown}; known: {sorted(known_tools or [])}")
        stray = sorted(t for t in a.approval_tools if not _covers(a.tools, t))
        if stray:
            raise _fail(origin, f"agent {name!r}: approval_tools {stray} are not in its tools")
        agents[name] = AgentSpec(
            name=name,
            model=a.model or default_model,
            instructions=a.instructions.strip(),
            tools=tuple(a.tools),
            approval_tools=frozenset(a.approval_tools),
            description=a.description,
            max_steps=a.max_steps,
            max_output_tokens=a.max_output_tokens,
            max_cost_usd=a.max_cost_usd,
            timeout_s=a.timeout_s,
            price_input_per_million=a.price_input_per_million,
            price_output_per_million=a.price_output_per_million,
        )
    crews: dict[str, tuple[str, ...]] = {}
    crew_ceilings: dict[str, Budget] = {}
    crew_descriptions: dict[str, str] = {}
    for name, c in raw.crews.items():
        if name in agents:
            raise _fail(origin, f"crew {name!r} has the name of an agent")
        missing = [s for s in c.stages if s not in agents]
        if missing:
            raise _fail(origin, f"crew {name!r} has stages that are not agents: {missing}")
        crews[name] = tuple(c.stages)
        crew_descriptions[name] = c.description
        crew_ceilings[name] = Budget(
            max_output_tokens=c.max_output_tokens,
            max_cost_usd=c.max_cost_usd,
            max_steps=c.max_steps or sum(agents[s].max_steps for s in c.stages),
            timeout_s=c.timeout_s,
        )
    return Catalog(agents=agents, crews=crews, crew_ceilings=crew_ceilings, crew_descriptions=crew_descriptions)


def load_catalog(path: Path | None, *, default_model: str, known_tools: Collection[str] | None = None) -> Catalog:
    """Loads `path`, or the shipped `agents.toml` when None."""
    if path is None:
        text = resources.files("agent_runner").joinpath("agents.toml").read_text(encoding="utf-8")
        return parse_catalog(text, default_model=default_model, known_tools=known_tools, origin="agents.toml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(str(path), f"cannot read it: {exc.strerror}") from None
    return parse_catalog(text, default_model=default_model, known_tools=known_tools, origin=str(path))
