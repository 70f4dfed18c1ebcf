"""Every bad input of CONTRACT §4/§5 gets its 4xx with the error shape, writes NOTHING, and leaves the edge serving.

Each case snapshots the last sequence of every Sluice stream and of the task bucket before and after the request:
a rejected request must not move any of them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from sluice.bus import Bus
from sluice.config import CommonConfig
from sluice.eventlog import EventWriter, read_events, read_log
from sluice.events import LlmDelta, LlmDeltaData, TaskSubmitted
from sluice.ids import new_task_id
from support.edge import EdgeUnderTest, published, running_edge

LIMIT = 4096


@pytest.fixture(scope="module")
async def edge(common_config: CommonConfig, bus: Bus) -> AsyncIterator[EdgeUnderTest]:
    async with running_edge(common_config, bus, max_body_bytes=LIMIT) as running:
        yield running


@pytest.fixture(scope="module")
async def existing_task(edge: EdgeUnderTest) -> str:
    response = await edge.client.post("/v1/tasks", json={"input": "a task that exists"})
    assert response.status_code == 201
    return str(response.json()["id"])


async def assert_created(edge: EdgeUnderTest, bus: Bus, response: httpx.Response, text: str) -> None:
    """A 201 that stored what was sent: the record's input and the input the task.submitted event carries."""
    assert response.status_code == 201, response.text
    task_id = response.json()["id"]
    record = await edge.client.get(f"/v1/tasks/{task_id}")
    assert record.status_code == 200 and record.json()["input"] == text, record.text
    submitted = (await read_events(bus, task_id))[0]
    assert isinstance(submitted, TaskSubmitted) and submitted.data.input == text, submitted


async def assert_rejected(
    edge: EdgeUnderTest, bus: Bus, method: str, url: str, status: int, code: str | None = None, **kwargs: Any
) -> dict[str, Any]:
    before = await published(bus)
    response = await edge.client.request(method, url, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    assert await published(bus) == before, "a rejected request wrote to NATS"
    # ... and the edge still serves a normal request.
    assert (await edge.client.get("/healthz")).status_code == 200
    return dict(body["error"])


# ---------------------------------------------------------------- POST /v1/tasks bodies

JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        pytest.param(b'{"input": "x"', 400, "invalid_json", id="truncated-json"),
        pytest.param(b"{input: x}", 400, "invalid_json", id="not-json"),
        pytest.param(b"\xff\xfe\x00garbage", 400, None, id="not-utf8"),
        pytest.param(b"[" * 2000 + b"]" * 2000, 400, None, id="deeply-nested"),
        pytest.param(b'"just a string"', 422, "invalid_body", id="json-string"),
        pytest.param(b"null", 422, "invalid_body", id="json-null"),
        pytest.param(b"[]", 422, "invalid_body", id="json-array"),
        pytest.param(b"{}", 422, "invalid_body", id="missing-input"),
        pytest.param(b'{"input": ""}', 422, "invalid_body", id="empty-input"),
        pytest.param(b'{"input": "  \\n\\t "}', 422, "invalid_body", id="blank-input"),
        pytest.param(b'{"input": 5}', 422, "invalid_body", id="input-number"),
        pytest.param(b'{"input": null}', 422, "invalid_body", id="input-null"),
        pytest.param(b'{"input": ["a"]}', 422, "invalid_body", id="input-list"),
        pytest.param(b'{"input": "x", "agent": "bad agent"}', 422, "invalid_body", id="agent-space"),
        pytest.param(b'{"input": "x", "agent": "a.b"}', 422, "invalid_body", id="agent-dot"),
        pytest.param(b'{"input": "x", "agent": ""}', 422, "invalid_body", id="agent-empty"),
        pytest.param(b'{"input": "x", "agent": "' + b"a" * 65 + b'"}', 422, "invalid_body", id="agent-long"),
        pytest.param(b'{"input": "x", "agent": 7}', 422, "invalid_body", id="agent-number"),
        pytest.param(b'{"input": "x", "history": "no"}', 422, "invalid_body", id="history-string"),
        pytest.param(b'{"input": "x", "history": [{"role": "god", "content": "x"}]}', 422, None, id="history-role"),
        pytest.param(b'{"input": "x", "history": [{"role": "user"}]}', 422, "invalid_body", id="history-content"),
        pytest.param(b'{"input": "x", "metadata": [1]}', 422, "invalid_body", id="metadata-list"),
        pytest.param(b'{"input": "x", "budget": {"max_steps": 0}}', 422, "invalid_body", id="budget-zero"),
        pytest.param(b'{"input": "x", "budget": {"max_cost_usd": -1}}', 422, "invalid_body", id="budget-negative"),
        pytest.param(b'{"input": "x", "budget": {"max_steps": "3"}}', 422, "invalid_body", id="budget-string"),
        pytest.param(b'{"input": "x", "budget": {"timeout_s": NaN}}', 422, "invalid_body", id="budget-nan"),
        pytest.param(b'{"input": "x", "budget": {"timeout_s": Infinity}}', 422, "invalid_body", id="budget-inf"),
        pytest.param(b'{"input": "x", "budget": {"max_steps": 1.5}}', 422, "invalid_body", id="budget-fraction"),
        pytest.param(b'{"input": "x", "budget": {"max_tokens": 5}}', 422, "invalid_body", id="budget-unknown"),
        pytest.param(b'{"input": "x", "budget": []}', 422, "invalid_body", id="budget-list"),
        pytest.param(b'{"input": "x", "surprise": 1}', 422, "invalid_body", id="unknown-field"),
    ],
)
async def test_bad_submit_bodies_are_rejected_and_publish_nothing(
    edge: EdgeUnderTest, bus: Bus, content: bytes, status: int, code: str | None
) -> None:
    await assert_rejected(edge, bus, "POST", "/v1/tasks", status, code, content=content, headers=JSON_HEADERS)


