"""Identity at the edge (CONTRACT §8), tested from outside: a running edge with API keys and JWTs, two tenants.

Real parts: nats-server, the edge on a real socket, the agent-runner worker and the demo model (for the A2A client
that must get its answer with a bearer key), PyJWT-signed tokens against a JWKS file the test writes and rotates.
Every guard has a test that the forbidden thing is refused — and that nothing was published by it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from a2a.types import CancelTaskRequest, GetTaskRequest, ListTasksRequest, SubscribeToTaskRequest, TaskState
from a2a.utils.errors import A2AError, TaskNotFoundError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sluice import subjects
from sluice.apikeys import add_key
from sluice.client import EdgeClient
from sluice.errors import NotFound, Unauthenticated
from stream_edge.auth.settings import AuthSettings
from support.a2a import BINDINGS, a2a_client, collect, message, send
from support.edge import EdgeUnderTest, published, running_edge
from support.oidc import AUDIENCE, ISSUER, SigningKey, new_signing_key
from support.runners import RunnerStack, runner_stack
from support.waiting import eventually

pytestmark = pytest.mark.timeout(90)

UNKNOWN = "01JD3S5Q8V0C7W6X9Y2Z3A4B5C"


@dataclass
class Secured:
    stack: RunnerStack
    edge: EdgeUnderTest
    keys_file: Path
    jwks_file: Path
    signing: SigningKey
    key_a: str  # tenant "alpha"
    key_b: str  # tenant "beta"

    @property
    def url(self) -> str:
        return self.edge.url

    def write_jwks(self, *keys: SigningKey) -> None:
        self.jwks_file.write_text(json.dumps({"keys": [k.jwk() for k in keys]}))


async def submissions(s: Secured) -> int:
    """How many tasks were ever submitted on this stack: a refused request must not add one."""
    info = await s.stack.bus.js.stream_info(
        subjects.EVENTS_STREAM, subjects_filter=subjects.events_of_type("task.submitted")
    )
    return sum((info.state.subjects or {}).values())


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    root = tmp_path_factory.mktemp("auth")
    keys_file, jwks_file = root / "keys", root / "jwks.json"
    key_a, _ = add_key(keys_file, "alpha")
    key_b, _ = add_key(keys_file, "beta")
    signing = new_signing_key()
    jwks_file.write_text(json.dumps({"keys": [signing.jwk()]}))
    auth = AuthSettings(
        methods=frozenset({"keys", "jwt"}),
        keys_file=keys_file,
        keys_recheck_s=0.05,
        jwt_jwks=str(jwks_file),
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        token_secret="s" * 40,
    )
    async with runner_stack(root) as stack, running_edge(stack.common, stack.bus, auth=auth) as edge:
        # The JWKS refresh on an unknown kid is rate-limited; tests rotate keys, so let them refresh at once.
        edge.app.state.auth.jwt.min_refresh_s = 0.0
        yield Secured(stack, edge, keys_file, jwks_file, signing, key_a, key_b)


async def create(s: Secured, key: str, text: str = "What is 2+2?", **headers: str) -> dict[str, Any]:
    response = await s.edge.client.post("/v1/tasks", json={"input": text}, headers={**bearer(key), **headers})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# ---------------------------------------------------------------- authentication


async def test_no_or_bad_credentials_are_401_with_a_bearer_challenge_and_publish_nothing(secured: Secured) -> None:
    before = await published(secured.stack.bus)
    cases: list[dict[str, str]] = [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer sluice_not-a-key-anyone-has"},
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": "Bearer " + "x" * 10_240},  # a 10 KB header
    ]
    for headers in cases:
        response = await secured.edge.client.post("/v1/tasks", json={"input": "hi"}, headers=headers)
        assert response.status_code == 401, (headers.get("Authorization", "")[:30], response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        body = response.json()["error"]
        assert body["code"] in ("unauthenticated", "invalid_token")
        assert "sluice_not-a-key" not in response.text  # a credential is never echoed
    for path in ("/v1/tasks/01JD3S5Q8V0C7W6X9Y2Z3A4B5C", "/v1/tasks/01JD3S5Q8V0C7W6X9Y2Z3A4B5C/events"):
        assert (await secured.edge.client.get(path)).status_code == 401
    rpc = await secured.edge.client.post("/a2a", json={"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}})
    assert rpc.status_code == 401
    assert await published(secured.stack.bus) == before
    assert (await secured.edge.client.get("/healthz")).status_code == 200  # and the edge is still up


async def test_public_paths_need_no_credentials_and_the_card_declares_bearer(secured: Secured) -> None:
    for path in ("/healthz", "/", "/web/app.js", "/openapi.json", "/docs"):
        assert (await secured.edge.client.get(path)).status_code == 200, path
    card = (await secured.edge.client.get("/.well-known/agent-card.json")).json()
    assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"
    assert card["securityRequirements"] == [{"schemes": {"bearer": {}}}]


async def test_a_jwt_from_the_jwks_is_a_tenant_and_every_bad_token_is_refused(secured: Secured) -> None:
    good = secured.signing.token(tenant="acme")
    created = await create(secured, good)
    assert created["tenant"] == "acme"
    stranger = new_signing_key()
    now = int(time.time())
    unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "tenant": "acme", "exp": now + 60}, None, algorithm="none")
    altered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    bad = {
        "expired": secured.signing.token(exp=now - 120, iat=now - 600),
        "not yet valid": secured.signing.token(nbf=now + 600),
        "wrong audience": secured.signing.token(aud="someone-else"),
        "wrong issuer": secured.signing.token(iss="https://evil.example/"),
        "no expiry": secured.signing.token(exp=None),
        "no tenant": secured.signing.token(tenant=None),
        "bad tenant": secured.signing.token(tenant="a.b>"),
        "alg none": unsigned,
        "altered signature": altered,
        "unknown key": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "tenant": "acme", "exp": now + 60},
            stranger.private,
            algorithm="RS256",
            headers={"kid": stranger.kid},
        ),
        "stranger under a known kid": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "tenant": "acme", "exp": now + 60},
            stranger.private,
            algorithm="RS256",
            headers={"kid": secured.signing.kid},
        ),
        "hmac with the public key": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "tenant": "acme", "exp": now + 60},
            "k" * 64,
            algorithm="HS256",
            headers={"kid": secured.signing.kid},
        ),
    }
    before = await submissions(secured)
    for case, token in bad.items():
        response = await secured.edge.client.post("/v1/tasks", json={"input": "hi"}, headers=bearer(token))
        assert response.status_code == 401, (case, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer"), case
    assert await submissions(secured) == before
    # The provider rotates: a token signed by a key the JWKS gains later works without a restart (unknown kid →
    # the JWKS is read again).
    rotated = new_signing_key()
    secured.write_jwks(secured.signing, rotated)
    assert (await create(secured, rotated.token(tenant="acme")))["tenant"] == "acme"


async def test_keys_are_rotated_and_revoked_on_a_running_edge(secured: Secured) -> None:
    original = secured.keys_file.read_text()
    try:
        new_key, line = add_key(secured.keys_file, "gamma")

        async def accepted() -> bool:
            response = await secured.edge.client.post("/v1/tasks", json={"input": "hi"}, headers=bearer(new_key))
            return response.status_code == 201

        await eventually(accepted, what="the added key to be accepted")
        # Revocation: the key's line goes, the key stops working, the other keys go on working.
        secured.keys_file.write_text(original)

        async def refused() -> bool:
            response = await secured.edge.client.post("/v1/tasks", json={"input": "hi"}, headers=bearer(new_key))
            return response.status_code == 401

        await eventually(refused, what="the revoked key to be refused")
        assert (
            await secured.edge.client.get("/v1/tasks/01JD3S5Q8V0C7W6X9Y2Z3A4B5C", headers=bearer(secured.key_a))
        ).status_code == 404
        assert line.key_id not in secured.keys_file.read_text()
    finally:
        secured.keys_file.write_text(original)


# ---------------------------------------------------------------- tenants


async def test_another_tenants_task_is_404_on_every_native_route(secured: Secured) -> None:
    theirs = await create(secured, secured.key_b, "[fault:slow:200] Ask me which city to convert the temperature for.")
    task_id = theirs["id"]
    assert theirs["tenant"] == "beta"
    before = await submissions(secured)
    a = bearer(secured.key_a)
    client = secured.edge.client
    answers = [
        await client.get(f"/v1/tasks/{task_id}", headers=a),
        await client.get(f"/v1/tasks/{task_id}/events", params={"follow": "false"}, headers=a),
        await client.post(f"/v1/tasks/{task_id}/cancel", json={}, headers=a),
        await client.post(f"/v1/tasks/{task_id}/input", json={"input": "Paris"}, headers=a),
        await client.post(f"/v1/tasks/{task_id}/input", json={"approve": True}, headers=a),
    ]
    context = theirs["context_id"]
    answers.append(await client.get(f"/v1/contexts/{context}", headers=a))
    # Continuing B's conversation from A: B's context is not A's to add to (nor to read the turns of).
    answers.append(await client.post("/v1/tasks", json={"input": "and?", "context_id": context}, headers=a))
    answers.append(await client.get(f"/v1/chat/{context}/stream", headers=a))
    unknown = await client.get("/v1/tasks/01JD3S5Q8V0C7W6X9Y2Z3A4B5C", headers=a)
    for response in answers:
        assert response.status_code == 404, response.text
        # Word for word what a task that does not exist answers (only the id differs).
        assert response.json()["error"]["code"] in (unknown.json()["error"]["code"], "context_not_found")
    # A's attempts changed nothing: no task, no cancel, no answer; B still sees and controls its task.
    assert await submissions(secured) == before
    log = await client.get(f"/v1/tasks/{task_id}/events", params={"follow": "false"}, headers=bearer(secured.key_b))
    assert "task.canceled" not in log.text and "task.resumed" not in log.text
    mine = await client.get(f"/v1/tasks/{task_id}", headers=bearer(secured.key_b))
    assert mine.status_code == 200 and mine.json()["state"] != "canceled"
    assert (await client.post(f"/v1/tasks/{task_id}/cancel", json={}, headers=bearer(secured.key_b))).status_code == 202


async def test_idempotency_keys_are_per_tenant(secured: Secured) -> None:
    key = f"order-{uuid.uuid4()}"
    a1 = await create(secured, secured.key_a, **{"Idempotency-Key": key})
    a2 = await create(secured, secured.key_a, **{"Idempotency-Key": key})
    b1 = await create(secured, secured.key_b, **{"Idempotency-Key": key})
    assert a1["id"] == a2["id"]
    assert b1["id"] != a1["id"] and b1["tenant"] == "beta"


@pytest.mark.parametrize("binding", BINDINGS)
async def test_a2a_with_a_bearer_key_works_and_sees_only_its_tenant(secured: Secured, binding: str) -> None:
    async with a2a_client(secured.url, binding, headers=bearer(secured.key_a)) as a:
        got = await collect(a.send_message(send(message("What is 17 * 23?"))))
        assert got.states[-1] == TaskState.TASK_STATE_COMPLETED
        assert "391" in got.text
        mine = got.task_id
        context = got.context_id
    async with a2a_client(secured.url, binding, headers=bearer(secured.key_b)) as b:
        listed = await b.list_tasks(ListTasksRequest())
        assert mine not in {t.id for t in listed.tasks}
        with pytest.raises(TaskNotFoundError):
            await b.get_task(GetTaskRequest(id=mine))
        with pytest.raises(TaskNotFoundError):
            await b.cancel_task(CancelTaskRequest(id=mine))
        with pytest.raises(TaskNotFoundError):
            await collect(b.subscribe(SubscribeToTaskRequest(id=mine)))
        with pytest.raises(TaskNotFoundError):  # answering A's task
            await collect(b.send_message(send(message("yes", task_id=mine))))
        with pytest.raises(TaskNotFoundError):  # continuing A's context
            await collect(b.send_message(send(message("What did I just ask?", context_id=context))))
    async with a2a_client(secured.url, binding, headers=bearer(secured.key_a)) as a:
        listed = await a.list_tasks(ListTasksRequest())
        assert mine in {t.id for t in listed.tasks}
    for task in listed.tasks:  # every task listed is one of A's
        own = await secured.edge.client.get(f"/v1/tasks/{task.id}", headers=bearer(secured.key_a))
        assert own.status_code == 200 and own.json()["tenant"] == "alpha"


async def test_an_a2a_request_naming_another_tenant_is_refused(secured: Secured) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {"tenant": "beta"}}
    response = await secured.edge.client.post(
        "/a2a", json=body, headers={**bearer(secured.key_a), "A2A-Version": "1.0"}
    )
    assert response.status_code == 200  # JSON-RPC answers errors in the body
    error = response.json()["error"]
    assert error["code"] == -32602 and "tenant" in error["message"]
    own = {**body, "params": {"tenant": "alpha"}}
    ok = await secured.edge.client.post("/a2a", json=own, headers={**bearer(secured.key_a), "A2A-Version": "1.0"})
    assert "result" in ok.json(), ok.text


@pytest.mark.parametrize("binding", BINDINGS)
async def test_a2a_clients_that_name_their_tenant_are_served_and_another_tenant_is_refused(
    secured: Secured, binding: str
) -> None:
    """The SDK's own `tenant` request field: JSON-RPC sends it in the params, HTTP+JSON as `/a2a/rest/{tenant}/...`."""
    async with a2a_client(secured.url, binding, headers=bearer(secured.key_a)) as a:
        request = send(message("What is 6 * 7?"))
        request.tenant = "alpha"
        got = await collect(a.send_message(request))
        assert got.states[-1] == TaskState.TASK_STATE_COMPLETED and "42" in got.text
        mine = got.task_id
        assert (await a.get_task(GetTaskRequest(id=mine, tenant="alpha"))).id == mine
        assert mine in {t.id for t in (await a.list_tasks(ListTasksRequest(tenant="alpha"))).tasks}
        before = await submissions(secured)
        foreign = send(message("What is 6 * 7?"))
        foreign.tenant = "beta"
        refusals = [
            lambda: collect(a.send_message(foreign)),
            lambda: a.get_task(GetTaskRequest(id=mine, tenant="beta")),
            lambda: a.list_tasks(ListTasksRequest(tenant="beta")),
            lambda: a.cancel_task(CancelTaskRequest(id=mine, tenant="beta")),
        ]
        for refused in refusals:
            with pytest.raises(A2AError) as caught:
                await refused()
            # The SDK's HTTP+JSON client keeps only the status of an error it has no A2A type for.
            assert ("403" if binding == "HTTP+JSON" else "tenant") in str(caught.value), caught.value
        assert await submissions(secured) == before
    assert (await secured.edge.client.get(f"/v1/tasks/{mine}", headers=bearer(secured.key_a))).status_code == 200


