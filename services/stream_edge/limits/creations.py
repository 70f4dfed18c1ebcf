"""Whether a tenant may create one more task now: its unfinished tasks and its creations this minute (CONTRACT §8).

The one check every route that creates a task passes through (`TaskService.submit`: native create, A2A send and
stream on both bindings, chat, AG-UI), before anything of the task exists:

    take a place among the tenant's unfinished tasks (sluice.active_tasks) ─▶ none free: 429 tenant_limit
    count the creation in this minute's window (rate.py) ─▶ full: 429 tenant_limit, and the place given back

A refused creation leaves nothing behind: no record, no event, no idempotency key, no place taken.
"""

from __future__ import annotations

import logging

from sluice.active_tasks import ActiveTasks
from sluice.errors import RateLimited, Unavailable
from stream_edge.limits.rate import CreationRate

__all__ = ["ACTIVE_RETRY_AFTER_S", "CreationLimits"]

log = logging.getLogger(__name__)

# A tenant at its limit of unfinished tasks waits for one to end: a few seconds is the usual scale of a task.
ACTIVE_RETRY_AFTER_S = 3


class CreationLimits:
    def __init__(self, active: ActiveTasks, max_active: int, rate: CreationRate | None) -> None:
        self.active = active
        self.max_active = max_active  # 0: no limit
        self.rate = rate  # None: no limit

    async def admit(self, tenant: str, task_id: str) -> None:
        """Counts the task `task_id` about to be created, or raises `RateLimited` having counted nothing."""
        if self.max_active and not await self.active.take(tenant, task_id, self.max_active):
            raise RateLimited(
                "tenant_limit",
                f"tenant {tenant} has {self.max_active} unfinished tasks, its limit; retry when one has ended",
                retry_after_s=ACTIVE_RETRY_AFTER_S,
            )
        if self.rate is None:
            return
        try:
            await self.rate.count(tenant)
        except (RateLimited, Unavailable):
            await self.withdraw(tenant, task_id)
            raise

    async def withdraw(self, tenant: str, task_id: str) -> None:
        """The task admitted was not created after all (refused, or another request's Idempotency-Key won)."""
        if self.max_active:
            try:
                await self.active.free(tenant, {task_id})
            except Unavailable as exc:  # the reconciler frees a place whose task never got a record
                log.warning("an uncreated task's place is not freed yet: %s", exc.message, extra={"task_id": task_id})
