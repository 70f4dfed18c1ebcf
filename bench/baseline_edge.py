"""The edge as most people write it, for comparison: FastAPI + sse-starlette, one JetStream ordered consumer per
client connection, each event decoded and re-encoded for each client. `python -m bench.baseline_edge --port P
--nats URL`. Same endpoints as bench/sluice_edge.py (SSE only)."""

from __future__ import annotations

import argparse
import json
import resource
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats
import uvicorn
from fastapi import FastAPI
from nats.js.api import ConsumerConfig, DeliverPolicy
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.responses import PlainTextResponse, Response

TERMINAL = {"task.completed", "task.failed", "task.canceled"}


def build(nats_url: str) -> FastAPI:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nc = await nats.connect(nats_url)
        state["js"] = nc.jetstream()
        yield
        await nc.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/t/{task_id}")
    async def events(task_id: str, after: int = 0, follow: bool = True) -> Response:
        js = state["js"]

        async def stream() -> AsyncIterator[ServerSentEvent]:
            if after:
                policy, config = DeliverPolicy.BY_START_SEQUENCE, ConsumerConfig(opt_start_seq=after + 1)
            else:
                policy, config = DeliverPolicy.ALL, None
            sub = await js.subscribe(
                f"sluice.evt.{task_id}.>", ordered_consumer=True, deliver_policy=policy, config=config
            )
            try:
                if not follow:
                    info = await sub.consumer_info()
                    if info.num_pending == 0:
                        return
                async for msg in sub.messages:
                    event = json.loads(msg.data)
                    seq = msg.metadata.sequence.stream
                    event["id"] = str(seq)
                    yield ServerSentEvent(data=json.dumps(event), id=str(seq), event=event["type"])
                    if event["type"] in TERMINAL or (not follow and msg.metadata.num_pending == 0):
                        return
            finally:
                await sub.unsubscribe()

        return EventSourceResponse(stream(), ping=15, headers={"Cache-Control": "no-cache"})

    @app.get("/ready")
    async def ready() -> Response:
        return PlainTextResponse("ok")

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nats", required=True)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvicorn.run(build(args.nats), host="127.0.0.1", port=args.port, log_level="warning", access_log=False, backlog=8192)


if __name__ == "__main__":
    main()
