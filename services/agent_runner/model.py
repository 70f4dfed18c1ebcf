"""The model adapter: OpenAI Chat Completions, streamed, with tools, through the openai SDK.

The SDK's own retries are off (`max_retries=0`): the agent loop owns retries, because each one must show in the
log as a new `llm.started`. Every openai exception is translated here, and only here, into `ModelCallError`:

    openai.RateLimitError (429)                 → model_unavailable / rate_limited, retryable (+ Retry-After)
    openai.InternalServerError (5xx), 408, 409  → model_unavailable / server_error, retryable
    openai.APITimeoutError                      → model_unavailable / timeout, retryable
    openai.APIConnectionError                   → model_unavailable / connection, retryable
    a stream that breaks off or ends without
    a finish_reason                             → model_unavailable / stream_cut, retryable
    any other openai.APIStatusError (4xx)       → model_error / rejected, not retryable
    openai.APIError (error inside the stream)   → model_error / stream_error, not retryable

The request goes through `AsyncOpenAI.post("/chat/completions", stream=True)`: the SDK's auth, headers, status
errors, SSE decoding and error mapping, but chunks as decoded JSON rather than the SDK's typed objects, which
halved the runner's CPU per task (19 → 10 ms for a 70-token answer, bench/runner_pipeline.py).

Each call gets a `chat {model}` span (OpenTelemetry GenAI conventions) and feeds the gen_ai_* metrics.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import openai
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from agent_runner.metrics import MODEL_DURATION, TOKEN_USAGE
from agent_runner.ports import ChatRequest, ModelCallError, ModelReply
from sluice.events import ToolCall
from sluice.telemetry import capture_message_content
from sluice.tracing import genai_input_messages, genai_output_messages, server_attributes

__all__ = ["OpenAIModel"]

_tracer = trace.get_tracer("agent_runner.model")
_UNAVAILABLE = "model_unavailable"
_RETRYABLE_STATUS = frozenset({408, 409, 429})


@dataclass
class _PartialCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    raw = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def translate(exc: openai.OpenAIError) -> ModelCallError:
    """The one mapping from openai exceptions to `ModelCallError`."""
    if isinstance(exc, openai.APITimeoutError):
        message = "the model did not answer in time (or its stream went silent)"
        return ModelCallError(_UNAVAILABLE, message, reason="timeout", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return ModelCallError(
            _UNAVAILABLE, f"lost the connection to the model: {exc}", reason="connection", retryable=True
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return ModelCallError(
                _UNAVAILABLE,
                f"the model is rate limited (429): {exc.message}",
                reason="rate_limited",
                retryable=True,
                retry_after_s=_retry_after(exc),
            )
        if status >= 500 or status in _RETRYABLE_STATUS:
            return ModelCallError(
                _UNAVAILABLE,
                f"the model server failed ({status}): {exc.message}",
                reason="server_error",
                retryable=True,
                retry_after_s=_retry_after(exc),
            )
        message = f"the model refused the request ({status}): {exc.message}"
        return ModelCallError("model_error", message, reason="rejected", retryable=False)
    if isinstance(exc, openai.APIError):
        return ModelCallError("model_error", f"the model stream failed: {exc.message}", reason="stream_error",
                              retryable=False)  # fmt: skip
    return ModelCallError("model_error", f"model client error: {exc}", reason="client_error", retryable=False)


def _cut() -> ModelCallError:
    return ModelCallError(
        _UNAVAILABLE, "the model stream ended before the model finished", reason="stream_cut", retryable=True
    )


class OpenAIModel:
    """`ModelClient` for any OpenAI-compatible server."""

    def __init__(self, *, base_url: str, api_key: str, timeout_s: float = 60.0, connect_timeout_s: float = 5.0) -> None:
        self.client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            max_retries=0,
            timeout=openai.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s)),
        )
        self.server = base_url

    async def close(self) -> None:
        await self.client.close()

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str | ModelReply, None]:
        span = _tracer.start_span(f"chat {request.model}", kind=SpanKind.CLIENT)
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": request.model,
                **server_attributes(self.server),
            }
        )
        if capture_message_content():
            span.set_attribute("gen_ai.input.messages", genai_input_messages(request.messages))
        started = time.perf_counter()
        error_type = ""
        try:
            async for item in self._stream(request, span):
                yield item
        except ModelCallError as exc:
            error_type = exc.reason
            span.set_status(Status(StatusCode.ERROR, exc.message))
            span.set_attribute("error.type", exc.reason)
            raise
        except BaseException as exc:  # cancelled or closed early: record it, re-raise it
            error_type = type(exc).__name__
            raise
        finally:
            MODEL_DURATION.labels("chat", request.model, error_type).observe(time.perf_counter() - started)
            span.end()

    async def _stream(self, request: ChatRequest, span: trace.Span) -> AsyncGenerator[str | ModelReply, None]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = request.tools
        content: list[str] = []
        calls: dict[int, _PartialCall] = {}
        finish_reason: str | None = None
        usage: dict[str, Any] = {}
        model = request.model
        streaming = False
        try:
            # `POST /chat/completions` through the SDK (its auth, headers, status errors and SSE decoding, and its
            # error mapping of a broken stream), with chunks left as the decoded JSON: building the SDK's typed
            # chunk objects cost more CPU than everything else a runner does per token (bench/runner_pipeline.py).
            stream = await self.client.post(
                "/chat/completions", body=body, cast_to=object, stream=True, stream_cls=openai.AsyncStream[object]
            )
            streaming = True
            async with stream:
                async for chunk in stream:
                    if not isinstance(chunk, dict):
                        continue
                    model = chunk.get("model") or model
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if text := delta.get("content"):
                            content.append(text)
                            yield text
                        for tc in delta.get("tool_calls") or ():
                            partial = calls.setdefault(int(tc.get("index") or 0), _PartialCall())
                            if tc.get("id"):
                                partial.call_id = tc["id"]
                            function = tc.get("function") or {}
                            partial.name += function.get("name") or ""
                            partial.arguments.append(function.get("arguments") or "")
                        if choice.get("finish_reason"):
                            finish_reason = choice["finish_reason"]
        except openai.APIConnectionError as exc:
            if streaming and not isinstance(exc, openai.APITimeoutError):
                raise _cut() from exc
            raise translate(exc) from exc
        except openai.OpenAIError as exc:
            raise translate(exc) from exc
        if finish_reason is None:
            raise _cut()
        input_tokens = int(usage.get("prompt_tokens") or 0)
        output_tokens = int(usage.get("completion_tokens") or 0)
        TOKEN_USAGE.labels("chat", request.model, "input").observe(input_tokens)
        TOKEN_USAGE.labels("chat", request.model, "output").observe(output_tokens)
        span.set_attributes(
            {
                "gen_ai.response.model": model,
                "gen_ai.usage.input_tokens": input_tokens,
                "gen_ai.usage.output_tokens": output_tokens,
                "gen_ai.response.finish_reasons": [finish_reason],
            }
        )
        tool_calls = [
            ToolCall(call_id=p.call_id, name=p.name, arguments="".join(p.arguments)) for _, p in sorted(calls.items())
        ]
        if capture_message_content():
            span.set_attribute(
                "gen_ai.output.messages", genai_output_messages("".join(content), tool_calls, finish_reason)
            )
        yield ModelReply(
            content="".join(content),
            tool_calls=tool_calls,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish_reason=finish_reason,
            model=model,
        )
