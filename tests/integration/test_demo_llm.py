"""demo-llm on a real socket, driven by the real `openai` SDK: streams, tool calls, usage, and every fault."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam, ChatCompletionToolParam

from demo_llm.main import DemoServer, running_server
from demo_llm.settings import DemoLLMSettings
from support.waiting import eventually

pytestmark = pytest.mark.timeout(15)

TOOL_NAMES = ("calculator", "clock", "convert_units", "search_docs", "ask_user")
TOOLS: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}
    for name in TOOL_NAMES
]


@pytest.fixture(scope="module")
async def demo() -> AsyncIterator[DemoServer]:
    async with running_server(DemoLLMSettings(port=0), log_level="warning") as server:
        yield server


@pytest.fixture
async def client(demo: DemoServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=demo.base_url, api_key="demo", max_retries=0, timeout=10) as c:
        yield c


@pytest.fixture
async def http(demo: DemoServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{demo.port}", timeout=10) as c:
        yield c


def tag() -> str:
    """A unique word per test, so once-faults and request-log entries never meet another test's."""
    return f"t{uuid.uuid4().hex[:10]}"


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


async def collect(stream: openai.AsyncStream[ChatCompletionChunk]) -> list[ChatCompletionChunk]:
    return [chunk async for chunk in stream]


async def logged(http: httpx.AsyncClient, word: str) -> list[dict[str, Any]]:
    response = await http.get("/_demo/requests")
    response.raise_for_status()
    return [entry for entry in response.json() if word in (entry["last_user"] or "")]


