"""What the A2A endpoint answers to requests no well-behaved client sends: JSON-RPC errors with HTTP 200 and the
spec's codes, HTTP+JSON errors with their statuses — and never a 500.

Only the edge and NATS run here (no runner): these requests are refused before any work would be done.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from sluice.bus import Bus
from sluice.config import CommonConfig
from sluice.events import TaskSubmittedData
from sluice.ids import new_task_id
from stream_edge.runtime import EdgeRuntime
from support.a2a import raw_rpc
from support.edge import EdgeUnderTest, record_watch_opened, running_edge

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
async def edge(common_config: CommonConfig, bus: Bus) -> AsyncIterator[EdgeUnderTest]:
    async with running_edge(common_config, bus) as running:
        yield running


def rpc(method: str, params: Any, id: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params}


def send_params(text: str = "hi", **message: Any) -> dict[str, Any]:
    return {"message": {"role": "ROLE_USER", "messageId": str(uuid.uuid4()), "parts": [{"text": text}], **message}}


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["jsonrpc"] == "2.0" and "result" not in body, body
    error: dict[str, Any] = body["error"]
    return error


def reason_of(error: dict[str, Any]) -> str | None:
    for detail in error.get("data") or []:
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return str(detail["reason"])
    return None


async def canceled_task(edge: EdgeUnderTest) -> str:
    """A task that has ended (canceled before any runner took it: the edge writes its end itself)."""
    runtime: EdgeRuntime = edge.app.state.edge
    record = await runtime.tasks.submit(TaskSubmittedData(input="x", agent="assistant", history=[], metadata={}))
    await runtime.tasks.cancel(record.id, "test")
    return record.id


async def test_malformed_json_is_a_parse_error(edge: EdgeUnderTest) -> None:
    error = error_of(await raw_rpc(edge.url, b'{"jsonrpc": "2.0", "method": '))
    assert error["code"] == -32700


@pytest.mark.parametrize(
    "body",
    [
        {"jsonrpc": "1.0", "id": 1, "method": "GetTask", "params": {}},
        {"id": 1, "method": "GetTask", "params": {}},
        {"jsonrpc": "2.0", "id": 1, "params": {}},
        {"jsonrpc": "2.0", "id": True, "method": "GetTask", "params": {}},
        {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": "not an object"},
        [{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {}}],
        "a string",
        42,
    ],
    ids=[
        "wrong-jsonrpc-version",
        "no-jsonrpc",
        "no-method",
        "bool-id",
        "params-not-structured",
        "batch",
        "string",
        "number",
    ],
)
async def test_a_request_that_is_not_json_rpc_is_invalid_request(edge: EdgeUnderTest, body: Any) -> None:
    import json

    error = error_of(await raw_rpc(edge.url, json.dumps(body)))
    assert error["code"] == -32600


async def test_an_unknown_method_is_method_not_found(edge: EdgeUnderTest) -> None:
    error = error_of(await raw_rpc(edge.url, rpc("tasks/frobnicate", {})))
    assert error["code"] == -32601


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("GetTask", {"id": {"nested": 1}}),
        ("SendMessage", {"message": {"role": "ROLE_USER"}}),
        ("SendMessage", {"message": "hello"}),
        ("SendMessage", send_params(role="ROLE_AGENT")),
        ("SendMessage", send_params("")),
        ("GetTask", {"id": "../../etc"}),
        ("GetTask", {"id": new_task_id(), "historyLength": -1}),
        ("ListTasks", {"pageSize": 1000}),
        ("ListTasks", {"pageToken": "garbage"}),
        ("SendStreamingMessage", {"message": {"parts": []}}),
    ],
    ids=[
        "id-not-a-string",
        "message-missing-fields",
        "message-not-an-object",
        "message-from-an-agent",
        "empty-text",
        "id-with-path-characters",
        "negative-history-length",
        "page-too-large",
        "foreign-page-token",
        "stream-without-message",
    ],
)
async def test_bad_params_are_invalid_params_with_typed_details(edge: EdgeUnderTest, method: str, params: Any) -> None:
    error = error_of(await raw_rpc(edge.url, rpc(method, params)))
    assert error["code"] == -32602, error
    assert isinstance(error.get("data"), list | dict | type(None))


async def test_a_version_the_server_does_not_speak_is_version_not_supported(edge: EdgeUnderTest) -> None:
    error = error_of(await raw_rpc(edge.url, rpc("GetTask", {"id": new_task_id()}), version="2.0"))
    assert error["code"] == -32009
    assert reason_of(error) == "VERSION_NOT_SUPPORTED"


async def test_a_1_0_method_without_a_version_header_is_taken_as_0_3_and_refused(edge: EdgeUnderTest) -> None:
    error = error_of(await raw_rpc(edge.url, rpc("GetTask", {"id": new_task_id()}), version=None))
    assert error["code"] == -32009


async def test_an_unknown_task_is_task_not_found(edge: EdgeUnderTest) -> None:
    for method in ("GetTask", "CancelTask", "SubscribeToTask"):
        error = error_of(await raw_rpc(edge.url, rpc(method, {"id": new_task_id()})))
        assert error["code"] == -32001, (method, error)
        assert reason_of(error) == "TASK_NOT_FOUND"
    error = error_of(await raw_rpc(edge.url, rpc("SendMessage", send_params(taskId=new_task_id()))))
    assert error["code"] == -32001


async def test_cancelling_a_finished_task_is_not_cancelable(edge: EdgeUnderTest) -> None:
    task_id = await canceled_task(edge)
    error = error_of(await raw_rpc(edge.url, rpc("CancelTask", {"id": task_id})))
    assert error["code"] == -32002
    assert reason_of(error) == "TASK_NOT_CANCELABLE"


async def test_subscribing_to_a_finished_task_is_unsupported_operation(edge: EdgeUnderTest) -> None:
    task_id = await canceled_task(edge)
    error = error_of(await raw_rpc(edge.url, rpc("SubscribeToTask", {"id": task_id})))
    assert error["code"] == -32004


async def test_push_notifications_are_not_supported(edge: EdgeUnderTest) -> None:
    params = {"taskId": new_task_id(), "url": "https://example.com/hook"}
    error = error_of(await raw_rpc(edge.url, rpc("CreateTaskPushNotificationConfig", params)))
    assert error["code"] == -32003


async def test_a_bad_last_event_id_is_invalid_params(edge: EdgeUnderTest) -> None:
    task_id = await canceled_task(edge)
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            edge.url + "/a2a",
            json=rpc("SubscribeToTask", {"id": task_id}),
            headers={"A2A-Version": "1.0", "Last-Event-ID": "not-a-number"},
        )
    assert error_of(response)["code"] == -32602


async def test_http_json_errors_carry_the_status_and_the_reason(edge: EdgeUnderTest) -> None:
    async with httpx.AsyncClient(base_url=edge.url + "/a2a/rest", timeout=10, headers={"A2A-Version": "1.0"}) as http:
        missing = await http.get(f"/tasks/{new_task_id()}")
        assert missing.status_code == 404
        assert missing.json()["error"]["details"][0]["reason"] == "TASK_NOT_FOUND"
        broken = await http.post("/message:send", content=b"{nope", headers={"Content-Type": "application/json"})
        assert broken.status_code == 400
        finished = await canceled_task(edge)
        again = await http.post(f"/tasks/{finished}:cancel")
        assert again.status_code == 400
        assert again.json()["error"]["details"][0]["reason"] == "TASK_NOT_CANCELABLE"
        wrong_version = await http.get(f"/tasks/{finished}", headers={"A2A-Version": "9.0"})
        assert wrong_version.status_code == 400
        assert wrong_version.json()["error"]["details"][0]["reason"] == "VERSION_NOT_SUPPORTED"


async def test_the_sluice_api_is_not_shadowed_by_the_a2a_routes(edge: EdgeUnderTest) -> None:
    async with httpx.AsyncClient(base_url=edge.url, timeout=10) as http:
        assert (await http.get(f"/v1/tasks/{new_task_id()}")).json()["error"]["code"] == "task_not_found"
        assert (await http.get("/tasks")).status_code == 404
        assert (await http.get("/healthz")).status_code == 200


FUZZ = [
    b"",
    b"null",
    b"[]",
    b"{}",
    b'{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"role":7,"parts":[{"raw":"!!"}]}}}',
    b'{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m","role":"ROLE_USER",'
    b'"parts":[{"url":"http://x"}]}}}',
    b'{"jsonrpc":"2.0","id":{"a":1},"method":"GetTask","params":{"id":"x"}}',
    b'{"jsonrpc":"2.0","id":1,"method":"ListTasks","params":{"status":"NOT_A_STATE","statusTimestampAfter":"x"}}',
    b'{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":"' + b"A" * 5000 + b'"}}',
    '{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":"\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"}}'.encode(),
    b"\xff\xfe\x00garbage",
]


@pytest.mark.parametrize("body", FUZZ)
async def test_no_malformed_request_gets_a_500(edge: EdgeUnderTest, body: bytes) -> None:
    response = await raw_rpc(edge.url, body)
    assert response.status_code == 200, response.text
    assert "error" in response.json()


async def test_a_0_3_client_is_served_on_the_same_endpoint(edge: EdgeUnderTest) -> None:
    task_id = await canceled_task(edge)
    body = {"jsonrpc": "2.0", "id": "x", "method": "tasks/get", "params": {"id": task_id}}
    response = await raw_rpc(edge.url, body, version=None)
    assert response.status_code == 200
    result = response.json()["result"]
    assert result["id"] == task_id and result["status"]["state"] == "canceled" and result["kind"] == "task"
    missing = await raw_rpc(edge.url, {**body, "params": {"id": new_task_id()}}, version=None)
    assert missing.json()["error"]["code"] == -32001


async def test_an_answer_that_overtakes_the_records_input_required_waits_for_it(edge: EdgeUnderTest) -> None:
    """The runner publishes `task.input_required`, then records the state; a client answering the question it
    was just streamed can arrive in between, and must not be refused."""
    import asyncio

    import msgspec

    from sluice.eventlog import EventWriter
    from sluice.events import TaskInputRequired, TaskInputRequiredData, TaskRecord

    runtime: EdgeRuntime = edge.app.state.edge
    record = await runtime.tasks.submit(TaskSubmittedData(input="x", agent="assistant", history=[], metadata={}))
    await runtime.store.update(record.id, lambda r: msgspec.structs.replace(r, state="working"))
    writer = EventWriter(runtime.bus, "test-runner")
    ask = TaskInputRequiredData(prompt="Which city?", kind="question")
    seq = await writer.emit(TaskInputRequired, record.id, ask, msg_id=f"{record.id}:ask:1:c1")

    # The edge waits on a KV watch of the record: its opening says the answer is waiting while the record still
    # says `working`.
    params = {**send_params("Paris", taskId=record.id), "configuration": {"returnImmediately": True}}
    async with record_watch_opened(runtime.bus, record.id) as watching:
        answer = asyncio.create_task(raw_rpc(edge.url, rpc("SendMessage", params)))
        await asyncio.wait_for(watching, timeout=10)
    assert not answer.done(), answer.result().text

    def waiting(r: TaskRecord) -> TaskRecord:
        return msgspec.structs.replace(r, state="input-required", last_event_id=str(seq))

    await runtime.store.update(record.id, waiting)
    response = await asyncio.wait_for(answer, timeout=15)
    assert response.status_code == 200 and "result" in response.json(), response.text
    assert (await runtime.tasks.get(record.id)).state == "working"
