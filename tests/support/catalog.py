"""The catalog in tests: fixed tool descriptors for an agent-runner without tool-runners, and agents made known.

`static_tools()` is what the shipped tool-runner advertises plus the agent-runner's own `ask_user`, as the loop
sees them, for tests that run the agent-runner against `FakeToolRunner` (which advertises nothing).
`advertise_shipped_agents(bus)` registers the shipped agents and crews as a runner does at start, for edge tests
that run no agent-runner (an agent nobody ever advertised is `422 unknown_agent`).
"""

from __future__ import annotations

import contextlib

import nats.js.errors

from agent_runner.agents import load_catalog
from agent_runner.interactive import INTERACTIVE_TOOLS
from agent_runner.live_tools import descriptor_of
from agent_runner.ports import ToolDescriptor
from sluice import subjects
from sluice.bus import Bus
from sluice.catalog import KnownAgent
from sluice.catalog.adverts import encode_advert
from tool_runner.advert import tool_advert
from tool_runner.tools import REGISTRY

__all__ = ["advertise_shipped_agents", "any_agent", "static_tools"]


def static_tools() -> dict[str, ToolDescriptor]:
    tools = {name: descriptor_of(tool_advert(tool)) for name, tool in REGISTRY.items()}
    tools.update(INTERACTIVE_TOOLS)
    return tools


async def advertise_shipped_agents(bus: Bus) -> list[str]:
    """Makes every shipped agent and crew known in `bus`'s catalog; returns their names."""
    names = load_catalog(None, default_model="").names
    kv = await bus.js.key_value(subjects.CATALOG_BUCKET)
    for name in names:
        with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
            await kv.create(subjects.catalog_known_key(name), encode_advert(KnownAgent(name=name)))
    return names


async def any_agent(name: str) -> bool:
    """An agent check that accepts every name: for tests of what `TaskService` does after the catalog check (the
    check itself is tested through the edge, tests/integration/test_catalog.py)."""
    return True
