"""Budget arithmetic: which limit applies, and when 80 % warns and 100 % stops."""

from __future__ import annotations

from agent_runner.budget import Crossing, Limits, after_call, before_call
from sluice.events import Budget, Usage


def test_a_tasks_own_budget_lowers_each_ceiling_it_sets_and_only_those() -> None:
    ceilings = Budget(max_output_tokens=1000, max_cost_usd=1.0, max_steps=8, timeout_s=300)
    limits = Limits.resolve(Budget(max_steps=2, timeout_s=5.5), ceilings)
    assert limits == Limits(max_output_tokens=1000, max_cost_usd=1.0, max_steps=2, timeout_s=5.5)
    assert Limits.resolve(Budget(), Budget()) == Limits()


def test_a_tasks_budget_above_a_ceiling_runs_with_the_ceiling() -> None:
    ceilings = Budget(max_output_tokens=1000, max_cost_usd=1.0, max_steps=8, timeout_s=300)
    asking = Budget(max_output_tokens=10**9, max_cost_usd=50.0, max_steps=1000, timeout_s=86400)
    assert Limits.resolve(asking, ceilings) == Limits(max_output_tokens=1000, max_cost_usd=1.0, max_steps=8,
                                                      timeout_s=300)  # fmt: skip


def test_a_kind_the_agent_leaves_open_takes_the_tasks_value() -> None:
    limits = Limits.resolve(Budget(max_output_tokens=50, max_cost_usd=0.1), Budget(max_steps=8))
    assert limits == Limits(max_output_tokens=50, max_cost_usd=0.1, max_steps=8)
    assert limits.as_budget() == Budget(max_output_tokens=50, max_cost_usd=0.1, max_steps=8)


def test_usage_under_eighty_percent_crosses_nothing() -> None:
    limits = Limits(max_output_tokens=100, max_cost_usd=1.0, max_steps=10)
    assert after_call(limits, Usage(output_tokens=79, cost_usd=0.79), steps_done=7) == []


def test_eighty_percent_warns_and_going_over_exceeds() -> None:
    limits = Limits(max_output_tokens=100, max_cost_usd=1.0, max_steps=10)
    assert after_call(limits, Usage(output_tokens=80, cost_usd=0.5), steps_done=8) == [
        Crossing("tokens", "warning", 80, 100),
        Crossing("steps", "warning", 8, 10),
    ]
    assert after_call(limits, Usage(output_tokens=101, cost_usd=1.5), steps_done=1) == [
        Crossing("tokens", "exceeded", 101, 100),
        Crossing("cost_usd", "exceeded", 1.5, 1.0),
    ]


def test_exactly_at_the_limit_is_a_warning_after_a_call_but_stops_the_next_call() -> None:
    limits = Limits(max_output_tokens=100, max_steps=3)
    assert after_call(limits, Usage(output_tokens=100), steps_done=3) == [
        Crossing("tokens", "warning", 100, 100),
        Crossing("steps", "warning", 3, 3),
    ]
    assert before_call(limits, Usage(output_tokens=100), steps_done=1) == Crossing("tokens", "exceeded", 100, 100)
    assert before_call(limits, Usage(output_tokens=10), steps_done=3) == Crossing("steps", "exceeded", 3, 3)
    assert before_call(limits, Usage(output_tokens=10), steps_done=2) is None


def test_no_limits_means_no_crossings() -> None:
    assert after_call(Limits(), Usage(output_tokens=10**9, cost_usd=10**6), steps_done=10**6) == []
    assert before_call(Limits(), Usage(output_tokens=10**9), steps_done=10**6) is None
