"""Budget arithmetic: which limits apply to a task, and when a number crosses 80 % (warning) or 100 % (exceeded).

An agent's limits (agents.toml) are ceilings; a task's `budget` can only lower them (`Limits.resolve`), and
`task.started` carries the limits the task actually runs with. Pure functions over numbers; the loop publishes
`budget.warning` / `budget.exceeded` for what they return.

| kind | used | warning | exceeded |
| --- | --- | --- | --- |
| `tokens` | output tokens of the completed model calls | ≥ 80 % | > limit after a call, or ≥ limit before one |
| `cost_usd` | their cost at the agent's prices | ≥ 80 % | as tokens |
| `steps` | completed model calls | ≥ 80 % | ≥ limit when another call is needed |
| `time_s` | seconds working (waiting for a human does not count) | 80 % | at the limit; the running step is cut |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sluice.events import Budget, BudgetKind, Usage

__all__ = ["WARN_FRACTION", "Crossing", "Limits", "after_call", "before_call"]

WARN_FRACTION = 0.8


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_output_tokens: int | None = None
    max_cost_usd: float | None = None
    max_steps: int | None = None
    timeout_s: float | None = None

    @classmethod
    def resolve(cls, task: Budget, ceilings: Budget) -> Limits:
        """The agent's (or crew's) limits are ceilings: a task's own budget may lower each one, never raise it.

        Where only one side sets a value it applies; where both do, the smaller. The runner applies this, not the
        edge, because any service allowed to publish `task.submitted` can ask for a budget."""

        def pick(field: str) -> float | None:
            own, ceiling = getattr(task, field), getattr(ceilings, field)
            if own is None or ceiling is None:
                return own if ceiling is None else ceiling
            return min(own, ceiling)

        tokens, steps = pick("max_output_tokens"), pick("max_steps")
        return cls(
            max_output_tokens=int(tokens) if tokens is not None else None,
            max_cost_usd=pick("max_cost_usd"),
            max_steps=int(steps) if steps is not None else None,
            timeout_s=pick("timeout_s"),
        )

    def as_budget(self) -> Budget:
        """The limits as the wire's `Budget` (what `task.started` says the task runs with)."""
        return Budget(
            max_output_tokens=self.max_output_tokens,
            max_cost_usd=self.max_cost_usd,
            max_steps=self.max_steps,
            timeout_s=self.timeout_s,
        )


@dataclass(frozen=True)
class Crossing:
    kind: BudgetKind
    level: Literal["warning", "exceeded"]
    used: float
    limit: float


def _usage_pairs(limits: Limits, usage: Usage) -> list[tuple[BudgetKind, float, float]]:
    pairs: list[tuple[BudgetKind, float, float]] = []
    if limits.max_output_tokens is not None:
        pairs.append(("tokens", float(usage.output_tokens), float(limits.max_output_tokens)))
    if limits.max_cost_usd is not None:
        pairs.append(("cost_usd", round(usage.cost_usd, 10), limits.max_cost_usd))
    return pairs


def after_call(limits: Limits, usage: Usage, steps_done: int) -> list[Crossing]:
    """Crossings once a model call completed: warnings (≥ 80 %) and overruns of tokens or cost (> 100 %)."""
    out: list[Crossing] = []
    pairs = _usage_pairs(limits, usage)
    if limits.max_steps is not None:
        pairs.append(("steps", float(steps_done), float(limits.max_steps)))
    for kind, used, limit in pairs:
        if kind != "steps" and used > limit:
            out.append(Crossing(kind, "exceeded", used, limit))
        elif used >= WARN_FRACTION * limit:
            out.append(Crossing(kind, "warning", used, limit))
    return out


def before_call(limits: Limits, usage: Usage, steps_done: int) -> Crossing | None:
    """The limit that forbids another model call, if any: nothing left of tokens, cost or steps."""
    pairs = _usage_pairs(limits, usage)
    if limits.max_steps is not None:
        pairs.append(("steps", float(steps_done), float(limits.max_steps)))
    for kind, used, limit in pairs:
        if used >= limit:
            return Crossing(kind, "exceeded", used, limit)
    return None
