"""The tool-runner's limits and settings, without NATS: deadlines, output truncation, a tool's own bugs."""

from __future__ import annotations

import asyncio
import math

import pytest

from sluice.errors import InvalidInput
from tool_runner.execution import Outcome, effective_deadline, execute, truncate
from tool_runner.settings import ToolRunnerSettings
from tool_runner.tools import Tool, get_tool


def test_truncation_keeps_whole_characters_within_the_limit_and_says_what_was_cut() -> None:
    assert truncate("short", 300) == "short"
    cut = truncate("€" * 200, 300)  # 600 bytes of 3-byte characters
    assert len(cut.encode()) <= 300
    body, marker = cut.split("\n…")
    assert set(body) == {"€"} and marker == "[output truncated by the tool-runner: 600 bytes, limit 300]"


@pytest.mark.parametrize(
    ("deadline", "expected"), [(0.5, 0.5), (99.0, 10.0), (0.0, 10.0), (-1.0, 10.0), (math.nan, 10.0)]
)
def test_the_deadline_is_the_tool_timeout_shortened_by_a_positive_caller_deadline(
    deadline: float, expected: float
) -> None:
    calculator = get_tool("calculator")
    assert calculator is not None and calculator.timeout_s == 10.0
    assert effective_deadline(calculator, deadline) == expected


def _broken(reason: str) -> str:
    """A tool with a bug."""
    if reason == "timeout":
        raise TimeoutError("its own socket timed out")
    raise RuntimeError("bug")


async def test_a_tool_s_own_bug_becomes_a_short_error_not_a_crash_and_not_a_timeout() -> None:
    tool = Tool.from_function(_broken, name="broken")
    for reason in ("bug", "timeout"):
        result = await execute(tool, "broken", f'{{"reason": "{reason}"}}', deadline_s=5)
        assert result.outcome is Outcome.CRASHED and result.error == "broken failed with an internal error"


async def test_a_cancelled_call_propagates_cancellation() -> None:
    slow_echo = get_tool("slow_echo")
    call = asyncio.create_task(execute(slow_echo, "slow_echo", '{"text": "x", "seconds": 5}', deadline_s=10))
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


def test_settings_read_their_variables_and_name_the_bad_one() -> None:
    assert ToolRunnerSettings.from_env({}) == ToolRunnerSettings()
    settings = ToolRunnerSettings.from_env(
        {
            "SLUICE_TOOL_CONCURRENCY": "3",
            "SLUICE_TOOL_METRICS_PORT": "0",
            "SLUICE_TOOL_MAX_OUTPUT_BYTES": "4096",
            "SLUICE_TOOL_GRACE_S": "2.5",
        }
    )
    assert (settings.concurrency, settings.metrics_port, settings.max_output_bytes, settings.grace_s) == (
        3, 0, 4096, 2.5,
    )  # fmt: skip
    for name, value in [
        ("SLUICE_TOOL_CONCURRENCY", "0"),
        ("SLUICE_TOOL_METRICS_PORT", "70000"),
        ("SLUICE_TOOL_MAX_OUTPUT_BYTES", "10"),
        ("SLUICE_TOOL_GRACE_S", "soon"),
    ]:
        with pytest.raises(InvalidInput, match=name):
            ToolRunnerSettings.from_env({name: value})
