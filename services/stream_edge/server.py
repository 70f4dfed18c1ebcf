"""uvicorn's Server, taught two things about the edge: say `ready` once listening, and end streams on SIGTERM.

uvicorn's own shutdown closes the listeners, then waits for open connections to finish before it runs the
lifespan shutdown — but an event stream never finishes on its own. So `shutdown()` drains the hub (which ends
every stream within the grace period, clients resume elsewhere with Last-Event-ID) at the same time as uvicorn
waits for the connections; the lifespan then finds the hub already stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from types import FrameType

import uvicorn
from fastapi import FastAPI

from stream_edge.runtime import EdgeRuntime

__all__ = ["EdgeServer"]

log = logging.getLogger(__name__)


class EdgeServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, *, handle_signals: bool = True) -> None:
        super().__init__(config)
        self.app = app
        self.handle_signals = handle_signals

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        for server in getattr(self, "servers", []):
            for sock in server.sockets or ():
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    return int(sock.getsockname()[1])
        return int(self.config.port)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if getattr(self.app.state, "startup_error", None) is not None:
            self.should_exit = True  # already said in one line by the lifespan
            return
        if self.started and not self.should_exit:
            log.info("ready", extra={"url": f"http://{self.config.host}:{self.port}"})

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        stopping: asyncio.Event | None = getattr(self.app.state, "stopping", None)
        if stopping is not None:  # a start-up still waiting for provisioning ends too
            stopping.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        edge: EdgeRuntime | None = getattr(self.app.state, "edge", None)
        if edge is None:
            await super().shutdown(sockets)
            return
        await asyncio.gather(edge.drain(), super().shutdown(sockets))

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """In-process test servers leave the test runner's signal handlers alone."""
        if not self.handle_signals:
            yield
            return
        with super().capture_signals():
            yield
