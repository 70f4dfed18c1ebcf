"""Subject builders let no id outside ^[A-Za-z0-9_-]{8,64}$ through: no input widens a subscription."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice import subjects
from sluice.errors import InvalidInput
from sluice.ids import is_task_id, new_task_id, parse_event_id

VALID = re.compile(r"[A-Za-z0-9_-]{8,64}")
BUILDERS = [
    lambda t: subjects.event(t, "task.completed"),
    subjects.events_of_task,
    subjects.work,
    subjects.control,
    lambda t: subjects.tool_call("calculator", t),
]


@given(st.text(max_size=200))
def test_builders_reject_every_id_outside_the_pattern(candidate: str) -> None:
    for build in BUILDERS:
        if VALID.fullmatch(candidate):
            assert candidate in build(candidate)
        else:
            with pytest.raises(InvalidInput):
                build(candidate)


@given(st.from_regex(VALID, fullmatch=True))
def test_builders_accept_every_id_inside_the_pattern_and_never_a_wildcard(candidate: str) -> None:
    for build in BUILDERS:
        subject = build(candidate)
        tokens = subject.split(".")
        assert "*" not in tokens[:3] and ">" not in tokens[:-1]
        assert subjects.task_id_of(subject) == candidate


@pytest.mark.parametrize(
    "bad", ["*", ">", "abc.defgh", "abcdefg", "a" * 65, "abcdefgh\n", "abcdéfgh", "abc defgh", "", "abcdefg*"]
)
def test_known_bad_ids_are_rejected(bad: str) -> None:
    assert not is_task_id(bad)
    with pytest.raises(InvalidInput):
        subjects.events_of_task(bad)


def test_new_task_ids_are_valid_unique_and_sortable_by_time() -> None:
    ids = [new_task_id() for _ in range(2000)]
    assert all(is_task_id(i) and len(i) == 26 for i in ids)
    assert len(set(ids)) == len(ids)
    # ULIDs minted later never sort before earlier ones at millisecond granularity.
    assert [i[:10] for i in ids] == sorted(i[:10] for i in ids)


@pytest.mark.parametrize("bad", ["-1", "1.5", "abc", "", " 1", "99999999999999999999", "1e3", "0x10"])
def test_event_ids_must_be_decimal_sequences(bad: str) -> None:
    with pytest.raises(InvalidInput):
        parse_event_id(bad)


def test_event_type_and_tool_name_are_validated() -> None:
    with pytest.raises(InvalidInput):
        subjects.events_of_type("task.*")
    with pytest.raises(InvalidInput):
        subjects.tool_call("calc.ulator", new_task_id())
    assert subjects.events_of_type("task.completed") == "sluice.evt.*.task.completed"
