"""Clients of Sluice: `EdgeClient` over the edge's HTTP API, and direct NATS subscriptions for services.

`Transcript` folds a task's events into what a person wants to see (the answer text without the deltas of
superseded attempts, tool calls with their results, crew stages, state, usage); the CLI and tests use it.
"""

from __future__ import annotations

from sluice.client.http import ConnectionStatus, EdgeClient, Served, StatusHook, new_idempotency_key
from sluice.client.subscribe import events_of_types, task_events
from sluice.client.transcript import Stage, StepText, ToolCallView, Transcript

__all__ = [
    "ConnectionStatus",
    "EdgeClient",
    "Served",
    "Stage",
    "StatusHook",
    "StepText",
    "ToolCallView",
    "Transcript",
    "events_of_types",
    "new_idempotency_key",
    "task_events",
]
