"""What this agent-runner advertises in the catalog: its agents and crews, from its agents file."""

from __future__ import annotations

from agent_runner.agents import Catalog
from sluice.catalog import AgentAdvert, RunnerAdvert
from sluice.catalog.adverts import sluice_version
from sluice.clock import now_iso

__all__ = ["agent_adverts", "runner_advert"]


def agent_adverts(catalog: Catalog) -> list[AgentAdvert]:
    out = []
    for name in catalog.names:
        if name in catalog.crews:
            stages = list(catalog.crews[name])
            description = catalog.crew_descriptions.get(name) or f"A crew: {', '.join(stages)}, in that order."
            out.append(AgentAdvert(name=name, description=description, crew=True, stages=stages))
        else:
            spec = catalog.agents[name]
            out.append(
                AgentAdvert(
                    name=name,
                    description=spec.description or spec.instructions.splitlines()[0],
                    tools=list(spec.tools),
                    approval_tools=sorted(spec.approval_tools),
                )
            )
    return out


def runner_advert(catalog: Catalog, runner_id: str, *, ttl_s: float) -> RunnerAdvert:
    return RunnerAdvert(
        runner=runner_id,
        kind="agent-runner",
        version=sluice_version(),
        started_at=now_iso(),
        ttl_s=ttl_s,
        agents=agent_adverts(catalog),
    )
