"""A live picture of the catalog, kept by watching the `sluice-catalog` bucket (no polling).

    watch ─▶ runners.<kind>.<id> put     ─▶ that runner's tools / agents (checked; bad parts logged once, skipped)
          ─▶ runners.<kind>.<id> delete  ─▶ gone (a clean stop deletes; a dead runner's TTL ends in a marker)
          ─▶ known.<agent> put / delete  ─▶ the agents that may be submitted (unless withdrawn)

Several runners may serve one tool. They must agree on its input schema: the runner that has advertised longest
(earliest `started_at`, then runner id) defines the tool, and a runner that claims it with another schema is
logged once and not counted for it. When that runner leaves, the next one defines the tool: so a tool-runner of a
new version takes over its tools' schemas as the old one stops, and the agent-runner's next model call sees them.

`version` grows with every change, so a derived value (the A2A card, an ETag) knows when to rebuild.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from sluice import subjects
from sluice.bus import Bus
from sluice.catalog.adverts import AgentAdvert, KnownAgent, RunnerAdvert, ToolAdvert, decode_known, decode_runner
from sluice.errors import InvalidInput, Unavailable
from sluice.records import patiently

__all__ = ["AgentEntry", "CatalogView", "ToolEntry", "check_tool"]

log = logging.getLogger(__name__)
_RUNNERS = "runners."
_KNOWN = "known."
_LOAD_S = 10.0  # one try at watching the bucket and loading its entries


@dataclass(frozen=True)
class ToolEntry:
    name: str
    description: str
    input_schema: dict[str, Any]
    timeout_s: float
    runners: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
            "timeout_s": self.timeout_s,
            "runners": self.runners,
        }


@dataclass(frozen=True)
class AgentEntry:
    name: str
    description: str
    crew: bool
    tools: tuple[str, ...]
    stages: tuple[str, ...]
    approval_tools: tuple[str, ...]
    runners: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "crew": self.crew,
            "tools": list(self.tools),
            "stages": list(self.stages),
            "approval_tools": list(self.approval_tools),
            "runners": self.runners,
        }


def check_tool(tool: ToolAdvert) -> str | None:
    """Why a tool advertisement cannot be offered to a model, or None."""
    try:
        subjects.tool_name(tool.name)
    except InvalidInput as exc:
        return exc.message
    schema = tool.input_schema
    if schema.get("type") != "object" or not isinstance(schema.get("properties", {}), dict):
        return "its input_schema is not a JSON Schema object (type 'object', properties an object)"
    if not tool.timeout_s > 0:
        return "its timeout_s is not positive"
    return None


class CatalogView:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.version = 0
        self.changed = asyncio.Event()  # set on every change; a waiter clears it before it waits
        self._runners: dict[str, RunnerAdvert] = {}
        self._raw: dict[str, bytes] = {}  # the last value of every key, to tell a refresh from a change
        self._known: dict[str, KnownAgent] = {}
        self._logged: set[str] = set()
        self._kv: KeyValue | None = None
        self._watcher: Any = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, timeout_s: float = 60.0) -> None:
        """Watches the bucket and returns once the current entries are loaded (raises `Unavailable` if not).

        A service may start while NATS elects a new leader for the bucket (a node was lost): JetStream does not
        answer for several seconds then, so a try that times out is given up and made again until `timeout_s`."""
        try:
            await patiently("reading the catalog bucket", self._load, timeout_s)
        except Unavailable as exc:
            raise Unavailable("catalog_unavailable", f"the catalog bucket could not be read: {exc.message}") from exc

    async def _load(self) -> None:
        self._runners.clear()  # a try that failed half-way may have read some entries: the watch sends all again
        self._raw.clear()
        self._known.clear()
        try:
            async with asyncio.timeout(_LOAD_S):
                self._kv = await self.bus.js.key_value(subjects.CATALOG_BUCKET)
                self._watcher = await self._kv.watchall()
                self._task = asyncio.create_task(self._follow(), name="catalog-watch")
                await self._ready.wait()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._watcher.stop()
            self._watcher = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _follow(self) -> None:
        async for entry in self._watcher:
            if entry is None:  # the end of the entries that existed when the watch began
                self._ready.set()
                continue
            self._apply(entry.key, entry.value, deleted=entry.operation in ("DEL", "PURGE"))

    # ------------------------------------------------------------------ applying updates

    def _apply(self, key: str, value: bytes | None, *, deleted: bool) -> None:
        if not deleted and value and self._raw.get(key) == value:
            return  # a refresh that changes nothing: no new version, nobody woken
        if deleted or not value:
            self._raw.pop(key, None)
        else:
            self._raw[key] = value
        if key.startswith(_RUNNERS):
            if deleted or not value:
                self._runners.pop(key, None)
            else:
                advert = self._decode_runner(key, value)
                if advert is None:
                    return
                self._runners[key] = advert
        elif key.startswith(_KNOWN):
            name = key.removeprefix(_KNOWN)
            if deleted or not value:
                self._known.pop(name, None)
            else:
                try:
                    self._known[name] = decode_known(value)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    self._log_once(f"known:{name}:{exc}", "malformed catalog entry %s ignored: %s", key, exc)
                    return
        else:
            return
        self.version += 1
        self.changed.set()

    def _decode_runner(self, key: str, value: bytes) -> RunnerAdvert | None:
        try:
            advert = decode_runner(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._log_once(f"{key}:{exc}", "malformed advertisement %s ignored: %s", key, exc)
            return None
        if not _valid_runner(advert) or key != subjects.catalog_runner_key(advert.kind, advert.runner):
            self._log_once(f"{key}:misfiled", "advertisement %s names runner %r (%s): ignored", key,
                           advert.runner, advert.kind)  # fmt: skip
            return None
        tools = []
        for tool in advert.tools:
            problem = check_tool(tool)
            if problem is not None:
                self._log_once(f"{key}:{tool.name}:{problem}", "runner %s: tool %r not offered: %s", advert.runner,
                               tool.name[:80], problem)  # fmt: skip
                continue
            tools.append(tool)
        advert.tools = tools
        return advert

    def _log_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(message, *args)

    # ------------------------------------------------------------------ reading

    def _by_seniority(self) -> list[RunnerAdvert]:
        return sorted(self._runners.values(), key=lambda a: (a.started_at, a.runner))

    def tool_adverts(self) -> dict[str, tuple[ToolAdvert, int]]:
        """Every live tool: the defining advertisement and how many live runners serve it with that schema."""
        out: dict[str, tuple[ToolAdvert, int]] = {}
        for advert in self._by_seniority():
            for tool in advert.tools:
                held = out.get(tool.name)
                if held is None:
                    out[tool.name] = (tool, 1)
                elif held[0].input_schema == tool.input_schema:
                    out[tool.name] = (held[0], held[1] + 1)
                else:
                    self._log_once(f"conflict:{advert.runner}:{tool.name}:{tool.input_schema}",
                                   "runner %s claims tool %r with another input schema than the runner that "
                                   "defines it; not counted for it", advert.runner, tool.name)  # fmt: skip
        return out

    def serves_elsewhere(self, tool: str, runner_key: str) -> bool:
        """Whether a live runner other than the one advertised under `runner_key` serves `tool`."""
        return any(key != runner_key and any(t.name == tool for t in a.tools) for key, a in self._runners.items())

    def tools(self) -> list[ToolEntry]:
        return [
            ToolEntry(t.name, t.description, t.input_schema, t.timeout_s, n)
            for t, n in sorted(self.tool_adverts().values(), key=lambda pair: pair[0].name)
        ]

    def _live_agents(self) -> dict[str, tuple[AgentAdvert, int]]:
        out: dict[str, tuple[AgentAdvert, int]] = {}
        for advert in self._by_seniority():
            for agent in advert.agents:
                held = out.get(agent.name)
                out[agent.name] = (agent, 1) if held is None else (held[0], held[1] + 1)
        return out

    def agents(self) -> list[AgentEntry]:
        """Every agent and crew that may be submitted: live ones, and known ones whose runners are all down."""
        live = self._live_agents()
        names = {n for n, k in self._known.items() if not k.withdrawn} | {n for n in live if not self.withdrawn(n)}
        entries = []
        for name in sorted(names):
            agent, runners = live.get(name, (AgentAdvert(name=name), 0))
            tools, stages, approval = tuple(agent.tools), tuple(agent.stages), tuple(agent.approval_tools)
            entries.append(AgentEntry(name, agent.description, agent.crew, tools, stages, approval, runners))
        return entries

    def withdrawn(self, name: str) -> bool:
        known = self._known.get(name)
        return known is not None and known.withdrawn

    def is_known(self, name: str) -> bool:
        """Whether `name` may be submitted: some runner advertised it once, and no operator withdrew it."""
        if self.withdrawn(name):
            return False
        return name in self._known or name in self._live_agents()

    async def confirm_known(self, name: str) -> bool:
        """`is_known`, asking the bucket itself before saying no (a runner may have registered it a moment ago)."""
        if self.is_known(name):
            return True
        if self.withdrawn(name) or self._kv is None:
            return False
        try:
            entry = await asyncio.wait_for(self._kv.get(subjects.catalog_known_key(name)), 3.0)
        except nats.js.errors.KeyNotFoundError:
            return False
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable("catalog_unavailable", f"the catalog bucket does not answer: {exc!r}") from exc
        if entry.value:
            self._apply(entry.key, entry.value, deleted=False)
        return self.is_known(name)

    def runner_count(self) -> int:
        return len(self._runners)


def _valid_runner(advert: RunnerAdvert) -> bool:
    try:
        subjects.catalog_runner_key(advert.kind, advert.runner)
    except InvalidInput:
        return False
    return True