async def test_a2a_tenant_paths_are_aliases_for_the_callers_own_tenant_and_403_for_another(secured: Secured) -> None:
    client = secured.edge.client
    a = {**bearer(secured.key_a), "A2A-Version": "1.0"}
    record = await create(secured, secured.key_a, "Tell me how a river finds the sea [fault:slow:60]")
    task_id = record["id"]
    send_body = {"message": {"role": "ROLE_USER", "messageId": str(uuid.uuid4()), "parts": [{"text": "What is 1+1?"}]}}
    # The caller's own tenant in the path: the same routes.
    assert (await client.get("/a2a/rest/alpha/tasks", headers=a)).status_code == 200
    got = await client.get(f"/a2a/rest/alpha/tasks/{task_id}", headers=a)
    assert got.status_code == 200 and got.json()["id"] == task_id
    sent = await client.post("/a2a/rest/alpha/message:send", json={**send_body, "tenant": "alpha"}, headers=a)
    assert sent.status_code == 200, sent.text
    # Another tenant, in the path or in the body: 403, before anything is read or published.
    before = await submissions(secured)
    other_body = {**send_body, "message": {**send_body["message"], "messageId": str(uuid.uuid4())}}
    refused = {
        "list": await client.get("/a2a/rest/beta/tasks", headers=a),
        "get": await client.get(f"/a2a/rest/beta/tasks/{task_id}", headers=a),
        "cancel": await client.post(f"/a2a/rest/beta/tasks/{task_id}:cancel", json={}, headers=a),
        "send": await client.post("/a2a/rest/beta/message:send", json=other_body, headers=a),
        "stream": await client.post("/a2a/rest/beta/message:stream", json=other_body, headers=a),
        "send, tenant in the body": await client.post(
            "/a2a/rest/message:send", json={**other_body, "tenant": "beta"}, headers=a
        ),
        "path and body disagree": await client.post(
            "/a2a/rest/alpha/message:send", json={**other_body, "tenant": "beta"}, headers=a
        ),
        "a tenant that cannot exist": await client.get("/a2a/rest/a.b%3E/tasks", headers=a),
        "subscribe with a stream token": await client.get(
            f"/a2a/rest/beta/tasks/{task_id}:subscribe", params={"access_token": record["stream_token"]}
        ),
    }
    for case, response in refused.items():
        assert response.status_code == 403, (case, response.text)
        error = response.json()["error"]
        assert error["status"] == "PERMISSION_DENIED" and "tenant" in error["message"], case
        assert error["details"][0]["metadata"]["code"] == "tenant_mismatch", case
    assert await submissions(secured) == before
    state = (await client.get(f"/v1/tasks/{task_id}", headers=bearer(secured.key_a))).json()["state"]
    assert state != "canceled"
    # The stream token works on its tenant's path too (EventSource cannot send headers).
    path = f"/a2a/rest/alpha/tasks/{task_id}:subscribe"
    params = {"access_token": record["stream_token"], "A2A-Version": "1.0"}
    async with client.stream("GET", path, params=params) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                assert task_id in line
                break
    # Without credentials a tenant path is 401 like any other.
    assert (await client.get("/a2a/rest/alpha/tasks")).status_code == 401


