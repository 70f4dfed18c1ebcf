"""The agent-runner's environment: defaults, the demo model when no key is set, secrets masked."""

from __future__ import annotations

import pytest

from agent_runner.settings import DEFAULT_DELTA_WINDOW_MS, RunnerSettings
from sluice.errors import InvalidInput


def test_defaults_point_at_the_demo_model() -> None:
    s = RunnerSettings.from_env({})
    assert s.openai_base_url == "http://127.0.0.1:8081/v1"
    assert s.model == "sluice-demo" and s.concurrency == 4 and s.metrics_port == 9464
    assert s.delta_window_s == DEFAULT_DELTA_WINDOW_MS / 1000
    assert s.agents_file is None
    assert s.common.ack_wait_s == 3.0 and s.heartbeat_s == 0.75  # a quarter of the ack wait: failover in ~3 s


def test_the_demo_address_follows_its_variables_and_a_key_means_a_real_server() -> None:
    demo = RunnerSettings.from_env({"SLUICE_DEMO_LLM_HOST": "demo", "SLUICE_DEMO_LLM_PORT": "9000"})
    assert demo.openai_base_url == "http://demo:9000/v1"
    real = RunnerSettings.from_env({"OPENAI_API_KEY": "sk-secret-value", "SLUICE_MODEL": "gpt-4o-mini"})
    assert real.openai_base_url == "https://api.openai.com/v1" and real.model == "gpt-4o-mini"
    assert real.describe()["openai_api_key"] == "***"
    assert "sk-secret-value" not in repr(real.describe())
    custom = RunnerSettings.from_env({"OPENAI_BASE_URL": "http://llm:8000/v1", "OPENAI_API_KEY": "k"})
    assert custom.openai_base_url == "http://llm:8000/v1"


def test_runner_variables_are_read() -> None:
    s = RunnerSettings.from_env(
        {
            "SLUICE_RUNNER_CONCURRENCY": "9",
            "SLUICE_DELTA_WINDOW_MS": "0",
            "SLUICE_RUNNER_METRICS_PORT": "0",
            "SLUICE_RUNNER_GRACE_S": "1.5",
            "SLUICE_ACK_WAIT": "4s",
            "SLUICE_MODEL_MAX_ATTEMPTS": "2",
        }
    )
    assert (s.concurrency, s.delta_window_s, s.metrics_port, s.grace_s, s.model_max_attempts) == (9, 0, 0, 1.5, 2)
    assert s.heartbeat_s == 1.0


def test_a_bad_value_names_its_variable() -> None:
    with pytest.raises(InvalidInput, match="SLUICE_RUNNER_CONCURRENCY"):
        RunnerSettings.from_env({"SLUICE_RUNNER_CONCURRENCY": "0"})
