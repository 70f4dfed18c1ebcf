"""OIDC signing keys over https (CONTRACT §8): the edge reads the JWKS from a real local HTTPS server whose CA it is
told to trust (`SLUICE_JWT_JWKS_CA`), picks up a rotated key without a restart, refreshes at most once per
interval however many unknown key ids arrive, and trusts nothing it cannot verify: without the CA no key is
read and every token is 401 (never a 500).

Real parts: nats-server, the edge on a real socket, a threaded HTTPS server with a certificate from a CA made here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sluice.bus import Bus
from sluice.config import CommonConfig
from sluice.errors import InvalidInput
from stream_edge.auth.settings import AuthSettings
from support.edge import EdgeUnderTest, running_edge
from support.oidc import (
    AUDIENCE,
    ISSUER,
    JwksServer,
    LocalTls,
    SigningKey,
    jwks_server,
    local_tls,
    new_signing_key,
)

pytestmark = pytest.mark.timeout(60)

UNKNOWN_TASK = "01JD3S5Q8V0C7W6X9Y2Z3A4B5C"


@dataclass
class Provider:
    tls: LocalTls
    server: JwksServer
    first: SigningKey


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    tls = local_tls(tmp_path_factory.mktemp("oidc-tls"))
    first = new_signing_key()
    with jwks_server(tls, first) as server:
        yield Provider(tls, server, first)


def jwt_settings(jwks: str, ca: Path | None) -> AuthSettings:
    return AuthSettings(
        methods=frozenset({"jwt"}), jwt_jwks=jwks, jwt_jwks_ca=ca, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )


@pytest.fixture
async def edge(provider: Provider, common_config: CommonConfig, bus: Bus) -> AsyncIterator[EdgeUnderTest]:
    provider.server.serve(provider.first)
    async with running_edge(common_config, bus, auth=jwt_settings(provider.server.url, provider.tls.ca)) as edge:
        yield edge


async def status(edge: EdgeUnderTest, token: str) -> int:
    """404 (no such task) once past authentication; 401 if the token is refused."""
    response = await edge.client.get(f"/v1/tasks/{UNKNOWN_TASK}", headers={"Authorization": f"Bearer {token}"})
    return response.status_code


async def test_a_token_signed_by_a_key_from_the_https_jwks_is_accepted(provider: Provider, edge: EdgeUnderTest) -> None:
    token = provider.first.token(tenant="acme")
    assert await status(edge, token) == 404
    created = await edge.client.post("/v1/tasks", json={"input": "hi"}, headers={"Authorization": f"Bearer {token}"})
    assert created.status_code == 201 and created.json()["tenant"] == "acme", created.text
    assert await status(edge, new_signing_key().token()) == 401  # a key the provider never published


async def test_a_rotated_key_works_without_a_restart_and_unknown_kids_cannot_hammer_the_provider(
    provider: Provider, edge: EdgeUnderTest
) -> None:
    verifier = edge.app.state.auth.jwt
    rotated = new_signing_key()
    provider.server.serve(rotated)  # the provider rotates: the old key is gone, a new kid appears
    verifier.min_refresh_s = 0.0  # the edge has just read the JWKS at start; let the unknown kid refresh now
    before = provider.server.fetches
    assert await status(edge, rotated.token()) == 404
    assert provider.server.fetches == before + 1
    assert await status(edge, provider.first.token()) == 401  # the retired key no longer verifies
    # A flood of made-up key ids: within the refresh interval, the provider is asked nothing more.
    verifier.min_refresh_s = 3600.0
    fetched = provider.server.fetches
    for _ in range(5):
        assert await status(edge, new_signing_key().token()) == 401
    assert provider.server.fetches == fetched
    assert await status(edge, rotated.token()) == 404


async def test_an_edge_that_does_not_trust_the_servers_ca_reads_no_key_and_refuses_every_token(
    provider: Provider, common_config: CommonConfig, bus: Bus
) -> None:
    provider.server.serve(provider.first)
    before = provider.server.fetches
    async with running_edge(common_config, bus, auth=jwt_settings(provider.server.url, None)) as untrusting:
        untrusting.app.state.auth.jwt.min_refresh_s = 0.0  # every unknown kid tries again, and fails again
        assert await status(untrusting, provider.first.token()) == 401
        assert (await untrusting.client.get("/healthz")).status_code == 200
    assert provider.server.fetches == before  # the TLS handshake failed: no JWKS was ever served to it


def test_jwks_over_plain_http_is_refused_unless_it_stays_on_this_host(tmp_path: Path) -> None:
    for url in ("http://login.example.test/jwks.json", "http://10.0.0.5/jwks.json"):
        with pytest.raises(InvalidInput, match="https"):
            jwt_settings(url, None)
    for url in ("http://127.0.0.1:9999/jwks.json", "http://localhost:9999/jwks.json", "http://[::1]:9999/jwks"):
        assert jwt_settings(url, None).jwt_jwks == url
    with pytest.raises(InvalidInput, match="SLUICE_JWT_JWKS_CA"):  # a CA means nothing for a file or plain http
        jwt_settings(str(tmp_path / "jwks.json"), tmp_path / "ca.pem")
