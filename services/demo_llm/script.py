"""What the demo model replies: a pure function of the conversation and the tools offered, no I/O.

1. The last message is a ``tool`` result: answer from the results, quoting each verbatim
   (``17*23 = 391. The result is 391.``).
2. The last message is a ``user`` message that asks for what an offered tool does: call it, one call per
   request in the message (two requests make parallel calls). See :mod:`demo_llm.intents`.
3. Otherwise: say plainly that this is the Sluice demo model, restate the request, and add a few sentences
   so a stream has many chunks. A role hint in a system message ("You are the architect") is mentioned.

Fault markers are removed from the user's words before any of this (see :mod:`demo_llm.faults`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from demo_llm.faults import strip_markers
from demo_llm.intents import detect_intents
from demo_llm.tokens import count_tokens
from demo_llm.wire import ChatMessage, ToolCallIn, message_text

__all__ = [
    "PlannedCall",
    "Reply",
    "decide_reply",
    "first_user_text",
    "last_user_text",
    "lengthened",
    "prompt_tokens",
    "role_hint",
]

MAX_RESTATED_CHARS = 400
MAX_QUOTED_RESULT_CHARS = 2000

_ROLE = re.compile(
    r"\byou\s+are\s+(?P<role>(?:the|an?)\s+[\w-]+(?:\s+[\w-]+){0,3}?|[\w-]+)"
    r"(?=\s*[.,;:!?\n]|\s+(?:who|that|and|with|in|for|on|of)\b|\s*$)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """A tool call the reply makes; ``arguments`` is JSON text."""

    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Reply:
    """Either text or tool calls (never both)."""

    text: str | None
    tool_calls: tuple[PlannedCall, ...] = ()

    @property
    def finish_reason(self) -> Literal["stop", "tool_calls"]:
        return "tool_calls" if self.tool_calls else "stop"

    @property
    def completion_tokens(self) -> int:
        calls = sum(count_tokens(call.name) + count_tokens(call.arguments) for call in self.tool_calls)
        return count_tokens(self.text or "") + calls


def decide_reply(messages: Sequence[ChatMessage], tool_names: Collection[str], *, parallel: bool = True) -> Reply:
    """The reply to ``messages`` when the tools named in ``tool_names`` are on offer."""
    if messages and messages[-1].role == "tool":
        return Reply(text=_answer_from_tool_results(messages))
    if messages and messages[-1].role == "user" and tool_names:
        intents = [i for i in detect_intents(strip_markers(message_text(messages[-1]))) if i.name in tool_names]
        calls = tuple(PlannedCall(i.name, json.dumps(i.arguments, separators=(",", ":"))) for i in intents)
        if calls:
            return Reply(text=None, tool_calls=calls if parallel else calls[:1])
    return Reply(text=_introduce_and_restate(messages))


# A filler word of about a kilobyte: a long answer streams in about a thousand chunks a megabyte, not a
# hundred and fifty thousand (the stream is cut into words).
_FILLER = "filler-" * 146 + "filler "


def lengthened(reply: Reply, chars: int) -> Reply:
    """A text reply grown to exactly ``chars`` characters with filler words; tool calls stay as they are."""
    if reply.text is None or len(reply.text) >= chars:
        return reply
    missing = chars - len(reply.text) - 1
    filler = (_FILLER * (missing // len(_FILLER) + 1))[:missing]
    return Reply(text=f"{reply.text} {filler}", tool_calls=reply.tool_calls)


def last_user_text(messages: Sequence[ChatMessage]) -> str:
    """Text of the last ``user`` message (fault markers included), or ``""``."""
    return next((message_text(m) for m in reversed(messages) if m.role == "user"), "")


def first_user_text(messages: Sequence[ChatMessage]) -> str:
    """Text of the first ``user`` message (fault markers included), or ``""``."""
    return next((message_text(m) for m in messages if m.role == "user"), "")


def prompt_tokens(messages: Sequence[ChatMessage]) -> int:
    """Tokens in every message: its text plus the names and arguments of any tool calls it made."""
    total = 0
    for message in messages:
        total += count_tokens(message_text(message))
        for call in message.tool_calls or ():
            total += count_tokens(call.function.name) + count_tokens(call.function.arguments)
    return total


def role_hint(messages: Sequence[ChatMessage]) -> str | None:
    """The role a system (or developer) message gives the model, e.g. ``"the architect"``."""
    for message in messages:
        if message.role in ("system", "developer") and (m := _ROLE.search(message_text(message))):
            return re.sub(r"\s+", " ", m.group("role"))
    return None


def _introduce_and_restate(messages: Sequence[ChatMessage]) -> str:
    asked = re.sub(r"\s+", " ", strip_markers(last_user_text(messages)))
    if len(asked) > MAX_RESTATED_CHARS:
        asked = asked[:MAX_RESTATED_CHARS].rstrip() + "…"
    role = role_hint(messages)
    who = "I am the Sluice demo model (not a real LLM)" + (f", playing {role}" if role else "")
    restated = f'You asked: "{asked}".' if asked else "I found no question to restate."
    return (
        f"{who}. {restated} I cannot really think about it, so this is a scripted reply, streamed word by "
        "word so you can watch the tokens arrive. Offer me a tool such as calculator, clock, convert_units, "
        "search_docs or ask_user, ask for what it does, and I will call it."
    )


def _answer_from_tool_results(messages: Sequence[ChatMessage]) -> str:
    results: list[ChatMessage] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.insert(0, message)
    calls = {call.id: call for m in messages if m.role == "assistant" for call in m.tool_calls or ()}
    sentences = [_describe_result(calls.get(r.tool_call_id or ""), r) for r in results]
    return " ".join(sentences) + " (Answered by the Sluice demo model from the tool results.)"


def _describe_result(call: ToolCallIn | None, result: ChatMessage) -> str:
    name = call.function.name if call else (result.name or "tool")
    args = _json_object(call.function.arguments) if call else {}
    outcome = _json_object(message_text(result))
    if "error" in outcome or outcome.get("ok") is False:
        return f"The {name} tool failed: {_quote(outcome.get('error', message_text(result)))}."
    value = _quote(outcome["result"]) if "result" in outcome else _quote(message_text(result))
    if name == "calculator" and "expression" in args:
        return f"{args['expression']} = {value}. The result is {value}."
    if name == "convert_units" and {"value", "from_unit", "to_unit"} <= args.keys():
        return f"{args['value']} {args['from_unit']} in {args['to_unit']} is {value}."
    if name == "clock":
        return f"The clock says: {value}."
    if name == "search_docs" and "query" in args:
        return f'Searching the docs for "{args["query"]}" found: {value}'
    if name == "ask_user":
        return f'You answered: "{value}".'
    return f"The {name} tool returned: {value}"


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _quote(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = text.strip()
    return text if len(text) <= MAX_QUOTED_RESULT_CHARS else text[:MAX_QUOTED_RESULT_CHARS] + "…"
