"""The tool protocol in the AsyncAPI document: everything a tool-runner in any language needs (CONTRACT §9).

`build_document` (asyncapi.py) adds these channels, operations and messages: the catalog advertisement, the tool
call, and the two events a tool-runner publishes, with their `Nats-Msg-Id`s and the checks that make a redelivered
call safe. Names come from the builders in `sluice.subjects`; payload schemas from the Structs that encode them.
"""

from __future__ import annotations

from typing import Any

from sluice import subjects
from sluice.catalog import KnownAgent, RunnerAdvert

__all__ = ["ADVERT_TYPES", "TOOL_RUNNER_STEPS", "tool_channels", "tool_messages", "tool_operations"]

ADVERT_TYPES = (RunnerAdvert, KnownAgent)
_BUCKET = subjects.CATALOG_BUCKET
_TOOL_KEY = subjects.catalog_runner_key("tool-runner", "RUNNER").replace("RUNNER", "{runner_id}")
_KNOWN_KEY = subjects.catalog_known_key("AGENT").replace("AGENT", "{agent}")
_CALL = subjects.tool_call("NAME", "TASK0000").replace("NAME", "{name}").replace("TASK0000", "{task_id}")
_STARTED = subjects.event("TASK0000", "tool.started").replace("TASK0000", "{task_id}")
_COMPLETED = subjects.event("TASK0000", "tool.completed").replace("TASK0000", "{task_id}")

TOOL_RUNNER_STEPS = f"""A tool-runner in any language does exactly this.

1. Advertise. Publish a RunnerAdvert (`kind` "tool-runner", `runner` = your id, `started_at` = when you started
   (RFC 3339), `ttl_s`, and `tools`: each with `name` matching ^[A-Za-z0-9_-]{{1,64}}$, `description`,
   `input_schema` (a JSON Schema object: `type` "object") and `timeout_s`) to `$KV.{_BUCKET}.{_TOOL_KEY}` with the
   header `Nats-TTL: <ttl_s>s`. Publish it again every ttl_s/3 while you live. On a clean stop publish an empty
   payload to the same subject with the header `KV-Operation: DEL`. If you die, the TTL removes the entry. Another
   runner's tool of the same name must have the same input_schema, or yours is not counted for it.
2. Consume. Bind to the durable pull consumer `{subjects.TOOL_CONSUMER}` on stream `{subjects.TOOLS_STREAM}` (never
   create or change it: provisioning owns it). Fetch at most as many messages as you run at once. Each message is a
   ToolCallMessage on `{_CALL}`.
3. For each message, in this order:
   a. It does not decode, or its task_id does not match ^[A-Za-z0-9_-]{{8,64}}$ → term it (`+TERM`).
   b. Read the task record (KV `{subjects.TASKS_BUCKET}`, key = task_id). No record, or its `state` is completed,
      failed or canceled → ack it, publish nothing.
   b2. A tool you do not serve, that another live runner advertises (the catalog above): pass it on — note a
      hand-back (KV `{subjects.HANDBACKS_BUCKET}`, key `{subjects.TOOLS_STREAM}.<the message's stream sequence>`, the
      value a decimal count you increment with a KV create / compare-and-set update) and nak it with a short delay.
      A noted hand-back does not count toward the poison limit; a delivery without one counts as a crash.
   c. Redelivery check: if the message's delivery count (the 5th token of its `$JS.ACK...` reply subject) is more
      than 1, read the task's events on `{_COMPLETED}` (stream `{subjects.EVENTS_STREAM}`). If one has
      `data.call_id` equal to this call's → ack, do not run the tool again, publish nothing. Do the same for
      `tool.started` to avoid publishing it twice.
   d. Publish `tool.started` to `{_STARTED}` with `Nats-Msg-Id: {{task_id}}:tool:{{call_id}}:start`.
   e. Run the tool for at most min(timeout_s, deadline_s) seconds (deadline_s 0 means timeout_s). While it runs,
      send in-progress acks (`+WPI`) every third of the consumer's ack wait.
   f. Publish `tool.completed` to `{_COMPLETED}` with `Nats-Msg-Id: {{task_id}}:tool:{{call_id}}:done`: data
      `call_id`, `name`, `ok`, `result` (when ok) or `error` (when not), `duration_ms`. A result over your output
      limit is cut, and says so. A tool you do not serve is `ok: false`, error "unknown tool '<name>'".
   g. Ack. If NATS failed on the way, note a hand-back and nak with a delay instead: the call comes back, and the
      checks above and the Nats-Msg-Ids make the retry harmless. When the crashes behind a delivery (its earlier
      deliveries less the hand-backs noted for it) reach the configured maximum (default 5), publish
      `tool.completed` with `ok: false` and term.
   Every event is the JSON envelope {{"task_id", "type", "ts" (RFC 3339 UTC, milliseconds), "source":
   "tool-runner", "trace_id", "data"}} (stored without `id`), and carries `traceparent` from the call's headers.
"""


