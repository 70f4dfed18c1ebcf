"""The agent card (`GET /.well-known/agent-card.json`): what Sluice offers an A2A client, and where.

URLs come from the edge's `base_url` (`SLUICE_PUBLIC_URL`, else its own `http://host:port`), never from the
request. One skill per agent and crew of the live catalog (CONTRACT §9: what the agent-runners advertise); the
route rebuilds the card when the catalog changes and serves it from memory otherwise.

Two shapes (`card_document`): a client gets the A2A 1.0 card — exactly the 1.0 `AgentCard` message, no 0.3-only
top-level fields (`url`, `preferredTransport`, `protocolVersion`, `additionalInterfaces`) — unless it asks for 0.3
with `A2A-Version: 0.3`, which gets the SDK's card with the 0.3 fields added. Each body has its own `ETag`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentExtension,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from a2a.utils.constants import PROTOCOL_VERSION_0_3, PROTOCOL_VERSION_1_0, TransportProtocol
from google.protobuf import json_format, struct_pb2

from sluice.catalog import AgentEntry
from sluice.catalog.adverts import sluice_version
from stream_edge.a2a.mapping import REPLAY_EXTENSION

__all__ = [
    "DEFAULT_AGENT",
    "INPUT_MODES",
    "JSONRPC_PATH",
    "OUTPUT_MODES",
    "REST_PREFIX",
    "CardDocument",
    "agent_card",
    "card_document",
]

JSONRPC_PATH = "/a2a"
# The HTTP+JSON binding lives under a prefix: its 0.3 paths (`/v1/tasks/{id}`, ...) would otherwise collide with
# Sluice's own `/v1/tasks/{id}`, and its catch-all tenant routes with everything else.
REST_PREFIX = "/a2a/rest"
DEFAULT_AGENT = "assistant"
_BEARER = "bearer"
INPUT_MODES = ["text/plain", "application/json"]
OUTPUT_MODES = ["text/plain", "application/json"]

_DESCRIPTION = (
    "Sluice runs AI agent tasks as services over NATS JetStream and streams every task's events with durable, "
    "exact replay. Each skill is a Sluice agent or crew; pick one with message metadata "
    '{"agent": "<skill id>"} (default "assistant"). A task that needs the user ends its stream in '
    "TASK_STATE_INPUT_REQUIRED; answer with a message carrying its taskId (text, or a data part "
    '{"approve": true|false} for an approval).'
)
_REPLAY_DESCRIPTION = (
    "Exact replay of task streams. Every SSE event of SendStreamingMessage / SubscribeToTask carries an `id:` line "
    "(the Sluice event id, also in each event's metadata under this URI as `eventId`). SubscribeToTask with the "
    "header `Last-Event-ID: <id>` continues a cut stream right after that event, on any edge replica: nothing is "
    "repeated and nothing lost (no Task snapshot is re-sent; the stream resumes where it stopped)."
)


def _skill(entry: AgentEntry) -> AgentSkill:
    examples = {
        "assistant": ["What is 17 * 23?", "Ask me which city to convert the temperature for."],
        "dev-team": ["Design and write a function that reverses a linked list."],
    }.get(entry.name, [])
    tags = ("crew", entry.name, *entry.stages) if entry.crew else ("agent", entry.name, *entry.tools)
    return AgentSkill(
        id=entry.name,
        name=entry.name,
        description=entry.description or entry.name,
        tags=list(tags),
        examples=examples,
        input_modes=INPUT_MODES,
        output_modes=OUTPUT_MODES,
    )


def _security(card: AgentCard, auth_methods: tuple[str, ...]) -> None:
    """What an A2A client must send (CONTRACT §8): an HTTP bearer credential — an API key or an OIDC token."""
    if not auth_methods:
        return
    kinds = " or ".join({"keys": "a Sluice API key", "jwt": "an OIDC / JWT access token"}[m] for m in auth_methods)
    scheme = HTTPAuthSecurityScheme(
        scheme="Bearer", bearer_format="JWT" if auth_methods == ("jwt",) else "", description=f"Bearer {kinds}"
    )
    card.security_schemes[_BEARER].CopyFrom(SecurityScheme(http_auth_security_scheme=scheme))
    requirement = SecurityRequirement()
    requirement.schemes[_BEARER].CopyFrom(StringList())
    card.security_requirements.append(requirement)


def agent_card(base_url: str, agents: Sequence[AgentEntry], auth_methods: tuple[str, ...] = ()) -> AgentCard:
    """The card for an edge reachable at `base_url` offering `agents` (the catalog's) as skills, and accepting
    `auth_methods` (`keys`, `jwt`; none: an open edge)."""
    base = base_url.rstrip("/")
    # 1.0 first: a 1.0 client picks those; a 0.3 client reads the legacy fields the SDK derives from the rest.
    interfaces = [
        AgentInterface(url=base + path, protocol_binding=binding.value, protocol_version=version)
        for version in (PROTOCOL_VERSION_1_0, PROTOCOL_VERSION_0_3)
        for binding, path in ((TransportProtocol.JSONRPC, JSONRPC_PATH), (TransportProtocol.HTTP_JSON, REST_PREFIX))
    ]
    params = struct_pb2.Struct()
    params.update({"header": "Last-Event-ID", "metadataKey": REPLAY_EXTENSION, "metadataField": "eventId"})
    card = AgentCard(
        name="Sluice",
        description=_DESCRIPTION,
        version=sluice_version(),
        provider=AgentProvider(organization="Sluice", url=base),
        documentation_url=base + "/docs",
        supported_interfaces=interfaces,
        capabilities=AgentCapabilities(
            streaming=True,
            push_notifications=False,
            extensions=[
                AgentExtension(uri=REPLAY_EXTENSION, description=_REPLAY_DESCRIPTION, required=False, params=params)
            ],
        ),
        default_input_modes=INPUT_MODES,
        default_output_modes=OUTPUT_MODES,
        skills=[_skill(entry) for entry in agents],
    )
    _security(card, auth_methods)
    return card


@dataclass(frozen=True)
class CardDocument:
    body: bytes
    etag: str


@functools.lru_cache(maxsize=16)
def card_document(
    base_url: str, agents: tuple[AgentEntry, ...], *, legacy: bool = False, auth_methods: tuple[str, ...] = ()
) -> CardDocument:
    """The card's JSON bytes and ETag: the 1.0 card, or with `legacy` the card a 0.3 client reads. Cached per
    catalog state (entries without runner counts, so a runner coming or going does not rebuild the card)."""
    card = agent_card(base_url, agents, auth_methods)
    shape = agent_card_to_dict(card) if legacy else json_format.MessageToDict(card)
    body = json.dumps(shape, separators=(",", ":"), sort_keys=True).encode()
    return CardDocument(body=body, etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"')
