"""The edge's per-tenant limits (CONTRACT §8) as settings: defaults, 0 for none, and a clear error for the rest."""

from __future__ import annotations

import pytest

from sluice.errors import InvalidInput
from stream_edge.settings import EdgeSettings


def test_the_tenant_limits_have_defaults_and_zero_turns_each_off() -> None:
    default = EdgeSettings.from_env({})
    assert (default.tenant_max_active, default.tenant_rate, default.tenant_max_streams) == (100, 600, 1000)
    off = EdgeSettings.from_env(
        {"SLUICE_TENANT_MAX_ACTIVE": "0", "SLUICE_TENANT_RATE": "0", "SLUICE_TENANT_MAX_STREAMS": "0"}
    )
    assert (off.tenant_max_active, off.tenant_rate, off.tenant_max_streams) == (0, 0, 0)
    assert off.describe()["tenant_rate"] == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SLUICE_TENANT_MAX_ACTIVE", "-1"),
        ("SLUICE_TENANT_MAX_ACTIVE", "many"),
        ("SLUICE_TENANT_MAX_ACTIVE", "10001"),
        ("SLUICE_TENANT_RATE", "-5"),
        ("SLUICE_TENANT_RATE", "1.5"),
        ("SLUICE_TENANT_MAX_STREAMS", "-1"),
    ],
)
def test_an_invalid_tenant_limit_is_a_start_up_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        EdgeSettings.from_env({name: value})
    assert refused.value.code == "invalid_config" and name in refused.value.message
