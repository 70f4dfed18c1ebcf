"""A2A 1.0 on stream-edge, driven by the official a2a-sdk client over both bindings (JSON-RPC, HTTP+JSON).

Real services in this process: nats-server (private to the module), the edge on a real socket, the agent-runner
worker, the demo model, and a tool-runner stand-in that runs the real tools. A second edge app on the same NATS
plays the "other replica".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Role,
    SendMessageConfiguration,
    SubscribeToTaskRequest,
    TaskState,
)
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError, UnsupportedOperationError
from google.protobuf.json_format import MessageToDict

from sluice.eventlog import read_events
from sluice.events import TaskSubmitted
from sluice.ids import new_task_id
from stream_edge.a2a.mapping import REPLAY_EXTENSION
from support.a2a import BINDINGS, Collected, a2a_client, artifact_text, card_of, collect, message, send
from support.edge import EdgeUnderTest, running_edge
from support.runners import RunnerStack, runner_stack
from support.waiting import eventually

pytestmark = pytest.mark.timeout(90)

SLOW = "[fault:slow:40]"  # the demo model waits 40 ms between chunks: a task that stays mid-answer ~2.5 s


@dataclass
class Sluice:
    stack: RunnerStack
    edge: EdgeUnderTest
    other: EdgeUnderTest  # a second replica

    @property
    def url(self) -> str:
        return self.edge.url


@pytest.fixture(scope="module")
async def sluice(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sluice]:
    root: Path = tmp_path_factory.mktemp("a2a")
    async with (
        runner_stack(root) as stack,
        running_edge(stack.common, stack.bus) as edge,
        running_edge(stack.common, stack.bus) as other,
    ):
        yield Sluice(stack, edge, other)


@pytest.fixture(params=BINDINGS)
def binding(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def first_chunk_then(stream: AsyncIterator, got: Collected) -> None:  # type: ignore[type-arg]
    """Reads a stream into `got` until the first artifact chunk (the task is then mid-answer)."""
    async for response in stream:
        got.responses.append(response)
        if response.HasField("artifact_update"):
            return


# ---------------------------------------------------------------- discovery


async def test_the_card_declares_both_bindings_streaming_replay_and_one_tagged_skill_per_agent(sluice: Sluice) -> None:
    card = await card_of(sluice.url)
    assert card.name and card.description and card.version
    current = {(i.protocol_binding, i.url) for i in card.supported_interfaces if i.protocol_version == "1.0"}
    assert current == {("JSONRPC", f"{sluice.url}/a2a"), ("HTTP+JSON", f"{sluice.url}/a2a/rest")}
    assert card.capabilities.streaming
    assert [e.uri for e in card.capabilities.extensions] == [REPLAY_EXTENSION]
    assert card.capabilities.extensions[0].description
    assert "text/plain" in card.default_input_modes and "text/plain" in card.default_output_modes
    skills = {s.id: s for s in card.skills}
    assert {"assistant", "dev-team"} <= set(skills)
    assert all(s.tags for s in card.skills)


async def test_card_urls_come_from_the_public_url_setting(sluice: Sluice) -> None:
    async with running_edge(sluice.stack.common, sluice.stack.bus, public_url="https://sluice.example/") as edge:
        card = await card_of(edge.url)
    assert {i.url for i in card.supported_interfaces} == {
        "https://sluice.example/a2a",
        "https://sluice.example/a2a/rest",
    }


# ---------------------------------------------------------------- sending


async def test_send_message_blocks_until_the_task_completes(sluice: Sluice, binding: str) -> None:
    async with a2a_client(sluice.url, binding, streaming=False) as client:
        got = await collect(client.send_message(send(message("What is 17 * 23?"))))
    assert got.kinds == ["task"]
    task = got.responses[0].task
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert "391" in artifact_text(task)
    assert task.history[0].role == Role.ROLE_USER and task.history[0].parts[0].text == "What is 17 * 23?"


async def test_return_immediately_answers_at_once_and_get_task_then_sees_the_task_complete(
    sluice: Sluice, binding: str
) -> None:
    async with a2a_client(sluice.url, binding, streaming=False, polling=True) as client:
        got = await collect(client.send_message(send(message(f"Tell me something {SLOW}"))))
        task = got.responses[0].task
        assert task.status.state in (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING)

        async def completed() -> object:
            current = await client.get_task(GetTaskRequest(id=task.id))
            return current if current.status.state == TaskState.TASK_STATE_COMPLETED else None

        done = await eventually(completed, timeout_s=30, what="the task to complete")
    assert artifact_text(done)  # type: ignore[attr-defined]


async def test_a_streamed_message_goes_from_the_submitted_task_to_completed_with_artifact_text(
    sluice: Sluice, binding: str
) -> None:
    async with a2a_client(sluice.url, binding) as client:
        got = await collect(client.send_message(send(message("What is 6 * 7?"))))
    assert got.kinds[0] == "task"
    assert got.responses[0].task.status.state == TaskState.TASK_STATE_SUBMITTED
    assert got.states[-1] == TaskState.TASK_STATE_COMPLETED
    assert "artifact_update" in got.kinds
    assert got.responses[-1].status_update.task_id == got.task_id
    assert "42" in got.text
    tool_messages = [
        r.status_update.status.message.parts[0].text
        for r in got.responses
        if r.HasField("status_update") and r.status_update.status.message.parts
    ]
    assert any(text.startswith("Calling calculator(") for text in tool_messages)
    last_chunks = [
        r.artifact_update for r in got.responses if r.HasField("artifact_update") and r.artifact_update.last_chunk
    ]
    assert len(last_chunks) == 1


async def test_a_question_ends_the_stream_and_a_follow_up_on_the_same_task_completes_it(
    sluice: Sluice, binding: str
) -> None:
    async with a2a_client(sluice.url, binding) as client:
        first = await collect(client.send_message(send(message("Ask me which city I live in."))))
        assert first.states[-1] == TaskState.TASK_STATE_INPUT_REQUIRED
        question = first.responses[-1].status_update.status.message
        assert question.role == Role.ROLE_AGENT and "?" in question.parts[0].text

        answer = message("Paris", task_id=first.task_id, context_id=first.context_id)
        second = await collect(client.send_message(send(answer)))
        assert second.kinds[0] == "task" and second.task_id == first.task_id
        assert second.context_id == first.context_id
        assert second.responses[0].task.status.state == TaskState.TASK_STATE_WORKING
        assert second.states[-1] == TaskState.TASK_STATE_COMPLETED
        assert "Paris" in second.text

        task = await client.get_task(GetTaskRequest(id=first.task_id))
        user_said = [m.parts[0].text for m in task.history if m.role == Role.ROLE_USER]
        assert user_said == ["Ask me which city I live in.", "Paris"]
        assert task.status.state == TaskState.TASK_STATE_COMPLETED

        short = await client.get_task(GetTaskRequest(id=first.task_id, history_length=1))
        assert len(short.history) == 1 and short.history[0].message_id == task.history[-1].message_id


async def test_a_message_to_a_finished_task_is_refused_and_a_new_one_in_its_context_carries_the_conversation(
    sluice: Sluice, binding: str
) -> None:
    async with a2a_client(sluice.url, binding, streaming=False) as client:
        first = (await collect(client.send_message(send(message("What is 2 + 2?"))))).responses[0].task
        assert first.status.state == TaskState.TASK_STATE_COMPLETED
        with pytest.raises(UnsupportedOperationError):
            await collect(client.send_message(send(message("And 3 + 3?", task_id=first.id))))
        follow = message("And what is 3 + 3?", context_id=first.context_id)
        second = (await collect(client.send_message(send(follow)))).responses[0].task
    assert second.id != first.id and second.context_id == first.context_id
    submitted = (await read_events(sluice.stack.bus, second.id))[0]
    assert isinstance(submitted, TaskSubmitted)
    assert [m.content for m in submitted.data.history][:1] == ["What is 2 + 2?"]
    assert submitted.data.context_id == first.context_id


# ---------------------------------------------------------------- tasks


async def test_list_tasks_filters_by_context_and_pages_newest_first(sluice: Sluice, binding: str) -> None:
    context = f"ctx-{new_task_id()}"
    async with a2a_client(sluice.url, binding, streaming=False) as client:
        ids = []
        for n in range(3):
            got = await collect(client.send_message(send(message(f"What is {n} + 1?", context_id=context))))
            ids.append(got.responses[0].task.id)
        page = await client.list_tasks(ListTasksRequest(context_id=context, page_size=2))
        assert [t.id for t in page.tasks] == [ids[2], ids[1]]
        assert page.total_size == 3 and page.next_page_token
        assert all(t.status.state == TaskState.TASK_STATE_COMPLETED for t in page.tasks)
        rest = await client.list_tasks(
            ListTasksRequest(context_id=context, page_size=2, page_token=page.next_page_token)
        )
        assert [t.id for t in rest.tasks] == [ids[0]] and not rest.next_page_token
        full = await client.list_tasks(ListTasksRequest(context_id=context, include_artifacts=True, history_length=1))
        assert all(artifact_text(t) and len(t.history) == 1 for t in full.tasks)


async def test_get_task_of_an_unknown_id_is_task_not_found(sluice: Sluice, binding: str) -> None:
    async with a2a_client(sluice.url, binding) as client:
        with pytest.raises(TaskNotFoundError):
            await client.get_task(GetTaskRequest(id=new_task_id()))


async def test_cancel_mid_stream_ends_the_stream_canceled_and_cancelling_again_is_not_cancelable(
    sluice: Sluice, binding: str
) -> None:
    async with a2a_client(sluice.url, binding) as client:
        got = Collected()
        stream = client.send_message(send(message(f"Tell me a long story {SLOW}")))
        await first_chunk_then(stream, got)
        canceled = await client.cancel_task(CancelTaskRequest(id=got.task_id))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        async for response in stream:
            got.responses.append(response)
        assert got.states[-1] == TaskState.TASK_STATE_CANCELED
        with pytest.raises(TaskNotCancelableError):
            await client.cancel_task(CancelTaskRequest(id=got.task_id))


async def test_subscribing_on_another_replica_mid_stream_sends_the_snapshot_then_the_rest(
    sluice: Sluice, binding: str
) -> None:
    async with a2a_client(sluice.url, binding) as client, a2a_client(sluice.other.url, binding) as other:
        got = Collected()
        stream = client.send_message(send(message(f"Tell me a long story {SLOW}")))
        await first_chunk_then(stream, got)
        subscribed = await collect(other.subscribe(SubscribeToTaskRequest(id=got.task_id)))
        async for response in stream:
            got.responses.append(response)
    assert subscribed.kinds[0] == "task"
    snapshot = subscribed.responses[0].task
    assert snapshot.id == got.task_id and snapshot.status.state == TaskState.TASK_STATE_WORKING
    assert subscribed.states[-1] == TaskState.TASK_STATE_COMPLETED
    # Snapshot + what followed it adds up to the same answer as the original stream.
    assert subscribed.text == got.text and got.text
    # What the subscriber got after its snapshot is exactly the tail of the original stream.
    tail = [MessageToDict(r) for r in subscribed.responses[1:]]
    original = [MessageToDict(r) for r in got.responses]
    assert tail and original[-len(tail) :] == tail


async def test_subscribing_to_a_finished_task_is_unsupported_and_to_an_unknown_one_not_found(
    sluice: Sluice, binding: str
) -> None:
    async with a2a_client(sluice.url, binding) as client:
        done = await collect(client.send_message(send(message("What is 1 + 1?"))))
        assert done.states[-1] == TaskState.TASK_STATE_COMPLETED
        with pytest.raises(UnsupportedOperationError):
            await collect(client.subscribe(SubscribeToTaskRequest(id=done.task_id)))
        with pytest.raises(TaskNotFoundError):
            await collect(client.subscribe(SubscribeToTaskRequest(id=new_task_id())))


async def test_a_crew_streams_its_stages_as_status_messages_and_one_artifact_per_stage(sluice: Sluice) -> None:
    crew = message("Write a function that adds two numbers.", metadata={"agent": "dev-team"})
    async with a2a_client(sluice.url, "JSONRPC") as client:
        got = await asyncio.wait_for(collect(client.send_message(send(crew))), timeout=60)
        task = await client.get_task(GetTaskRequest(id=got.task_id))
    assert got.states[-1] == TaskState.TASK_STATE_COMPLETED
    stages = [
        r.status_update.status.message.parts[0].text
        for r in got.responses
        if r.HasField("status_update") and "Stage " in "".join(p.text for p in r.status_update.status.message.parts)
    ]
    assert any("architect started" in s for s in stages) and any("documenter finished" in s for s in stages)
    assert [a.name for a in task.artifacts] == ["architect", "coder", "reviewer", "documenter"]


async def test_an_unknown_agent_is_invalid_params(sluice: Sluice) -> None:
    from a2a.utils.errors import InvalidParamsError

    async with a2a_client(sluice.url, "JSONRPC", streaming=False) as client:
        with pytest.raises(InvalidParamsError):
            await collect(client.send_message(send(message("hi", metadata={"agent": "nobody"}))))


async def test_history_length_zero_leaves_out_the_history(sluice: Sluice) -> None:
    async with a2a_client(sluice.url, "HTTP+JSON", streaming=False) as client:
        request = send(message("What is 5 + 5?"))
        request.configuration.CopyFrom(SendMessageConfiguration(history_length=0))
        task = (await collect(client.send_message(request))).responses[0].task
    assert task.status.state == TaskState.TASK_STATE_COMPLETED and len(task.history) == 0


def _ids(got: Collected) -> list[int]:
    out = []
    for r in got.responses:
        kind = r.WhichOneof("payload")
        meta = MessageToDict(getattr(r, str(kind))).get("metadata", {})
        out.append(int(meta[REPLAY_EXTENSION]["eventId"]))
    return out


async def test_a_stream_cut_mid_task_and_resumed_with_last_event_id_loses_and_repeats_nothing(
    sluice: Sluice, binding: str
) -> None:
    from support.a2a import call_context

    async with a2a_client(sluice.url, binding) as client, a2a_client(sluice.other.url, binding) as other:
        cut = Collected()
        stream = client.send_message(send(message(f"Tell me a long story {SLOW}")))
        await first_chunk_then(stream, cut)
        await stream.aclose()  # the connection drops mid-task
        last_id = str(_ids(cut)[-1])
        resumed = await collect(
            other.subscribe(SubscribeToTaskRequest(id=cut.task_id), context=call_context(**{"Last-Event-ID": last_id}))
        )
        # The whole stream as a reference: everything after the snapshot the first stream started with.
        first_id = str(_ids(cut)[0])
        whole = await collect(
            client.subscribe(
                SubscribeToTaskRequest(id=cut.task_id), context=call_context(**{"Last-Event-ID": first_id})
            )
        )
    assert resumed.kinds[0] != "task"  # a resumed stream goes on where it stopped: no second snapshot
    assert resumed.states[-1] == TaskState.TASK_STATE_COMPLETED
    joined = [MessageToDict(r) for r in cut.responses[1:] + resumed.responses]
    assert joined == [MessageToDict(r) for r in whole.responses]
    ids = _ids(cut) + _ids(resumed)
    assert ids == sorted(set(ids))
    assert cut.text + "" and Collected(cut.responses + resumed.responses).text


async def test_an_event_source_can_resume_a_stream_by_itself(sluice: Sluice) -> None:
    """What a browser's EventSource does: a GET with the version in the query (it cannot set headers) and, on
    reconnect, the `Last-Event-ID` of the last `id:` line it saw."""
    import httpx

    from support.a2a import sse_events

    async with a2a_client(sluice.url, "HTTP+JSON") as client:
        original = await collect(client.send_message(send(message("What is 8 * 8?"))))
    ids = _ids(original)
    url = f"{sluice.other.url}/a2a/rest/tasks/{original.task_id}:subscribe?A2A-Version=1.0"
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream("GET", url, headers={"Last-Event-ID": str(ids[2])}) as r,
    ):
        assert r.status_code == 200
        events = [e async for e in sse_events(r)]
    assert [e.id for e in events] == [str(i) for i in ids[3:]]
    assert [e.data for e in events] == [MessageToDict(x) for x in original.responses[3:]]
