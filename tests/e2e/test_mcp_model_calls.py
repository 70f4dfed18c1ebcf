"""A model calls MCP tools, end to end: the edge, an agent-runner, a tool-runner with `SLUICE_MCP_SERVERS` and the
demo model as processes, and two real MCP servers behind the tool-runner — the one written with the `mcp` SDK's
server side (tests/support/mcp_server.py) and the reference `@modelcontextprotocol/server-everything` (node).

For each, a task on an agent whose tools are the server's (`<server>__*`) asks the demo model to `call tool
<server>__<tool> with {...}`; the log shows the call (`tool.started`), the server's result (`tool.completed`), the
model called again with it (`llm.started` of step 2) and `task.completed` whose answer quotes the result.
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.stack import Stack, running_stack
from support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

TESTS = Path(__file__).resolve().parents[1]
EVERYTHING = TESTS / "mcp_everything" / "node_modules" / ".bin" / "mcp-server-everything"

AGENTS = """
[agents.mcp-demo]
instructions = "You are a test agent with the tools of the SDK-written MCP server."
tools = ["demo__*"]

[agents.mcp-everything]
instructions = "You are a test agent with the tools of the reference MCP server."
tools = ["everything__*"]
"""


def mcp_servers() -> dict[str, Any]:
    """The SDK-written server always; the reference one where node is (its test is marked and skipped without)."""
    servers: dict[str, Any] = {
        "demo": {"command": sys.executable, "args": [str(TESTS / "support" / "mcp_server.py")], "timeout_s": 20}
    }
    node = shutil.which("node")
    if node is not None:
        servers["everything"] = {"command": node, "args": [str(EVERYTHING), "stdio"], "init_timeout_s": 60}
    return {"mcpServers": servers}


@pytest.fixture(scope="module")
def mcp_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("mcp-stack")
    (root / "agents.toml").write_text(AGENTS, encoding="utf-8")
    (root / "mcp.json").write_text(json.dumps(mcp_servers()), encoding="utf-8")
    service_env = {
        "tool-runner": {"SLUICE_MCP_SERVERS": str(root / "mcp.json")},
        "agent-runner": {"SLUICE_AGENTS_FILE": str(root / "agents.toml")},
    }
    with running_stack(root, service_env=service_env) as started:
        yield started


def served(stack: Stack, agent: str, tool: str) -> bool:
    """The agent and the tool are in the catalog with a live runner each (the model's tool list is built from it)."""
    agents = httpx.get(f"{stack.edge_url}/v1/agents", timeout=10).json()["agents"]
    tools = httpx.get(f"{stack.edge_url}/v1/tools", timeout=10).json()["tools"]
    return any(a["name"] == agent and a["runners"] for a in agents) and any(
        t["name"] == tool and t["runners"] for t in tools
    )


def data_of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == kind]


@pytest.mark.parametrize(
    ("agent", "tool", "arguments", "result_has"),
    [
        pytest.param("mcp-demo", "demo__add", {"a": 2, "b": 40}, '{"result":42}', id="sdk-server"),
        pytest.param("mcp-everything", "everything__get-sum", {"a": 2, "b": 40}, "42", id="reference-server",
                     marks=pytest.mark.needs_program("node")),
    ],
)  # fmt: skip
def test_a_model_call_to_an_mcp_tool_completes_through_the_log(
    mcp_stack: Stack, agent: str, tool: str, arguments: dict[str, int], result_has: str
) -> None:
    if tool.startswith("everything__") and not EVERYTHING.exists():
        pytest.fail("tests/mcp_everything/node_modules is missing: run `make node-deps` (make test does)")
    wait_until(lambda: served(mcp_stack, agent, tool), timeout_s=90, what=f"{agent} and {tool} in the catalog")
    text = f"call tool {tool} with {json.dumps(arguments)}. ({uuid.uuid4().hex[:8]})"
    created = httpx.post(f"{mcp_stack.edge_url}/v1/tasks", json={"input": text, "agent": agent}, timeout=10)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]

    def ended() -> list[dict[str, Any]] | None:
        events = mcp_stack.task_log(task_id)
        return events if events and events[-1]["type"] in ("task.completed", "task.failed", "task.canceled") else None

    events = wait_until(ended, timeout_s=90, what=f"task {task_id} to end")
    types = [e["type"] for e in events]
    assert types[-1] == "task.completed", types
    [started] = data_of(events, "tool.started")
    [done] = data_of(events, "tool.completed")
    assert started["name"] == done["name"] == tool and json.loads(started["arguments"]) == arguments, started
    assert done["ok"] is True and result_has in done["result"], done.get("error")
    assert done["call_id"] == started["call_id"]
    steps = [d["step"] for d in data_of(events, "llm.started")]
    assert steps == [1, 2], steps  # the model was called again, with the result
    last_model_call = max(i for i, kind in enumerate(types) if kind == "llm.started")
    assert types.index("tool.completed") < last_model_call, types
    [answer] = data_of(events, "task.completed")
    assert done["result"] in answer["output"], answer  # the answer quotes the server's result
