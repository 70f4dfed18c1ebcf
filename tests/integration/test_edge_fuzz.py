"""Property-based fuzzing of the whole HTTP API from its own /openapi.json (schemathesis): no input is a 500.

Positive and negative cases for every operation, a few examples each so the run stays well under a minute. (The
events route is fuzzed too: generated ids name no task, so it answers 400/404 before any stream. The coverage
phase is left out: it takes ~40 s here, and with concurrent workers schemathesis 4.32 crashes in it.)
The edge runs in-process on a real socket; schemathesis runs as its CLI in a subprocess so its synchronous
client does not block the event loop the edge serves from.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from sluice.bus import Bus
from sluice.config import CommonConfig
from support.edge import running_edge

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
# Conversations and the web protocols: a valid POST starts a task and streams it to its end (no runner here: never),
# so these are fuzzed apart, with invalid requests only (their valid ones: tests/integration/test_chat_protocols.py).
CONVERSATIONS = "^(GET|POST) /v1/(chat|ag-ui|contexts)"


async def schemathesis(url: str, report_dir: Path, *options: str) -> None:
    """One schemathesis run of the edge's schema; it must find no server error."""
    process = await asyncio.create_subprocess_exec(
        SCHEMATHESIS, "run", f"{url}/openapi.json",
        "--checks", "not_a_server_error",
        "--phases", "examples,fuzzing",
        "--seed", "1",
        "--workers", "1",
        "--request-timeout", "5",
        "--suppress-health-check", "all",
        "--report", "junit", "--report-dir", str(report_dir),
        *options,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=report_dir,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=110)
    assert process.returncode == 0, output.decode(errors="replace")[-6000:]


@pytest.mark.slow  # schemathesis runs as a process
@pytest.mark.timeout(240)  # two runs
async def test_fuzzing_the_api_from_its_schema_finds_no_server_error(
    common_config: CommonConfig, bus: Bus, tmp_path: Path
) -> None:
    async with running_edge(common_config, bus) as edge:
        await schemathesis(edge.url, tmp_path, "--max-examples", "40", "--exclude-name-regex", CONVERSATIONS)
        await schemathesis(
            edge.url, tmp_path, "--mode", "negative", "--max-examples", "20", "--include-name-regex", CONVERSATIONS
        )
        ok = await edge.client.post("/v1/tasks", json={"input": "still serving"})
        assert ok.status_code == 201
