"""agents.toml: the shipped file, and the mistakes a hand-written one can make."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_runner.agents import load_catalog, parse_catalog
from agent_runner.settings import RunnerSettings
from sluice.errors import InvalidInput
from support.catalog import static_tools

MINIMAL = """
[agents.helper]
instructions = "You help."
tools = ["calculator"]
"""


def test_the_shipped_file_has_the_assistant_and_the_dev_team_crew() -> None:
    catalog = load_catalog(None, default_model="sluice-demo", known_tools=static_tools().keys())
    assistant = catalog.plan("assistant")
    assert assistant is not None and not assistant.crew
    spec = assistant.stages[0]
    assert spec.model == "sluice-demo"
    assert spec.tools == ("calculator", "clock", "convert_units", "search_docs", "ask_user")
    assert assistant.ceilings.max_steps == spec.max_steps
    crew = catalog.plan("dev-team")
    assert crew is not None and crew.crew
    assert [s.name for s in crew.stages] == ["architect", "coder", "reviewer", "documenter"]
    assert crew.ceilings.max_steps == sum(s.max_steps for s in crew.stages)
    assert all("You are the " + s.name in s.instructions for s in crew.stages)
    careful = catalog.plan("careful-assistant")
    assert careful is not None and careful.stages[0].approval_tools == {"calculator", "convert_units"}
    assert catalog.plan("nobody") is None


def test_an_agents_own_model_wins_over_the_default() -> None:
    text = MINIMAL + 'model = "gpt-4o-mini"\n'
    assert parse_catalog(text, default_model="sluice-demo").agents["helper"].model == "gpt-4o-mini"
    assert parse_catalog(MINIMAL, default_model="other").agents["helper"].model == "other"


def test_prices_give_the_cost_of_a_call() -> None:
    text = MINIMAL + "price_input_per_million = 2.0\nprice_output_per_million = 8.0\n"
    spec = parse_catalog(text, default_model="m").agents["helper"]
    assert spec.cost_usd(1_000_000, 500_000) == pytest.approx(6.0)
    assert spec.cost_usd(0, 0) == 0


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        (MINIMAL + "colour = 'red'\n", "unknown field `colour`"),
        ("[agents.a]\ntools = []\n", "missing required field `instructions`"),
        (MINIMAL + "max_steps = 0\n", "max_steps"),
        (MINIMAL.replace('"calculator"', '"teleport"'), "unknown tools ['teleport']"),
        (MINIMAL + 'approval_tools = ["clock"]\n', "approval_tools ['clock'] are not in its tools"),
        (MINIMAL + '[crews.team]\nstages = ["helper", "ghost"]\n', "stages that are not agents: ['ghost']"),
        (MINIMAL + '[crews.helper]\nstages = ["helper"]\n', "crew 'helper' has the name of an agent"),
        (MINIMAL + "[crews.team]\nstages = []\n", "stages"),
        ("[agents.a\n", "not valid TOML"),
    ],
)
def test_mistakes_are_reported_with_the_file_and_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_catalog(text, default_model="m", known_tools=static_tools().keys(), origin="my-agents.toml")
    assert caught.value.code == "invalid_agents_file"
    assert "my-agents.toml" in caught.value.message and complaint in caught.value.message


def test_sluice_agents_file_replaces_the_shipped_file(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(MINIMAL)
    settings = RunnerSettings.from_env({"SLUICE_AGENTS_FILE": str(path)})
    catalog = load_catalog(settings.agents_file, default_model=settings.model)
    assert catalog.names == ["helper"]
    with pytest.raises(InvalidInput, match="cannot read it"):
        load_catalog(tmp_path / "missing.toml", default_model="m")
