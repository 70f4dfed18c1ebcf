"""Byte sizes in the environment: binary units, the settings that use them, and errors that name the variable."""

from __future__ import annotations

import pytest

from sluice.config import CommonConfig, parse_size
from sluice.errors import InvalidInput


@pytest.mark.parametrize(
    ("text", "size"),
    [("4GiB", 4 << 30), ("4G", 4 << 30), ("4gb", 4 << 30), ("256MiB", 256 << 20), ("64k", 64 << 10),
     ("1.5MiB", 3 << 19), ("1048576", 1 << 20), ("10 B", 10), (" 2TiB ", 2 << 40)],
)  # fmt: skip
def test_sizes_are_read_in_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "4 GiBs", "-1MiB", "4PB"])
def test_what_is_no_size_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_size(text)


def test_the_byte_limits_come_from_their_variables() -> None:
    env = {
        "SLUICE_EVENTS_MAX_BYTES": "8GiB",
        "SLUICE_QUEUE_MAX_BYTES": "64MiB",
        "SLUICE_TASKS_MAX_BYTES": "2GiB",
        "SLUICE_CONTEXTS_MAX_BYTES": "32MiB",
    }
    config = CommonConfig.from_env(env)
    assert (config.events_max_bytes, config.queue_max_bytes) == (8 << 30, 64 << 20)
    assert (config.tasks_max_bytes, config.contexts_max_bytes) == (2 << 30, 32 << 20)
    defaults = CommonConfig.from_env({})
    assert (defaults.events_max_bytes, defaults.tasks_max_bytes) == (4 << 30, 1 << 30)


@pytest.mark.parametrize(("value", "says"), [("huge", "is not a size"), ("64KiB", "must be at least 1048576 bytes")])
def test_a_bad_limit_names_its_variable(value: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=f"SLUICE_EVENTS_MAX_BYTES='{value}' {says}"):
        CommonConfig.from_env({"SLUICE_EVENTS_MAX_BYTES": value})
