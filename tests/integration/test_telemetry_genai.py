"""The agent-runner's `chat <model>` span against the demo model: GenAI attributes and token counts always, message
content only when OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT is on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from agent_runner.model import OpenAIModel
from agent_runner.ports import ChatRequest, ModelReply
from demo_llm.main import running_server as running_demo
from demo_llm.settings import DemoLLMSettings
from sluice.tracing import genai_input_messages, genai_output_messages, server_attributes
from support.catalog import static_tools as tool_descriptors
from support.otlp_receiver import span_capture

tracer = trace.get_tracer("tests")


@pytest.fixture(scope="module")
async def model() -> AsyncIterator[OpenAIModel]:
    async with running_demo(DemoLLMSettings(port=0), log_level="warning") as demo:
        client = OpenAIModel(base_url=demo.base_url, api_key="demo")
        yield client
        await client.close()


async def _chat(model: OpenAIModel, messages: list[dict[str, Any]]) -> tuple[ModelReply, ReadableSpan]:
    capture = span_capture()
    request = ChatRequest(model="sluice-demo", messages=messages, tools=[tool_descriptors()["calculator"].spec])
    with tracer.start_as_current_span("invoke_agent assistant") as parent:
        reply = [item async for item in model.stream(request) if isinstance(item, ModelReply)][-1]
    (span,) = capture.spans(trace_id=parent.get_span_context().trace_id, name="chat sluice-demo")
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    return reply, span


async def test_a_chat_span_has_the_genai_attributes_and_no_content_by_default(
    model: OpenAIModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sluice.telemetry._capture_content", False)
    reply, span = await _chat(model, [{"role": "user", "content": "what is 17*23?"}])
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "sluice-demo"
    assert attrs["gen_ai.response.model"] == reply.model
    assert attrs["gen_ai.usage.input_tokens"] == reply.input_tokens > 0
    assert attrs["gen_ai.usage.output_tokens"] == reply.output_tokens > 0
    assert attrs["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert attrs["server.address"] == "127.0.0.1" and isinstance(attrs["server.port"], int)
    assert "gen_ai.input.messages" not in attrs and "gen_ai.output.messages" not in attrs


async def test_message_content_is_recorded_when_capture_is_on(
    model: OpenAIModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sluice.telemetry._capture_content", True)
    reply, span = await _chat(model, [{"role": "user", "content": "what is 17*23?"}])
    attrs = dict(span.attributes or {})
    assert json.loads(str(attrs["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "what is 17*23?"}]}
    ]
    (output,) = json.loads(str(attrs["gen_ai.output.messages"]))
    assert output["role"] == "assistant" and output["finish_reason"] == "tool_calls"
    calls = [p for p in output["parts"] if p["type"] == "tool_call"]
    assert [(c["id"], c["name"]) for c in calls] == [(c.call_id, c.name) for c in reply.tool_calls]


def test_openai_messages_map_to_the_conventions_role_and_parts_shape() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "391"},
    ]  # fmt: skip
    assert json.loads(genai_input_messages(messages)) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "calculator", "arguments": "{}"}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "391"}]},
    ]
    assert json.loads(genai_output_messages("391.", [], "stop")) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "391."}], "finish_reason": "stop"}
    ]
    assert server_attributes("https://api.openai.com/v1") == {"server.address": "api.openai.com", "server.port": 443}
    assert server_attributes("http://demo:8081/v1") == {"server.address": "demo", "server.port": 8081}
