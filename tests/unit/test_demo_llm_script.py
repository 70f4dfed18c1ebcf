"""demo-llm's pure parts: what it replies, which tools a prompt asks for, fault markers, tokens, chunk JSON."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from demo_llm.chunks import Answer, IssuedCall, Usage, encode_chunks, encode_completion
from demo_llm.faults import FaultSyntaxError, OnceLedger, corrupt_arguments, once_key, parse_faults, strip_markers
from demo_llm.intents import detect_intents
from demo_llm.script import PlannedCall, Reply, decide_reply, lengthened, prompt_tokens, role_hint
from demo_llm.tokens import argument_fragments, count_tokens, text_pieces
from demo_llm.wire import ChatMessage, ChatRequest, FunctionCallIn, RequestError, ToolCallIn, decode_chat_request

ALL_TOOLS = frozenset({"calculator", "clock", "convert_units", "search_docs", "ask_user"})


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def calls_of(reply: Reply) -> list[tuple[str, dict[str, Any]]]:
    return [(call.name, json.loads(call.arguments)) for call in reply.tool_calls]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("what is 17*23?", [("calculator", {"expression": "17*23"})]),
        ("compute (2+3)/4", [("calculator", {"expression": "(2+3)/4"})]),
        ("what is 17 times 23", [("calculator", {"expression": "17*23"})]),
        ("what time is it", [("clock", {})]),
        ("what is the current date in UTC?", [("clock", {"timezone": "UTC"})]),
        ("convert 5 km to miles", [("convert_units", {"value": 5, "from_unit": "km", "to_unit": "mi"})]),
        ("how heavy is 2.5 kg in pounds", [("convert_units", {"value": 2.5, "from_unit": "kg", "to_unit": "lb"})]),
        ("search the docs for retry policy", [("search_docs", {"query": "retry policy"})]),
        ("look up asyncio.gather in the docs.", [("search_docs", {"query": "asyncio.gather"})]),
        ("please ask me for my name", [("ask_user", {"question": "Could you tell me your name?"})]),
        (
            "ask the user which colour they like",
            [("ask_user", {"question": "Could you tell me which colour they like?"})],
        ),
        ("what is 2+2 and what time is it", [("calculator", {"expression": "2+2"}), ("clock", {})]),
        ("look up 2+2", [("search_docs", {"query": "2+2"})]),
        ("the meeting is on 2024-01-05", []),
        ("task 550e8400-e29b-41d4-a716-446655440000 is done", []),
        ("tell me a story", []),
    ],
)
def test_prompts_ask_for_the_tools_that_do_what_they_ask(prompt: str, expected: list[tuple[str, Any]]) -> None:
    assert [(i.name, i.arguments) for i in detect_intents(prompt)] == expected
    assert calls_of(decide_reply(user(prompt), ALL_TOOLS)) == expected


def test_only_offered_tools_are_called() -> None:
    reply = decide_reply(user("what is 2+2 and what time is it"), {"clock"})
    assert calls_of(reply) == [("clock", {})]
    assert reply.finish_reason == "tool_calls"


def test_without_tools_the_reply_is_text_even_when_a_tool_would_fit() -> None:
    reply = decide_reply(user("what is 17*23?"), frozenset())
    assert reply.tool_calls == () and reply.text is not None and "17*23" in reply.text


def test_parallel_off_keeps_only_the_first_call() -> None:
    reply = decide_reply(user("what is 2+2 and what time is it"), ALL_TOOLS, parallel=False)
    assert [call.name for call in reply.tool_calls] == ["calculator"]


def test_tool_choice_none_and_named_narrow_the_offered_tools() -> None:
    tools = [{"type": "function", "function": {"name": n}} for n in ("calculator", "clock")]
    base: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools}
    assert decode_chat_request(msgspec.json.encode(base | {"tool_choice": "none"})).tool_names == frozenset()
    named = base | {"tool_choice": {"type": "function", "function": {"name": "clock"}}}
    assert decode_chat_request(msgspec.json.encode(named)).tool_names == {"clock"}
    assert decode_chat_request(msgspec.json.encode(base)).tool_names == {"calculator", "clock"}


def test_text_reply_says_what_it_is_restates_the_request_and_is_long_enough_to_stream() -> None:
    reply = decide_reply(user("Plan   a trip [fault:stall:1] to Mars"), ALL_TOOLS)
    assert reply.text is not None
    assert reply.text.startswith("I am the Sluice demo model (not a real LLM).")
    assert 'You asked: "Plan a trip to Mars".' in reply.text
    assert reply.completion_tokens >= 30 and reply.finish_reason == "stop"


def test_text_reply_is_deterministic() -> None:
    messages = user("hello")
    assert decide_reply(messages, ALL_TOOLS) == decide_reply(messages, ALL_TOOLS)


def test_system_role_hint_is_mentioned() -> None:
    messages = [ChatMessage(role="system", content="You are the architect. Be brief."), *user("design it")]
    assert role_hint(messages) == "the architect"
    assert "playing the architect" in (decide_reply(messages, ALL_TOOLS).text or "")


def test_tool_results_are_quoted_verbatim_per_tool() -> None:
    calls = [
        ToolCallIn(id="a", function=FunctionCallIn(name="calculator", arguments='{"expression":"17*23"}')),
        ToolCallIn(id="b", function=FunctionCallIn(name="clock", arguments="{}")),
    ]
    messages = [
        *user("what is 17*23 and what time is it"),
        ChatMessage(role="assistant", tool_calls=calls),
        ChatMessage(role="tool", tool_call_id="a", content="391"),
        ChatMessage(role="tool", tool_call_id="b", content="2026-01-01T00:00:00+00:00"),
    ]
    text = decide_reply(messages, ALL_TOOLS).text or ""
    assert text.startswith("17*23 = 391. The result is 391.")
    assert "The clock says: 2026-01-01T00:00:00+00:00." in text
    assert "Sluice demo model" in text


def test_a_failed_tool_is_reported_as_failed() -> None:
    call = ToolCallIn(id="a", function=FunctionCallIn(name="calculator", arguments='{"expression":"1/0"}'))
    messages = [
        *user("what is 1/0"),
        ChatMessage(role="assistant", tool_calls=[call]),
        ChatMessage(role="tool", tool_call_id="a", content='{"error": "division by zero"}'),
    ]
    assert (decide_reply(messages, ALL_TOOLS).text or "").startswith("The calculator tool failed: division by zero.")


def test_prompt_tokens_count_every_message_and_tool_call() -> None:
    call = ToolCallIn(id="a", function=FunctionCallIn(name="clock", arguments="{}"))
    messages = [*user("what time is it?"), ChatMessage(role="assistant", tool_calls=[call])]
    assert prompt_tokens(messages) == 5 + 1 + 2


def test_text_pieces_rebuild_the_text_and_tokens_are_counted_by_words_and_marks() -> None:
    text = "I am  the demo.\nIt streams: word by word. "
    assert "".join(text_pieces(text)) == text
    assert text_pieces("a b") == ["a ", "b"]
    assert count_tokens("17*23 = 391.") == 6
    assert "".join(argument_fragments('{"expression":"17*23"}')) == '{"expression":"17*23"}'


def test_fault_markers_parse_from_text_and_header() -> None:
    plan = parse_faults("hi [fault:429-once] [FAULT:cut:3] [fault:stall:0.5]", "slow:20, bad-args")
    assert plan.status is not None and (plan.status.status, plan.status.once) == (429, True)
    assert plan.cut is not None and (plan.cut.after_chunks, plan.cut.once) == (3, False)
    assert (plan.stall_s, plan.slow_ms, plan.bad_args) == (0.5, 20.0, True)
    assert plan.markers == ("429-once", "cut:3", "stall:0.5", "slow:20", "bad-args")
    header_plan = parse_faults("", "[fault:500-always]")
    assert header_plan.status is not None and (header_plan.status.status, header_plan.status.once) == (500, False)
    cut_once = parse_faults("[fault:cut-once:2]").cut
    assert cut_once is not None and cut_once.once
    assert parse_faults("no faults here") == parse_faults("")


def test_the_long_marker_lengthens_a_text_reply_to_exactly_its_size_and_leaves_tool_calls() -> None:
    assert parse_faults("tell me [fault:long:100000]").long_chars == 100_000
    text = lengthened(Reply(text="I am the demo."), 100_000).text
    assert text is not None and len(text) == 100_000 and text.startswith("I am the demo. filler-filler")
    assert len(text_pieces(text)) < 120  # about a kilobyte a piece: a long answer streams in few chunks
    assert lengthened(Reply(text="already long enough"), 5) == Reply(text="already long enough")
    calls = Reply(text=None, tool_calls=(PlannedCall("calculator", "{}"),))
    assert lengthened(calls, 1000) == calls


@pytest.mark.parametrize(
    "marker", ["[fault:explode]", "[fault:200]", "[fault:stall:9999]", "[fault:cut:x]", "[fault:long:5000000]"]
)
def test_bad_fault_markers_are_rejected(marker: str) -> None:
    with pytest.raises(FaultSyntaxError):
        parse_faults(f"hello {marker}")


def test_markers_are_stripped_and_arguments_corrupted() -> None:
    assert strip_markers("what [fault:429]  is 2+2 [fault:cut:1]") == "what is 2+2"
    with pytest.raises(json.JSONDecodeError):
        json.loads(corrupt_arguments('{"expression":"17*23"}'))


def test_once_ledger_fires_once_per_conversation_and_marker() -> None:
    ledger = OnceLedger(capacity=2)
    key = once_key("first user message")
    assert ledger.first_time(key, "500-once") and not ledger.first_time(key, "500-once")
    assert ledger.first_time(key, "cut-once:3")
    assert ledger.first_time(once_key("other"), "500-once")
    assert ledger.first_time(key, "500-once"), "the oldest entry is forgotten beyond capacity"
    assert once_key("x", "explicit") != once_key("x")


def test_streamed_chunks_open_each_tool_call_with_id_type_name_and_empty_arguments() -> None:
    answer = Answer(
        completion_id="chatcmpl-1",
        model="m",
        created=1,
        text=None,
        tool_calls=(IssuedCall("call_a", "calculator", '{"expression":"2+2"}'), IssuedCall("call_b", "clock", "{}")),
        usage=Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3),
    )
    stream = encode_chunks(answer, include_usage=True)
    chunks = [json.loads(c) for c in stream.chunks]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    headers = [d for c in chunks for ch in c["choices"] for d in ch["delta"].get("tool_calls", []) if "id" in d]
    assert headers == [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "calculator", "arguments": ""}},
        {"index": 1, "id": "call_b", "type": "function", "function": {"name": "clock", "arguments": ""}},
    ]
    assert chunks[stream.finish_index]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 3
    assert all(c["usage"] is None and c["object"] == "chat.completion.chunk" for c in chunks[:-1])
    completion = json.loads(encode_completion(answer))
    assert completion["choices"][0]["message"]["tool_calls"][1]["function"] == {"name": "clock", "arguments": "{}"}


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'{"model": "m"}', b'{"model": "m", "messages": []}'])
def test_malformed_requests_are_request_errors(body: bytes) -> None:
    with pytest.raises(RequestError):
        decode_chat_request(body)


def test_multipart_user_content_is_read_as_text() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "what is 6*7"}]}]}
    request: ChatRequest = decode_chat_request(msgspec.json.encode(body))
    assert calls_of(decide_reply(request.messages, ALL_TOOLS)) == [("calculator", {"expression": "6*7"})]
