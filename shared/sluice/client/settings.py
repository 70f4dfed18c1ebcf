"""Where the clients find the edge (CONTRACT §7): `SLUICE_URL`, read here and nowhere else in the clients."""

from __future__ import annotations

from collections.abc import Mapping

from sluice.config import EnvReader

__all__ = ["DEFAULT_EDGE_URL", "edge_url"]

DEFAULT_EDGE_URL = "http://127.0.0.1:8080"


def edge_url(env: Mapping[str, str] | None = None) -> str:
    """The edge's base URL without a trailing slash."""
    return EnvReader(env).text("SLUICE_URL", DEFAULT_EDGE_URL).rstrip("/")