def tool_messages() -> dict[str, Any]:
    def message(name: str, title: str, schema: str, description: str, headers: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "title": title,
            "description": description,
            "contentType": "application/json",
            "headers": headers,
            "payload": {"$ref": f"#/components/schemas/{schema}"},
        }

    ttl_headers = {
        "type": "object",
        "properties": {
            "Nats-TTL": {"type": "string", "description": "How long the entry lives unless refreshed, e.g. `15s`."},
            "KV-Operation": {"type": "string", "enum": ["DEL"], "description": "Only on the removal at a clean stop."},
        },
    }
    return {
        "RunnerAdvert": message(
            "runner_advert", "A live runner's advertisement", "RunnerAdvert",
            "Written with a per-message TTL and refreshed every third of it; removed at a clean stop.", ttl_headers,
        ),
        "KnownAgent": message(
            "known_agent", "An agent some runner once advertised", "KnownAgent",
            "No TTL. `withdrawn: true` (an operator's act) makes the edge refuse the agent.", {"type": "object"},
        ),
    }  # fmt: skip


def tool_channels() -> dict[str, Any]:
    return {
        "catalogRunners": {
            "address": f"$KV.{_BUCKET}.runners.{{kind}}.{{runner_id}}",
            "title": "The catalog: live runners' advertisements",
            "description": (
                f"KV bucket `{_BUCKET}` (per-message TTLs on; an entry whose TTL ends leaves a delete marker, so a "
                "watcher learns at once). `kind` is `tool-runner` or `agent-runner`. " + TOOL_RUNNER_STEPS
            ),
            "parameters": {
                "kind": {"enum": ["tool-runner", "agent-runner"]},
                "runner_id": {"description": "^[A-Za-z0-9_-]{1,128}$"},
            },
            "messages": {"RunnerAdvert": {"$ref": "#/components/messages/RunnerAdvert"}},
        },
        "catalogKnownAgents": {
            "address": f"$KV.{_BUCKET}.{_KNOWN_KEY}",
            "title": "The catalog: every agent ever advertised",
            "description": "Written by agent-runners with a KV create (an existing key is left alone).",
            "parameters": {"agent": {"description": "^[A-Za-z0-9_-]{1,64}$"}},
            "messages": {"KnownAgent": {"$ref": "#/components/messages/KnownAgent"}},
        },
    }


def tool_operations() -> dict[str, Any]:
    def op(action: str, channel: str, summary: str, message: str, description: str = "") -> dict[str, Any]:
        out = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
        }
        if description:
            out["description"] = description
        return out

    return {
        "advertise": op("send", "catalogRunners", "A runner advertises what it serves", "RunnerAdvert"),
        "watchCatalog": op("receive", "catalogRunners", "Edges and agent-runners watch the catalog", "RunnerAdvert"),
        "registerAgent": op("send", "catalogKnownAgents", "An agent-runner registers its agents", "KnownAgent"),
        "serveToolCall": op(
            "receive", "toolCalls", "A tool-runner serves a tool call", "ToolCallMessage", TOOL_RUNNER_STEPS
        ),
    }
