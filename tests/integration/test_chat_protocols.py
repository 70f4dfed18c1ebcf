"""`/v1/chat` (AI SDK UI message stream) and `/v1/ag-ui` over real HTTP: routes, resume, and bad input.

The official JavaScript clients drive the same routes in tests/node (test_node_clients.py); here the frames are
read as bytes, to check ids, resume positions and that a refused request publishes nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from sluice.eventlog import read_log
from sluice.events import TaskSubmitted
from stream_edge.protocols import ai_sdk
from support.edge import EdgeUnderTest, published, running_edge
from support.runners import RunnerStack, runner_stack, wait_for_end

pytestmark = pytest.mark.timeout(90)


@dataclass
class Sluice:
    stack: RunnerStack
    edge: EdgeUnderTest
    other: EdgeUnderTest


@pytest.fixture(scope="module")
async def sluice(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sluice]:
    root: Path = tmp_path_factory.mktemp("chat")
    async with (
        runner_stack(root) as stack,
        running_edge(stack.common, stack.bus) as edge,
        running_edge(stack.common, stack.bus) as other,
    ):
        yield Sluice(stack, edge, other)


@dataclass
class Frame:
    id: str | None
    data: str

    @property
    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Read:
    status: int
    headers: httpx.Headers
    frames: list[Frame] = field(default_factory=list)

    @property
    def chunks(self) -> list[Any]:
        return [f.json for f in self.frames if f.data != "[DONE]"]


def _frame(block: str) -> Frame | None:
    event_id, data = None, []
    for line in block.split("\n"):
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data.append(line[6:])
    return Frame(event_id, "\n".join(data)) if data else None


async def read_sse(
    client: httpx.AsyncClient, method: str, url: str, *, stop_after: int | None = None, **kw: Any
) -> Read:
    """Reads a protocol's SSE response to its end (or until `stop_after` frames, then drops the connection)."""
    async with client.stream(method, url, timeout=30.0, **kw) as response:
        read = Read(response.status_code, response.headers)
        if response.status_code != 200:
            await response.aread()
            return read
        buffer = ""
        async for text in response.aiter_text():
            buffer += text
            *blocks, buffer = buffer.split("\n\n")
            for block in blocks:
                frame = _frame(block)
                if frame is not None:
                    read.frames.append(frame)
                    if stop_after is not None and len(read.frames) >= stop_after:
                        return read
        return read


def chat_body(chat_id: str, text: str, **extra: Any) -> dict[str, Any]:
    message = {"id": uuid.uuid4().hex, "role": "user", "parts": [{"type": "text", "text": text}]}
    return {"id": chat_id, "messages": [message], "trigger": "submit-message", "messageId": None, **extra}


def run_input(thread_id: str, run_id: str, text: str, **props: Any) -> dict[str, Any]:
    return {
        "threadId": thread_id, "runId": run_id, "state": {}, "tools": [], "context": [],
        "messages": [{"id": uuid.uuid4().hex, "role": "user", "content": text}], "forwardedProps": props,
    }  # fmt: skip


# ---------------------------------------------------------------- AI SDK


async def test_a_chat_message_streams_its_answer_as_ui_message_chunks_each_event_with_its_id(sluice: Sluice) -> None:
    chat = "chat" + uuid.uuid4().hex[:16]
    got = await read_sse(sluice.edge.client, "POST", "/v1/chat", json=chat_body(chat, "What is 17*23?"))
    assert got.status == 200 and got.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert got.headers["content-type"].startswith("text/event-stream")
    types = [c["type"] for c in got.chunks]
    assert types[0] == "start" and types[-1] == "finish" and got.frames[-1].data == "[DONE]"
    assert {"tool-input-available", "tool-output-available", "text-delta"} <= set(types)
    tool = next(c for c in got.chunks if c["type"] == "tool-output-available")
    assert "391" in json.dumps(tool["output"])
    ids = [int(f.id) for f in got.frames if f.id is not None]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    task_id = got.headers["x-sluice-task-id"]
    assert got.chunks[0]["messageId"] == task_id and got.chunks[0]["messageMetadata"]["contextId"] == chat

    follow = await read_sse(sluice.edge.client, "POST", "/v1/chat", json=chat_body(chat, "And 2+2?"))
    second = follow.headers["x-sluice-task-id"]
    submitted = (await wait_for_end(sluice.stack.bus, second))[0]
    assert isinstance(submitted, TaskSubmitted)
    assert submitted.data.history[0].content == "What is 17*23?"
    assert (await sluice.edge.client.get(f"/v1/chat/{chat}/stream")).status_code == 204  # nothing running