async def test_validation_errors_name_the_field(edge: EdgeUnderTest, bus: Bus) -> None:
    error = await assert_rejected(
        edge, bus, "POST", "/v1/tasks", 422, "invalid_body", json={"input": "x", "budget": {"max_steps": -2}}
    )
    assert "budget.max_steps" in error["message"]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "multipart/form-data; boundary=x", "application/xml", None],
)
async def test_bodies_that_are_not_json_are_415(edge: EdgeUnderTest, bus: Bus, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    content = json.dumps({"input": "x"}).encode()
    # httpx adds no Content-Type for raw bytes, so None really means "untyped".
    await assert_rejected(
        edge, bus, "POST", "/v1/tasks", 415, "unsupported_media_type", content=content, headers=headers
    )


async def test_curl_default_form_type_is_read_as_json_and_a_real_form_body_is_400(
    edge: EdgeUnderTest, bus: Bus
) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    response = await edge.client.post("/v1/tasks", content=b'{"input": "typed as a form"}', headers=form)
    await assert_created(edge, bus, response, "typed as a form")
    await assert_rejected(edge, bus, "POST", "/v1/tasks", 400, "invalid_json", content=b"input=ok", headers=form)


async def test_json_with_a_charset_or_a_plus_json_type_is_accepted(edge: EdgeUnderTest, bus: Bus) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.sluice+json"):
        body = json.dumps({"input": f"sent as {content_type} — ünïcode"}).encode()
        response = await edge.client.post("/v1/tasks", content=body, headers={"Content-Type": content_type})
        await assert_created(edge, bus, response, f"sent as {content_type} — ünïcode")


async def test_a_body_over_the_limit_is_413_by_its_declared_length(edge: EdgeUnderTest, bus: Bus) -> None:
    body = json.dumps({"input": "x" * (LIMIT + 10)}).encode()
    await assert_rejected(edge, bus, "POST", "/v1/tasks", 413, "body_too_large", content=body, headers=JSON_HEADERS)


async def test_a_chunked_body_over_the_limit_is_413_while_it_is_read(edge: EdgeUnderTest, bus: Bus) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"input": "'
        for _ in range(LIMIT // 512 + 2):
            yield b"y" * 512
        yield b'"}'

    # A generator body goes out with Transfer-Encoding: chunked and no Content-Length to trust.
    await assert_rejected(edge, bus, "POST", "/v1/tasks", 413, "body_too_large", content=chunks(), headers=JSON_HEADERS)


async def test_a_chunked_body_under_the_limit_is_accepted(edge: EdgeUnderTest, bus: Bus) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"input": "chun'
        yield b'ked in two"}'

    response = await edge.client.post("/v1/tasks", content=chunks(), headers=JSON_HEADERS)
    await assert_created(edge, bus, response, "chunked in two")


async def test_an_accept_the_edge_cannot_serve_is_406(edge: EdgeUnderTest, bus: Bus) -> None:
    await assert_rejected(
        edge, bus, "POST", "/v1/tasks", 406, "not_acceptable", json={"input": "x"}, headers={"Accept": "text/html"}
    )


@pytest.mark.parametrize("key", ["", "k" * 300, "naïve"])
async def test_malformed_idempotency_keys_are_400(edge: EdgeUnderTest, bus: Bus, key: str) -> None:
    await assert_rejected(
        edge, bus, "POST", "/v1/tasks", 400, None, json={"input": "x"}, headers={"Idempotency-Key": key.encode()}
    )


# ---------------------------------------------------------------- task ids in paths

BAD_IDS = [
    pytest.param("*", id="star"),
    pytest.param(">", id="gt"),
    pytest.param("abc.defgh", id="dot"),
    pytest.param("sluice.evt.>", id="subject"),
    pytest.param("abcdefgh*", id="star-suffix"),
    pytest.param("abcd%20efgh", id="space"),
    pytest.param("%C3%A9t%C3%A9-abcdefgh", id="unicode"),
    pytest.param("a" * 10_000, id="10000-chars"),
    pytest.param("short", id="too-short"),
    pytest.param("abcdefgh%0A", id="newline"),
]


@pytest.mark.parametrize("bad_id", BAD_IDS)
@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("GET", "/events", None),
        ("POST", "/cancel", None),
        ("POST", "/input", {"input": "x"}),
    ],
)
async def test_invalid_task_ids_are_400_on_every_route(
    edge: EdgeUnderTest, bus: Bus, bad_id: str, method: str, suffix: str, body: dict[str, str] | None
) -> None:
    kwargs: dict[str, Any] = {"json": body} if body is not None else {}
    await assert_rejected(edge, bus, method, f"/v1/tasks/{bad_id}{suffix}", 400, "invalid_task_id", **kwargs)


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [("GET", "", None), ("GET", "/events", None), ("POST", "/cancel", None), ("POST", "/input", {"input": "x"})],
)
async def test_unknown_tasks_are_404_before_any_stream(
    edge: EdgeUnderTest, bus: Bus, method: str, suffix: str, body: dict[str, str] | None
) -> None:
    kwargs: dict[str, Any] = {"json": body} if body is not None else {}
    await assert_rejected(edge, bus, method, f"/v1/tasks/{new_task_id()}{suffix}", 404, "task_not_found", **kwargs)


