"""Running the demo model server: ``main()`` for ``sluice demo-llm``; :func:`serve`, :func:`running_server` and
:class:`DemoServer` to embed it (tests run it on port 0 and wait for :attr:`DemoServer.ready`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn

from demo_llm.app import create_app
from demo_llm.settings import DemoLLMSettings
from sluice.errors import SluiceError
from sluice.logs import setup_logging
from sluice.telemetry import setup_telemetry

__all__ = ["DemoServer", "build_server", "main", "running_server", "serve"]

logger = logging.getLogger(__name__)

SERVICE_NAME = "demo-llm"
SHUTDOWN_GRACE_S = 5


class DemoServer(uvicorn.Server):
    """A uvicorn server that sets :attr:`ready` once it listens, and tells where (:attr:`base_url`)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            logger.info("ready", extra={"url": self.base_url})
            self.ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Stop on SIGINT/SIGTERM as uvicorn does, then return normally instead of re-raising the signal,
        so ``sluice demo-llm`` exits 0 after a graceful stop like every other Sluice service."""
        with super().capture_signals():
            try:
                yield
            finally:
                captured = getattr(self, "_captured_signals", None)
                if isinstance(captured, list):
                    captured.clear()

    @property
    def port(self) -> int:
        """The bound port (the real one when configured with port 0); only after :attr:`ready`."""
        return int(self.servers[0].sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}/v1"


def build_server(settings: DemoLLMSettings, *, log_level: str | None = None) -> DemoServer:
    """A demo model server, not yet started. Logging is left to the process (uvicorn's records propagate)."""
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=(log_level or settings.log_level).lower(),
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    return DemoServer(config)


async def serve(settings: DemoLLMSettings) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn then drains open responses) or until cancelled."""
    await build_server(settings).serve()


@contextlib.asynccontextmanager
async def running_server(
    settings: DemoLLMSettings, *, log_level: str | None = None, startup_timeout_s: float = 10.0
) -> AsyncIterator[DemoServer]:
    """A demo model server serving in this event loop for the ``async with`` block; stopped (drained) on exit.

    Use ``DemoLLMSettings(port=0)`` for a free port; ``server.base_url`` is the OpenAI base URL."""
    server = build_server(settings, log_level=log_level)
    serving = asyncio.create_task(server.serve(), name="demo-llm-serve")
    try:
        ready = asyncio.create_task(server.ready.wait(), name="demo-llm-ready")
        try:
            async with asyncio.timeout(startup_timeout_s):
                await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not server.started:
            await serving  # re-raises what stopped it
            raise RuntimeError("the demo model server stopped before it was ready")
        yield server
    finally:
        server.should_exit = True
        await serving


def main() -> None:
    """Entry point: read the environment once, set up logging and telemetry, serve until told to stop."""
    try:
        settings = DemoLLMSettings.from_env()
    except SluiceError as exc:
        raise SystemExit(f"sluice {SERVICE_NAME}: {exc.message}") from None
    setup_logging(SERVICE_NAME, settings.log_level, settings.log_format)
    telemetry = setup_telemetry(SERVICE_NAME)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(settings))
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