def accumulate_tool_calls(chunks: list[ChatCompletionChunk]) -> dict[int, dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                if delta.function:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
    return calls


def finish_reasons(chunks: list[ChatCompletionChunk]) -> list[str]:
    return [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]


async def test_streamed_text_says_it_is_the_demo_model_and_restates_the_prompt(client: openai.AsyncOpenAI) -> None:
    word = tag()
    stream = await client.chat.completions.create(
        model="any-model", messages=user(f"Tell me about {word}"), stream=True
    )
    chunks = await collect(stream)
    text = "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices)
    assert "Sluice demo model" in text
    assert f'You asked: "Tell me about {word}"' in text
    assert len(chunks) > 20
    assert finish_reasons(chunks) == ["stop"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {chunk.model for chunk in chunks} == {"any-model"}
    assert len({chunk.id for chunk in chunks}) == 1


async def test_usage_chunk_comes_last_with_empty_choices_when_requested(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="sluice-demo", messages=user(f"hi {tag()}"), stream=True, stream_options={"include_usage": True}
    )
    chunks = await collect(stream)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == 2
    assert last.usage.completion_tokens > 30
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(chunk.usage is None for chunk in chunks[:-1])


async def test_streamed_tool_call_arguments_accumulate_to_valid_json(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="sluice-demo", messages=user(f"what is 17*23? {tag()}"), tools=TOOLS, stream=True
    )
    chunks = await collect(stream)
    headers = [d for chunk in chunks for c in chunk.choices for d in c.delta.tool_calls or () if d.id]
    assert len(headers) == 1
    header = headers[0]
    assert header.index == 0 and header.type == "function" and header.id is not None and header.id.startswith("call_")
    assert header.function is not None and header.function.name == "calculator" and header.function.arguments == ""
    calls = accumulate_tool_calls(chunks)
    assert json.loads(calls[0]["arguments"]) == {"expression": "17*23"}
    fragments = [d for chunk in chunks for c in chunk.choices for d in c.delta.tool_calls or () if not d.id]
    assert len(fragments) > 1, "arguments arrive in several fragments"
    assert finish_reasons(chunks) == ["tool_calls"]


async def test_sdk_stream_helper_assembles_the_tool_call(client: openai.AsyncOpenAI) -> None:
    async with client.chat.completions.stream(
        model="sluice-demo", messages=user(f"convert 5 km to miles {tag()}"), tools=TOOLS
    ) as stream:
        final = await stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "convert_units"
    assert json.loads(call.function.arguments) == {"value": 5, "from_unit": "km", "to_unit": "mi"}
    assert final.choices[0].finish_reason == "tool_calls"


async def test_two_requests_in_one_prompt_make_parallel_tool_calls(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="sluice-demo", messages=user(f"what is 2+2 and what time is it? {tag()}"), tools=TOOLS, stream=True
    )
    calls = accumulate_tool_calls(await collect(stream))
    assert sorted(calls) == [0, 1]
    assert (calls[0]["name"], json.loads(calls[0]["arguments"])) == ("calculator", {"expression": "2+2"})
    assert calls[1]["name"] == "clock"
    assert calls[0]["id"] != calls[1]["id"]


async def test_tools_not_offered_are_never_called(client: openai.AsyncOpenAI) -> None:
    only_clock = [t for t in TOOLS if t["function"]["name"] == "clock"]
    completion = await client.chat.completions.create(
        model="sluice-demo", messages=user(f"what is 17*23? {tag()}"), tools=only_clock
    )
    message = completion.choices[0].message
    assert message.tool_calls is None
    assert message.content is not None and "Sluice demo model" in message.content


async def test_answers_from_the_tool_result(client: openai.AsyncOpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": f"what is 17*23? {tag()}"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression":"17*23"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "391"},
    ]
    stream = await client.chat.completions.create(model="sluice-demo", messages=messages, tools=TOOLS, stream=True)
    chunks = await collect(stream)
    text = "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices)
    assert "17*23 = 391" in text
    assert "The result is 391." in text
    assert finish_reasons(chunks) == ["stop"]


async def test_non_streaming_completion_carries_tool_calls_and_usage(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="sluice-demo", messages=user(f"search the docs for retry policy {tag()}"), tools=TOOLS
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "search_docs"
    assert json.loads(call.function.arguments)["query"].startswith("retry policy")
    assert completion.usage is not None and completion.usage.total_tokens > 0


async def test_non_streaming_text_reply(client: openai.AsyncOpenAI) -> None:
    word = tag()
    completion = await client.chat.completions.create(
        model="my-model",
        messages=[{"role": "system", "content": "You are the architect."}, {"role": "user", "content": word}],
    )
    assert completion.object == "chat.completion" and completion.model == "my-model"
    content = completion.choices[0].message.content or ""
    assert "Sluice demo model" in content and "the architect" in content and word in content
    assert completion.choices[0].finish_reason == "stop"


async def test_models_lists_sluice_demo(client: openai.AsyncOpenAI) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == ["sluice-demo"]


async def test_rate_limit_once_is_retried_by_the_sdk(demo: DemoServer, http: httpx.AsyncClient) -> None:
    word = tag()
    async with openai.AsyncOpenAI(base_url=demo.base_url, api_key="demo", max_retries=2) as client:
        completion = await client.chat.completions.create(
            model="sluice-demo", messages=user(f"[fault:429-once] {word}")
        )
    assert "Sluice demo model" in (completion.choices[0].message.content or "")
    assert "[fault" not in (completion.choices[0].message.content or ""), "markers are not restated"
    entries = await logged(http, word)
    assert [(e["status"], e["fault"]) for e in entries] == [(429, "429-once"), (200, None)]


async def test_server_error_once_is_retried_by_the_sdk(demo: DemoServer, http: httpx.AsyncClient) -> None:
    word = tag()
    async with openai.AsyncOpenAI(base_url=demo.base_url, api_key="demo", max_retries=2) as client:
        stream = await client.chat.completions.create(
            model="sluice-demo", messages=user(f"{word} [fault:500-once]"), stream=True
        )
        chunks = await collect(stream)
    assert finish_reasons(chunks) == ["stop"]
    assert [e["status"] for e in await logged(http, word)] == [500, 200]


async def test_rate_limit_without_retries_raises_rate_limit_error(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="sluice-demo", messages=user(f"[fault:429] {tag()}"))
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.code == "rate_limit_exceeded"
    assert isinstance(caught.value.body, dict) and {"message", "type", "code"} <= caught.value.body.keys()


async def test_fault_header_works_like_the_marker(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(
            model="sluice-demo", messages=user(tag()), extra_headers={"X-Demo-Fault": "[fault:500-always]"}
        )


async def test_cut_stream_raises_connection_error_after_n_chunks_without_finish(client: openai.AsyncOpenAI) -> None:
    received: list[ChatCompletionChunk] = []
    stream = await client.chat.completions.create(
        model="sluice-demo", messages=user(f"[fault:cut:3] {tag()}"), stream=True
    )
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 3
    assert finish_reasons(received) == []


async def test_cut_once_stream_succeeds_when_retried_by_the_caller(client: openai.AsyncOpenAI) -> None:
    messages = user(f"[fault:cut-once:2] {tag()}")
    stream = await client.chat.completions.create(model="sluice-demo", messages=messages, stream=True)
    with pytest.raises(openai.APIConnectionError):
        await collect(stream)
    stream = await client.chat.completions.create(model="sluice-demo", messages=messages, stream=True)
    assert finish_reasons(await collect(stream)) == ["stop"]


async def test_cut_non_streaming_response_is_a_connection_error(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="sluice-demo", messages=user(f"[fault:cut:0] {tag()}"))


async def test_bad_args_fault_streams_malformed_json_arguments(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="sluice-demo", messages=user(f"what is 17*23? [fault:bad-args] {tag()}"), tools=TOOLS, stream=True
    )
    calls = accumulate_tool_calls(await collect(stream))
    assert calls[0]["name"] == "calculator"
    with pytest.raises(json.JSONDecodeError):
        json.loads(calls[0]["arguments"])


async def test_long_marker_streams_an_answer_of_that_many_characters(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="sluice-demo", messages=user(f"Tell me a story [fault:long:100000] {tag()}"), stream=True
    )
    chunks = await collect(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text) == 100_000 and text.startswith("I am the Sluice demo model"), text[:200]
    assert finish_reasons(chunks) == ["stop"]


async def test_stall_pauses_after_the_first_chunk_then_continues(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="sluice-demo", messages=user(f"[fault:stall:0.3] {tag()}"), stream=True
    )
    arrivals: list[float] = []
    chunks: list[ChatCompletionChunk] = []
    async for chunk in stream:
        arrivals.append(time.monotonic())
        chunks.append(chunk)
    assert arrivals[1] - arrivals[0] >= 0.25
    assert max(b - a for a, b in itertools.pairwise(arrivals[1:])) < 0.25
    assert finish_reasons(chunks) == ["stop"]


async def test_delay_header_paces_every_chunk(client: openai.AsyncOpenAI) -> None:
    started = time.monotonic()
    stream = await client.chat.completions.create(
        model="sluice-demo", messages=user(tag()), stream=True, extra_headers={"X-Demo-Delay-Ms": "5"}
    )
    chunks = await collect(stream)
    assert time.monotonic() - started >= 0.005 * (len(chunks) - 1)


async def test_a_client_that_hangs_up_stops_the_stream(demo: DemoServer, client: openai.AsyncOpenAI) -> None:
    # At 200 ms per chunk the whole reply would take over ten seconds; the stream must end with the client.
    stream = await client.chat.completions.create(
        model="sluice-demo", messages=user(tag()), stream=True, extra_headers={"X-Demo-Delay-Ms": "200"}
    )
    await anext(aiter(stream))
    await stream.close()

    async def no_requests_in_flight() -> bool:
        return not demo.server_state.tasks

    await eventually(no_requests_in_flight, timeout_s=2, what="the streaming request to end")


async def test_malformed_json_body_is_an_openai_style_400(http: httpx.AsyncClient) -> None:
    for body in (b"{not json", b"[1, 2]", b'{"model": "m", "messages": []}', b'{"messages": [{"role": "user"}]}'):
        response = await http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, body
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_request" and error["message"]


async def test_unknown_fault_marker_is_a_400_naming_the_marker(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match=r"\[fault:explode\]"):
        await client.chat.completions.create(model="sluice-demo", messages=user(f"[fault:explode] {tag()}"))


async def test_unknown_route_is_an_openai_style_404(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_request_log_records_requests_and_can_be_cleared(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    word = tag()
    await client.chat.completions.create(
        model="logged-model", messages=[{"role": "system", "content": "s"}, {"role": "user", "content": word}]
    )
    (entry,) = await logged(http, word)
    assert entry["method"] == "POST" and entry["path"] == "/v1/chat/completions"
    assert (entry["model"], entry["messages"], entry["last_user"], entry["fault"]) == ("logged-model", 2, word, None)
    assert entry["time"] > 0 and entry["status"] == 200
    assert (await http.delete("/_demo/requests")).status_code == 204
    assert (await http.get("/_demo/requests")).json() == []
