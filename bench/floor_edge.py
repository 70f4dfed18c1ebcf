"""The floor for the idle-stream figure: a FastAPI route (same framework and server as both edges) that holds an
idle SSE response and hears the disconnect — no NATS, no engine. What an idle stream costs beyond this is the
engine's. `python -m bench.floor_edge --port P --nats URL` (the URL is ignored)."""

from __future__ import annotations

import argparse
import asyncio
import resource

import uvicorn
from fastapi import FastAPI
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class IdleStream(Response):
    def __init__(self) -> None:
        self.status_code = 200
        self.media_type = "text/event-stream"
        self.background = None
        self.init_headers({"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": b"retry: 2000\n\n", "more_body": True})
        gone = asyncio.get_running_loop().create_future()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set_result(None)

        watcher = asyncio.create_task(watch())
        try:
            await gone
        finally:
            watcher.cancel()


def build() -> FastAPI:
    app = FastAPI()

    @app.get("/t/{task_id}")
    async def events(task_id: str) -> Response:
        return IdleStream()

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nats")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvicorn.run(build(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False, backlog=8192)


if __name__ == "__main__":
    main()
