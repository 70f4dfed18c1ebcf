"""Where the clients find the edge and what they show it (CONTRACT §7, §8): `SLUICE_URL` and `SLUICE_API_KEY`,
read here and nowhere else in the clients."""

from __future__ import annotations

from collections.abc import Mapping

from sluice.config import EnvReader

__all__ = ["DEFAULT_EDGE_URL", "api_key", "edge_url"]

DEFAULT_EDGE_URL = "http://127.0.0.1:8080"


def edge_url(env: Mapping[str, str] | None = None) -> str:
    """The edge's base URL without a trailing slash."""
    return EnvReader(env).text("SLUICE_URL", DEFAULT_EDGE_URL).rstrip("/")


def api_key(env: Mapping[str, str] | None = None) -> str | None:
    """The API key (or OIDC access token) to send as `Authorization: Bearer`, if one is set."""
    return EnvReader(env).optional("SLUICE_API_KEY")
