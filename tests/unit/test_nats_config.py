"""NATS settings every service shares: identity files, TLS, and a retention that the duplicate window fits in."""

from __future__ import annotations

import pytest

from sluice.config import CommonConfig
from sluice.errors import InvalidInput


def test_retention_shorter_than_the_duplicate_window_is_refused_in_one_line() -> None:
    with pytest.raises(InvalidInput) as refused:
        CommonConfig.from_env({"SLUICE_EVENTS_MAX_AGE": "6s"})
    assert "SLUICE_EVENTS_MAX_AGE=6s" in refused.value.message and "duplicate window" in refused.value.message
    assert "\n" not in refused.value.message


def test_retention_of_the_duplicate_window_is_accepted() -> None:
    assert CommonConfig.from_env({"SLUICE_EVENTS_MAX_AGE": "2m"}).events_max_age_s == 120.0


def test_identity_and_tls_files_are_read() -> None:
    config = CommonConfig.from_env(
        {
            "SLUICE_NATS_NKEY_FILE": "/run/secrets/edge.nk",
            "SLUICE_NATS_TLS_CA": "/run/secrets/ca.pem",
            "SLUICE_NATS_TLS_CERT": "/run/secrets/edge.pem",
            "SLUICE_NATS_TLS_KEY": "/run/secrets/edge-key.pem",
        }
    )
    assert config.nats_nkey_file == "/run/secrets/edge.nk" and config.nats_tls_key == "/run/secrets/edge-key.pem"


@pytest.mark.parametrize(
    "env",
    [
        {"SLUICE_NATS_NKEY_FILE": "a.nk", "SLUICE_NATS_CREDS": "a.creds"},
        {"SLUICE_NATS_TLS_CERT": "c.pem"},
        {"SLUICE_NATS_TLS_KEY": "k.pem"},
    ],
)
def test_contradictory_identity_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        CommonConfig.from_env(env)


def test_credentials_in_the_url_never_reach_the_log_line() -> None:
    config = CommonConfig.from_env({"SLUICE_NATS_URL": "nats://edge:s3cret@nats-1:4222"})
    assert "s3cret" not in str(config.describe())