# ---------------------------------------------------------------- the events route


@pytest.mark.parametrize(
    "value", ["-1", "18446744073709551616", "99999999999999999999999", "abc", "1.5", "0x10", "1e3", "+5", "7x", "٣"]
)
async def test_malformed_last_event_ids_are_400(edge: EdgeUnderTest, bus: Bus, existing_task: str, value: str) -> None:
    url = f"/v1/tasks/{existing_task}/events"
    await assert_rejected(edge, bus, "GET", url, 400, "invalid_event_id", headers={"Last-Event-ID": value.encode()})
    await assert_rejected(edge, bus, "GET", url, 400, "invalid_event_id", params={"after": value})


async def test_a_cursor_from_the_future_is_400_with_a_clear_message(
    edge: EdgeUnderTest, bus: Bus, existing_task: str
) -> None:
    url = f"/v1/tasks/{existing_task}/events"
    error = await assert_rejected(
        edge, bus, "GET", url, 400, "event_id_from_future", headers={"Last-Event-ID": str(2**63)}
    )
    assert "does not exist yet" in error["message"]
    end = (await published(bus))["SLUICE_EVENTS"]
    await assert_rejected(edge, bus, "GET", url, 400, "event_id_from_future", params={"after": str(end + 1000)})


async def test_last_event_id_wins_over_after_even_when_after_is_bad(
    edge: EdgeUnderTest, bus: Bus, existing_task: str
) -> None:
    writer = EventWriter(bus, "agent-runner")
    log = [entry.seq async for entry in read_log(bus, existing_task)]  # task.submitted
    for n in (1, 2):
        data = LlmDeltaData(step=1, attempt=1, text=f"d{n} ")
        log.append(await writer.emit(LlmDelta, existing_task, data, msg_id=f"{existing_task}:s1:a1:d{n}"))

    async def served_ids(after: str, last_event_id: str) -> list[int]:
        response = await edge.client.get(
            f"/v1/tasks/{existing_task}/events",
            params={"after": after, "follow": "false", "format": "ndjson"},
            headers={"Last-Event-ID": last_event_id},
        )
        assert response.status_code == 200, response.text
        return [int(json.loads(line)["id"]) for line in response.text.splitlines() if '"id"' in line]

    # A bad `after` is not even looked at; the header's id decides where the replay starts.
    assert await served_ids("bogus", str(log[0])) == log[1:]
    # Both valid and different: the header still wins.
    assert await served_ids(str(log[1]), "0") == log


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"since": "5"}, "unknown_query_parameter"),
        ({"after": "0", "foo": "1", "bar": "2"}, "unknown_query_parameter"),
        ({"format": "xml"}, "invalid_request"),
        ({"follow": "maybe"}, "invalid_request"),
        ({"snapshot": "2"}, "invalid_request"),
    ],
)
async def test_bad_query_parameters_on_the_events_route_are_400(
    edge: EdgeUnderTest, bus: Bus, existing_task: str, params: dict[str, str], code: str
) -> None:
    error = await assert_rejected(edge, bus, "GET", f"/v1/tasks/{existing_task}/events", 400, code, params=params)
    if code == "unknown_query_parameter":
        for name in params:
            if name not in ("after",):
                assert repr(name) in error["message"]