async def test_bad_credentials_are_401_on_every_kind_of_route_never_a_500(secured: Secured) -> None:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "tenant": "acme", "exp": now + 60}
    tokens = {
        "10 KB": "x" * 10_240,
        "alg none": jwt.encode(claims, None, algorithm="none"),
        "alg none, known kid": jwt.encode(claims, None, algorithm="none", headers={"kid": secured.signing.kid}),
        "wrong audience": secured.signing.token(aud="someone-else"),
        "wrong issuer": secured.signing.token(iss="https://evil.example/"),
    }
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}}
    before = await submissions(secured)
    for case, token in tokens.items():
        headers = {**bearer(token), "A2A-Version": "1.0"}
        client = secured.edge.client
        answers = {
            "create": await client.post("/v1/tasks", json={"input": "hi"}, headers=headers),
            "events": await client.get(f"/v1/tasks/{UNKNOWN}/events", headers=headers),
            "A2A JSON-RPC": await client.post("/a2a", json=rpc, headers=headers),
            "A2A HTTP+JSON": await client.get("/a2a/rest/tasks", headers=headers),
            "A2A tenant path": await client.get("/a2a/rest/acme/tasks", headers=headers),
            "AG-UI": await client.get(f"/v1/ag-ui/runs/{uuid.uuid4()}/events", headers=headers),
        }
        for route, response in answers.items():
            assert response.status_code == 401, (case, route, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer"), (case, route)
    assert await submissions(secured) == before
    # Far past any credential: the HTTP server refuses the header itself, still no 500.
    huge = await secured.edge.client.get("/v1/tasks", headers=bearer("y" * 70_000))
    assert 400 <= huge.status_code < 500, huge.status_code


async def test_http_client_errors_never_500(secured: Secured) -> None:
    async with httpx.AsyncClient(base_url=secured.url, timeout=10) as raw:
        for headers in (
            {"Authorization": "Bearer ;;;"},
            {"Authorization": "bearer x"},
            {"Authorization": "Bearer a b"},
        ):
            response = await raw.get("/v1/tasks/01JD3S5Q8V0C7W6X9Y2Z3A4B5C", headers=headers)
            assert response.status_code == 401


async def test_edge_client_sends_its_api_key_and_streams_with_it(secured: Secured) -> None:
    async with EdgeClient(secured.url, api_key=secured.key_a) as client:
        record = await client.submit("What is 17 * 23?")
        assert record.tenant == "alpha" and record.stream_token
        types = [type(event).__name__ async for event in client.events(record.id)]
        assert types[0] == "TaskSubmitted" and types[-1] == "TaskCompleted"
    async with EdgeClient(secured.url, api_key=secured.key_b) as other:
        with pytest.raises(NotFound):
            await other.get(record.id)
    async with EdgeClient(secured.url, api_key="sluice_wrong", retry_for_s=0.5) as bad:
        with pytest.raises(Unauthenticated):
            await bad.submit("hi")


async def test_chat_and_ag_ui_act_only_inside_the_callers_tenant(secured: Secured) -> None:
    client = secured.edge.client
    a, b = bearer(secured.key_a), bearer(secured.key_b)
    thread, run, chat = f"thread-{uuid.uuid4().hex[:12]}", str(uuid.uuid4()), f"chat-{uuid.uuid4().hex[:12]}"
    ag_ui = {
        "threadId": thread, "runId": run, "state": {}, "tools": [], "context": [], "forwardedProps": {},
        "messages": [{"id": uuid.uuid4().hex, "role": "user", "content": "What is 2+2?"}],
    }  # fmt: skip
    message = {"id": uuid.uuid4().hex, "role": "user", "parts": [{"type": "text", "text": "What is 3+3?"}]}
    chat_body = {"id": chat, "messages": [message], "trigger": "submit-message", "messageId": None}
    for path, body in (("/v1/ag-ui", ag_ui), ("/v1/chat", chat_body)):
        async with client.stream("POST", path, json=body, headers=a) as response:
            assert response.status_code == 200
            assert "RUN_FINISHED" in (text := (await response.aread()).decode()) or "[DONE]" in text
    before = await submissions(secured)
    refused = [
        await client.get(f"/v1/ag-ui/runs/{run}/events", headers=b),
        await client.post("/v1/ag-ui", json={**ag_ui, "runId": str(uuid.uuid4())}, headers=b),  # A's thread
        await client.get(f"/v1/chat/{chat}/stream", headers=b),
        await client.post("/v1/chat", json={**chat_body, "messages": [{**message, "id": "m2"}]}, headers=b),
        await client.get(f"/v1/contexts/{chat}", headers=b),
    ]
    for response in refused:
        assert response.status_code == 404, (response.request.url.path, response.text)
    assert await submissions(secured) == before
    assert (await client.get(f"/v1/contexts/{chat}", headers=a)).status_code == 200
    for path in (f"/v1/ag-ui/runs/{run}/events", "/v1/chat"):
        assert (await client.get(path)).status_code in (401, 405)  # no credentials: refused before anything


# ---------------------------------------------------------------- stream tokens


async def test_a_stream_token_streams_its_task_and_nothing_else(secured: Secured) -> None:
    client = secured.edge.client
    record = await create(secured, secured.key_a)
    token = record["stream_token"]
    assert token and secured.key_a not in token
    other = await create(secured, secured.key_a)
    events = f"/v1/tasks/{record['id']}/events"
    ok = await client.get(events, params={"access_token": token, "follow": "false"})
    assert ok.status_code == 200 and "task.submitted" in ok.text
    # A fresh one for the same task, from the route made for it; not for another tenant.
    minted = await client.post(f"/v1/tasks/{record['id']}/stream-token", headers=bearer(secured.key_a))
    assert minted.status_code == 200 and minted.headers["cache-control"] == "no-store"
    fresh = minted.json()
    assert fresh["task_id"] == record["id"] and fresh["expires_in_s"] == 3600
    assert (await client.get(fresh["events_url"] + "&follow=false")).status_code == 200
    assert (
        await client.post(f"/v1/tasks/{record['id']}/stream-token", headers=bearer(secured.key_b))
    ).status_code == 404
    now = int(time.time())
    expired = jwt.encode(
        {"aud": "sluice-stream", "tsk": record["id"], "tnt": "alpha", "iat": now - 7200, "exp": now - 3600},
        "s" * 40, algorithm="HS256",
    )  # fmt: skip
    forged = jwt.encode(
        {"aud": "sluice-stream", "tsk": record["id"], "tnt": "alpha", "exp": now + 60}, "x" * 40, algorithm="HS256"
    )
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    refused = {
        "another task's token": await client.get(f"/v1/tasks/{other['id']}/events", params={"access_token": token}),
        "altered by one byte": await client.get(events, params={"access_token": flipped}),
        "expired": await client.get(events, params={"access_token": expired}),
        "signed with another secret": await client.get(events, params={"access_token": forged}),
        "two tokens": await client.get(f"{events}?access_token={token}&access_token={token}"),
        "on the record route": await client.get(f"/v1/tasks/{record['id']}", params={"access_token": token}),
        "to cancel": await client.post(f"/v1/tasks/{record['id']}/cancel", params={"access_token": token}, json={}),
        "to mint another": await client.post(f"/v1/tasks/{record['id']}/stream-token", params={"access_token": token}),
        "as a bearer credential": await client.get(f"/v1/tasks/{record['id']}", headers=bearer(token)),
        "for the A2A list": await client.get("/a2a/rest/tasks", params={"access_token": token}),
    }
    for case, response in refused.items():
        assert response.status_code == 401, (case, response.text)
        assert token not in response.text and flipped not in response.text, case
    assert (await client.get(f"/v1/tasks/{record['id']}", headers=bearer(secured.key_a))).json()["state"] != "canceled"


async def test_the_a2a_subscribe_stream_takes_a_stream_token(secured: Secured) -> None:
    record = await create(secured, secured.key_a, "Tell me how a river finds the sea [fault:slow:60]")
    path = f"/a2a/rest/tasks/{record['id']}:subscribe"
    params = {"access_token": record["stream_token"], "A2A-Version": "1.0"}
    async with secured.edge.client.stream("GET", path, params=params) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                assert record["id"] in line
                break


async def test_tokens_and_keys_never_reach_a_span(secured: Secured) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with running_edge(
        secured.stack.common, secured.stack.bus, auth=secured.edge.settings.auth, tracer_provider=provider
    ) as traced:
        record = (await traced.client.post("/v1/tasks", json={"input": "hi"}, headers=bearer(secured.key_a))).json()
        token = record["stream_token"]
        events = f"/v1/tasks/{record['id']}/events"
        assert (await traced.client.get(events, params={"access_token": token, "follow": "false"})).status_code == 200
        assert (await traced.client.get(events, params={"access_token": token + "x"})).status_code == 401
    spans = exporter.get_finished_spans()
    assert any(
        str(s.attributes.get("http.target", s.attributes.get("url.path", ""))).endswith("/events") for s in spans
    )
    dumped = json.dumps([{"name": s.name, "attributes": dict(s.attributes or {})} for s in spans], default=str)
    assert token not in dumped and secured.key_a not in dumped
    assert "access_token" not in dumped
