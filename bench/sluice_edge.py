"""The Sluice streaming engine behind a minimal FastAPI route, for the benchmark (same framework and server as the
baseline, so the comparison is engine against engine). `python -m bench.sluice_edge --port P --nats URL`."""

from __future__ import annotations

import argparse
import resource
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from starlette.responses import PlainTextResponse, Response

from sluice.bus import connect
from sluice.config import CommonConfig
from stream_edge.streaming import StreamHub, StreamRequest, StreamSettings, encodings


def build(nats_url: str, profile: str | None = None) -> FastAPI:
    state: dict[str, StreamHub] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The orchestrator provisioned the streams (and raised the stream's consumer limit, which provisioning
        # would reset): this process only connects, as the baseline does.
        bus = await connect(CommonConfig(nats_urls=(nats_url,)), name="bench-sluice-edge")
        hub = StreamHub(bus, StreamSettings(max_streams=100_000))
        await hub.start()
        state["hub"] = hub
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        yield
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        await hub.stop()
        await bus.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/t/{task_id}")
    async def events(task_id: str, after: int = 0, follow: bool = True, format: str = "sse") -> Response:
        encoding = encodings.NDJSON if format == "ndjson" else encodings.SSE
        return await state["hub"].open(StreamRequest(task_id, encoding, after, follow))

    @app.get("/stats")
    async def stats() -> dict[str, int | float]:
        return state["hub"].stats

    @app.get("/ready")
    async def ready() -> Response:
        return PlainTextResponse("ok")

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nats", required=True)
    parser.add_argument("--profile", help="write a cProfile of the run to this file (for engine work)")
    parser.add_argument("--no-pull", action="store_true", help="catch up by direct get only (for comparison)")
    args = parser.parse_args()
    if args.no_pull:
        from stream_edge.streaming import reader

        reader.BULK_AFTER = 1 << 62
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvicorn.run(
        build(args.nats, args.profile),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        backlog=8192,
    )


if __name__ == "__main__":
    main()
