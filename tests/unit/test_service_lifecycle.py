"""`run_service`: what a service process does when it cannot start."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from sluice import service
from sluice.bus import Bus
from sluice.config import CommonConfig
from sluice.errors import Unavailable


async def _unreachable(*args: Any, **kwargs: Any) -> Bus:
    raise Unavailable("nats_unavailable", "cannot reach NATS at nats://127.0.0.1:1: connection refused")


async def _never_runs(bus: Bus, stopping: Any) -> None:
    raise AssertionError("main must not run without NATS")


async def test_nats_that_never_answers_is_raised_as_itself_not_inside_an_exception_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "connect", _unreachable)
    with pytest.raises(Unavailable, match="cannot reach NATS"):
        await service.serve_until_signal("test-service", CommonConfig(), _never_runs)


def test_a_service_that_cannot_start_logs_why_in_one_line_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(service, "connect", _unreachable)
    # The process-wide logging and tracer provider are left alone: other tests in this process rely on them.
    monkeypatch.setattr(service, "setup_logging", lambda *args: None)
    monkeypatch.setattr(service, "setup_telemetry", lambda name: SimpleNamespace(shutdown=lambda: None))
    with caplog.at_level(logging.ERROR, logger="sluice.service"), pytest.raises(SystemExit) as exited:
        service.run_service("test-service", CommonConfig(), _never_runs)
    assert exited.value.code == 1
    assert [r.getMessage() for r in caplog.records] == [
        "test-service stopped: cannot reach NATS at nats://127.0.0.1:1: connection refused"
    ]
