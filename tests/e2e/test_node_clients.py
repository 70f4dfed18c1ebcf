"""The official JavaScript clients against Sluice: the AI SDK (`ai`) and AG-UI (`@ag-ui/client`), in Node.

The whole stack runs as processes (the session stack); each test starts two more edges of its own on the stack's
NATS, so a test can kill -9 the edge a client is reading from and resume on the other. The scripts in tests/node
assert with node:assert (a failure is a non-zero exit, its output shown here) and print one JSON line of what
they saw, which this module checks as well. Their dependencies are pinned in tests/node/package-lock.json and
installed by `make test` (`make node-deps`).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import system_deps
from support.edge import edge_process
from support.procs import ServiceProcess
from support.stack import Stack, stack

__all__ = ["stack"]  # the fixture, imported for pytest

pytestmark = [pytest.mark.slow, pytest.mark.needs_program("node"), pytest.mark.timeout(240)]

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
_SCRIPT_TIMEOUT_S = 180


@pytest.fixture
def two_edges(stack: Stack, tmp_path: Path) -> Iterator[tuple[tuple[ServiceProcess, str], tuple[ServiceProcess, str]]]:
    first, second = edge_process(tmp_path, stack.nats_url), edge_process(tmp_path, stack.nats_url)
    try:
        yield first, second
    finally:
        for process, _ in (first, second):
            process.kill()


def run_node(script: str, **env: str) -> dict[str, Any]:
    if not (NODE_DIR / "node_modules").is_dir():
        reason = "tests/node/node_modules is missing: `make node-deps` (part of `make test`) installs it"
        if system_deps.in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    node = system_deps.find("node")
    assert node is not None
    result = subprocess.run(
        [node, script],
        cwd=NODE_DIR,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=_SCRIPT_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"{script} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_ai_sdk_transport_two_messages_a_tool_part_and_reconnect_after_kill_9_on_the_other_edge(
    two_edges: tuple[tuple[ServiceProcess, str], tuple[ServiceProcess, str]],
) -> None:
    (first, url_a), (_, url_b) = two_edges
    assert first.proc is not None
    seen = run_node("ai_sdk_chat.mjs", EDGE_A=url_a, EDGE_B=url_b, EDGE_A_PID=str(first.proc.pid))
    assert not first.running, "the script killed the edge it was reading from"
    chunks = seen["chunks"]
    print("AI SDK chunk types seen:", json.dumps(chunks, sort_keys=True))
    print("AI SDK resume after kill -9:", json.dumps(seen["resume"], sort_keys=True))
    assert seen["resume"]["replayedChunks"] > seen["resume"]["chunksBeforeKill"] > 0  # a replay from the start
    assert chunks["start"] >= 4 and chunks["finish"] >= 4  # 3 answers, one of them read twice (+ the resume)
    assert chunks["tool-input-available"] >= 1 and chunks["tool-output-available"] >= 1
    assert chunks["text-delta"] > chunks["text-start"]
    assert "tool-calculator" not in seen["partsResumed"]  # the third answer needed no tool


def test_ag_ui_http_agent_runs_a_tool_call_and_a_crew_and_its_verifier_accepts_every_stream(
    two_edges: tuple[tuple[ServiceProcess, str], tuple[ServiceProcess, str]],
) -> None:
    (_, url_a), (_, url_b) = two_edges
    seen = run_node("ag_ui_agent.mjs", EDGE_A=url_a, EDGE_B=url_b)
    print("AG-UI event types seen:", json.dumps(seen["events"], sort_keys=True))
    events = seen["events"]
    assert events["RUN_STARTED"] == events["RUN_FINISHED"] == 2  # the tool call and the crew
    assert events["STEP_STARTED"] == events["STEP_FINISHED"] >= 4  # the four stages of dev-team
    assert events["TOOL_CALL_START"] == events["TOOL_CALL_END"] >= 1 and events["TOOL_CALL_RESULT"] >= 1
    assert seen["resumedVerified"] >= 1
