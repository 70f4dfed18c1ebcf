"""A2A 1.0 on stream-edge: any A2A client can send, stream, get, list, cancel and re-subscribe to Sluice tasks.

    card.py      the agent card: interfaces from `SLUICE_PUBLIC_URL`, one skill per agent / crew
    mapping.py   a task's events → the A2A Task and its stream events (pure)
    handler.py   the SDK's `RequestHandler` over `TaskService` and the event log
    intake.py    an incoming message: a new task, or the answer to a task's question
    listing.py   ListTasks pages and a context's earlier turns, from one scan of the records
    errors.py    Sluice errors → A2A errors (one table)
    routes.py    the SDK's JSON-RPC and HTTP+JSON dispatchers, with SSE `id:` lines; the card route

An A2A task is a Sluice task (same id, same log), so the A2A endpoint is stateless and any replica serves any
task. See docs/a2a.md.
"""

from stream_edge.a2a.routes import a2a_routes, router

__all__ = ["a2a_routes", "router"]