async def test_a_resume_with_last_event_id_on_the_other_replica_sends_exactly_the_rest(sluice: Sluice) -> None:
    chat = "chat" + uuid.uuid4().hex[:16]
    body = chat_body(chat, "Tell me about streams [fault:slow:30]")
    first = await read_sse(sluice.edge.client, "POST", "/v1/chat", json=body, stop_after=6)
    task_id = first.headers["x-sluice-task-id"]
    # What the client holds: every frame up to the last one that carries an id (later ones are of an event it has
    # not received whole, and come again).
    last_at = max(i for i, f in enumerate(first.frames) if f.id is not None)
    seen, last = first.frames[: last_at + 1], first.frames[last_at].id
    assert last is not None
    rest = await read_sse(sluice.other.client, "GET", f"/v1/chat/{chat}/stream", headers={"Last-Event-ID": last})
    assert rest.status == 200 and rest.frames[-1].data == "[DONE]"

    record = (await sluice.edge.client.get(f"/v1/tasks/{task_id}")).json()
    assert record["state"] == "completed"
    whole = b"".join([ai_sdk.encode_event(e.seq, e.decode()) async for e in read_log(sluice.stack.bus, task_id)])
    whole += ai_sdk.ENCODING.trailer
    expected = [f for f in (_frame(b) for b in whole.decode().split("\n\n")) if f is not None]
    assert [(f.id, f.data) for f in [*seen, *rest.frames]] == [(f.id, f.data) for f in expected]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"id": "chat-0000000001", "messages": []}, 422),
        ({"id": "chat-0000000001"}, 422),
        (
            {
                "id": "chat-0000000001",
                "messages": [{"id": "a", "role": "assistant", "parts": [{"type": "text", "text": "x"}]}],
            },
            400,
        ),
        (
            {
                "id": "chat-0000000001",
                "messages": [{"id": "a", "role": "user", "parts": [{"type": "telepathy", "text": "x"}]}],
            },
            422,
        ),
        (
            {
                "id": "chat-0000000001",
                "messages": [{"id": "a", "role": "user", "parts": [{"type": "file", "url": "x"}]}],
            },
            400,
        ),
        ({"id": "bad id!", "messages": [{"id": "a", "role": "user", "parts": [{"type": "text", "text": "x"}]}]}, 422),
        (
            {
                "id": "chat-0000000001",
                "messages": [
                    {"id": str(i), "role": "user", "parts": [{"type": "text", "text": "x"}]} for i in range(10_000)
                ],
            },
            413,
        ),
    ],
    ids=[
        "no-messages",
        "messages-missing",
        "last-not-user",
        "unknown-part",
        "no-text",
        "bad-chat-id",
        "10000-messages",
    ],
)
async def test_a_bad_chat_body_is_a_clear_4xx_and_publishes_nothing(
    sluice: Sluice, body: dict[str, Any], status: int
) -> None:
    before = await published(sluice.stack.bus)
    response = await sluice.edge.client.post("/v1/chat", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"]
    assert await published(sluice.stack.bus) == before


async def test_too_many_messages_within_the_body_limit_is_a_422(sluice: Sluice) -> None:
    messages = [{"id": str(i), "role": "user", "parts": []} for i in range(1001)]
    response = await sluice.edge.client.post("/v1/chat", json={"id": "chat-0000000002", "messages": messages})
    assert response.status_code == 422


async def test_resuming_an_unknown_chat_is_204_and_a_malformed_one_400(sluice: Sluice) -> None:
    assert (await sluice.edge.client.get("/v1/chat/never-seen-chat-0001/stream")).status_code == 204
    assert (await sluice.edge.client.get("/v1/chat/bad%2Aid%2A%2A/stream")).status_code == 400


# ---------------------------------------------------------------- AG-UI


async def test_an_ag_ui_run_streams_from_run_started_to_run_finished_and_resumes_by_run_id(sluice: Sluice) -> None:
    thread, run = str(uuid.uuid4()), str(uuid.uuid4())
    got = await read_sse(sluice.edge.client, "POST", "/v1/ag-ui", json=run_input(thread, run, "What is 17*23?"))
    assert got.status == 200
    types = [c["type"] for c in got.chunks]
    assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED"
    assert got.chunks[0]["threadId"] == thread and got.chunks[0]["runId"] == run
    assert {"TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_RESULT", "TEXT_MESSAGE_CONTENT"} <= set(
        types
    )
    ids = [f.id for f in got.frames if f.id is not None]
    middle = ids[len(ids) // 2]
    rest = await read_sse(sluice.other.client, "GET", f"/v1/ag-ui/runs/{run}/events", headers={"Last-Event-ID": middle})
    after = [f.data for f in got.frames][[f.id for f in got.frames].index(middle) + 1 :]
    assert [f.data for f in rest.frames] == after
    again = await read_sse(sluice.other.client, "POST", "/v1/ag-ui", json=run_input(thread, run, "What is 17*23?"))
    assert [f.data for f in again.frames] == [f.data for f in got.frames]  # the same run: the same task


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (run_input("thread-0000000001", "bad run id!", "hi"), 400),
        (run_input("bad thread!", str(uuid.uuid4()), "hi"), 400),
        ({**run_input("thread-0000000001", str(uuid.uuid4()), "hi"), "messages": []}, 400),
        (
            {
                **run_input("thread-0000000001", str(uuid.uuid4()), "hi"),
                "messages": [{"id": "a", "role": "assistant", "content": "x"}],
            },
            400,
        ),
        ({"threadId": "thread-0000000001"}, 422),
    ],
    ids=["bad-run-id", "bad-thread-id", "no-messages", "last-not-user", "not-a-run-input"],
)
async def test_a_bad_ag_ui_input_is_a_clear_4xx_and_publishes_nothing(
    sluice: Sluice, body: dict[str, Any], status: int
) -> None:
    before = await published(sluice.stack.bus)
    response = await sluice.edge.client.post("/v1/ag-ui", json=body)
    assert response.status_code == status, response.text
    assert await published(sluice.stack.bus) == before


async def test_resuming_an_unknown_run_is_404(sluice: Sluice) -> None:
    assert (await sluice.edge.client.get(f"/v1/ag-ui/runs/{uuid.uuid4()}/events")).status_code == 404
    assert (await sluice.edge.client.get("/v1/ag-ui/runs/bad%2Aid/events")).status_code == 400