async def test_a_repeated_query_parameter_is_400(edge: EdgeUnderTest, bus: Bus, existing_task: str) -> None:
    url = f"/v1/tasks/{existing_task}/events?after=0&after=1"
    await assert_rejected(edge, bus, "GET", url, 400, "repeated_query_parameter")


@pytest.mark.parametrize("path", ["/v1/tasks", "/v1/tasks/{id}", "/v1/tasks/{id}/cancel", "/v1/tasks/{id}/input"])
async def test_unknown_query_parameters_are_400_on_the_other_routes_too(
    edge: EdgeUnderTest, bus: Bus, existing_task: str, path: str
) -> None:
    method = "GET" if path == "/v1/tasks/{id}" else "POST"
    await assert_rejected(
        edge, bus, method, path.format(id=existing_task), 400, "unknown_query_parameter",
        params={"debug": "1"}, json={"input": "x"} if method == "POST" else None,
    )  # fmt: skip


async def test_an_events_accept_the_edge_cannot_serve_is_406(edge: EdgeUnderTest, bus: Bus, existing_task: str) -> None:
    url = f"/v1/tasks/{existing_task}/events"
    await assert_rejected(edge, bus, "GET", url, 406, "not_acceptable", headers={"Accept": "application/json"})


# ---------------------------------------------------------------- cancel / input bodies


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"{}", id="neither"),
        pytest.param(b'{"input": "yes", "approve": true}', id="both"),
        pytest.param(b'{"input": ""}', id="empty"),
        pytest.param(b'{"input": "   "}', id="blank"),
        pytest.param(b'{"approve": "yes"}', id="approve-string"),
        pytest.param(b'{"approve": 1}', id="approve-number"),
        pytest.param(b'{"input": 3}', id="input-number"),
        pytest.param(b'{"answer": "x"}', id="unknown-field"),
    ],
)
async def test_bad_input_bodies_are_422(edge: EdgeUnderTest, bus: Bus, existing_task: str, content: bytes) -> None:
    url = f"/v1/tasks/{existing_task}/input"
    await assert_rejected(edge, bus, "POST", url, 422, "invalid_body", content=content, headers=JSON_HEADERS)


async def test_bad_cancel_bodies_are_rejected(edge: EdgeUnderTest, bus: Bus, existing_task: str) -> None:
    url = f"/v1/tasks/{existing_task}/cancel"
    await assert_rejected(edge, bus, "POST", url, 422, "invalid_body", json={"reason": 5})
    await assert_rejected(edge, bus, "POST", url, 400, "invalid_json", content=b"{", headers=JSON_HEADERS)
    await assert_rejected(edge, bus, "POST", url, 415, "unsupported_media_type", content=b"stop", headers={})


# ---------------------------------------------------------------- routes and methods


async def test_unknown_routes_and_methods_answer_in_the_error_shape(edge: EdgeUnderTest, bus: Bus) -> None:
    await assert_rejected(edge, bus, "GET", "/v2/nothing", 404, "not_found")
    await assert_rejected(edge, bus, "DELETE", "/v1/tasks", 405, "method_not_allowed")
    await assert_rejected(edge, bus, "PUT", f"/v1/tasks/{new_task_id()}", 405, "method_not_allowed")
