"""The tool-runner's tools: exact arithmetic, generated schemas, strict argument decoding, and each tool."""

from __future__ import annotations

import contextlib
import json
import re
import threading
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.errors import InvalidInput
from tool_runner.tools import (
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_TIMEOUT_S,
    REGISTRY,
    Tool,
    ToolArgumentError,
    ToolError,
    all_specs,
    get_tool,
)
from tool_runner.tools import search_docs as search_docs_module
from tool_runner.tools import slow_echo as slow_echo_module
from tool_runner.tools.calculator import calculator
from tool_runner.tools.clock import clock
from tool_runner.tools.search_docs import NO_DOCS, find_project_root, search_paragraphs
from tool_runner.tools.units import convert_units


def _tool(name: str) -> Tool:
    tool = get_tool(name)
    assert tool is not None
    return tool


# ---------------------------------------------------------------- calculator


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("17*23", "391"),
        ("2**100", str(2**100)),
        ("0.1+0.2", "0.3"),
        ("1/3", "0.3333333333333333"),
        ("2/3", "0.6666666666666667"),
        ("(1 + 2) * 3", "9"),
        ("-2**2", "-4"),
        ("2**-1", "0.5"),
        ("2**3**2", "512"),
        ("7//2", "3"),
        ("-7 % 3", "2"),
        ("6/3", "2"),
        ("4**0.5", "2"),
        ("2**0.5", "1.414213562373095"),
        ("(2**100)**0.5", "1125899906842624"),
        ("(2**200)**0.5", "1.267650600228229E+30"),
        ("1.5e3", "1500"),
    ],
)
def test_calculator_is_exact(expression: str, expected: str) -> None:
    assert calculator(expression) == expected


_OPS = ["+", "-", "*", "/", "//", "%", "**"]


def _python_exact(a: int, op: str, b: int) -> Fraction:
    """What Python's grammar means by f"{a}{op}{b}" with exact numbers: `-a**b` is `-(a**b)`."""
    x, y = Fraction(a), Fraction(b)
    if op == "**":
        return -(Fraction(-a) ** b) if a < 0 else x**b
    results = {"+": x + y, "-": x - y, "*": x * y}
    if op in results:
        return results[op]
    if y == 0:
        raise ZeroDivisionError
    return {"/": x / y, "//": Fraction(x // y), "%": x % y}[op]


@settings(max_examples=400, deadline=None)
@given(a=st.integers(-10_000, 10_000), op=st.sampled_from(_OPS), b=st.integers(-10_000, 10_000))
def test_calculator_matches_python_exact_arithmetic(a: int, op: str, b: int) -> None:
    if op == "**":
        b = b % 41 - 20  # small exponents, negative too
    try:
        expected = _python_exact(a, op, b)
    except ZeroDivisionError:
        with pytest.raises(ToolError, match="division by zero"):
            calculator(f"{a}{op}{b}")
        return
    result = calculator(f"{a}{op}{b}")
    if expected.denominator == 1:
        assert result == str(expected.numerator)
    else:
        assert abs(Fraction(result) - expected) <= abs(expected) * Fraction(1, 10**15)


_CALC_CHARS = "0123456789.eE+-*/%()^ _xj"


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(exclude_categories=()), max_size=600) | st.text(_CALC_CHARS, max_size=600))
def test_calculator_garbage_only_raises_tool_errors(expression: str) -> None:
    with contextlib.suppress(ToolError):
        assert isinstance(calculator(expression), str)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("9**9**9", "too large"),
        ("2**100000", "too large"),
        ("10**(10**10)", "too large"),
        ("1e5000", "out of range"),
        ("1e" + "9" * 30, "out of range"),
        ("0.5e-" + "9" * 30, "out of range"),
        ("1/0", "division by zero"),
        ("1//0", "division by zero"),
        ("1 % (2-2)", "division by zero"),
        ("0**-1", "division by zero"),
        ("(-8)**(1/3)", "not a real number"),
        ("__import__('os').system('true')", "unexpected character '_'"),
        ("x + 1", "unexpected character 'x'"),
        ("2^3", "use \\*\\* for powers"),
        ("1" * 501, "longer than 500"),
        ("(" * 60 + "1" + ")" * 60, "nested more than"),
        ("-" * 200 + "1", "nested more than"),
        ("(1+2", "missing '\\)'"),
        ("1 2", "unexpected '2'"),
        ("", "empty expression"),
        ("3*", "ends early"),
    ],
)
def test_calculator_rejects_unsafe_or_invalid_input(expression: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        calculator(expression)


@pytest.mark.timeout(20)  # computing any of these would run for hours: a refusal that computed first hangs here
def test_calculator_refuses_huge_powers_without_computing_them() -> None:
    for expression in ("9**9**9", "99**99**99", "2**2**2**2**2**2", "(1/3)**(10**9)"):
        # The size bound, known before computing, refuses it (not a later overflow or a timeout).
        with pytest.raises(ToolError, match="too large to compute exactly"):
            calculator(expression)


# ---------------------------------------------------------------- schemas and the registry


def test_every_spec_is_an_inline_object_schema() -> None:
    specs = all_specs(list(REGISTRY))
    assert [spec["function"]["name"] for spec in specs] == list(REGISTRY)
    for spec in specs:
        assert spec["type"] == "function"
        function = spec["function"]
        assert set(function) == {"name", "description", "parameters"}
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", function["name"])
        assert function["description"]
        assert function["parameters"]["type"] == "object"
        assert "$ref" not in json.dumps(spec) and "$defs" not in json.dumps(spec)


@pytest.mark.parametrize(
    ("name", "properties", "required"),
    [
        ("calculator", ["expression"], ["expression"]),
        ("clock", ["timezone"], []),
        ("convert_units", ["value", "from_unit", "to_unit"], ["value", "from_unit", "to_unit"]),
        ("search_docs", ["query", "limit"], ["query"]),
        ("slow_echo", ["text", "seconds"], ["text"]),
    ],
)
def test_parameters_schema_lists_properties_and_required(name: str, properties: list[str], required: list[str]) -> None:
    schema = _tool(name).openai_spec()["function"]["parameters"]
    assert list(schema["properties"]) == properties
    assert schema.get("required", []) == required
    assert schema["additionalProperties"] is False


def test_schema_carries_types_defaults_and_constraints() -> None:
    search = _tool("search_docs").openai_spec()["function"]["parameters"]["properties"]
    assert search["limit"] == {
        "description": "how many paragraphs to return",
        "type": "integer",
        "minimum": 1,
        "maximum": 10,
        "default": 3,
    }
    units = _tool("convert_units").openai_spec()["function"]["parameters"]["properties"]
    assert units["value"]["type"] == "number"
    assert _tool("clock").openai_spec()["function"]["parameters"]["properties"]["timezone"]["default"] == "UTC"


class _Point(msgspec.Struct):
    x: int
    y: int


def _distance(a: _Point, b: _Point | None = None) -> float:
    """Distance between two points."""
    b = b or _Point(0, 0)
    return float(((a.x - b.x) ** 2 + (a.y - b.y) ** 2) ** 0.5)


async def test_nested_struct_parameters_are_inlined_and_decoded() -> None:
    tool = Tool.from_function(_distance)
    parameters = tool.openai_spec()["function"]["parameters"]
    assert "$ref" not in json.dumps(parameters)
    assert parameters["properties"]["a"]["properties"] == {"x": {"type": "integer"}, "y": {"type": "integer"}}
    assert await tool.invoke('{"a": {"x": 3, "y": 4}}') == "5.0"


def test_openai_spec_is_a_fresh_copy() -> None:
    spec = _tool("calculator").openai_spec()
    spec["function"]["parameters"]["properties"].clear()
    assert _tool("calculator").openai_spec()["function"]["parameters"]["properties"]


def test_all_specs_keeps_order_and_refuses_unknown_names() -> None:
    assert [s["function"]["name"] for s in all_specs(["clock", "calculator"])] == ["clock", "calculator"]
    with pytest.raises(InvalidInput, match="nope"):
        all_specs(["clock", "nope"])
    assert get_tool("nope") is None


def test_limits_and_no_interactive_tool_in_the_tool_runner() -> None:
    assert _tool("calculator").timeout_s == DEFAULT_TIMEOUT_S == 10
    assert _tool("calculator").max_output_bytes == DEFAULT_MAX_OUTPUT_BYTES == 16 * 1024
    assert _tool("slow_echo").timeout_s == 60
    assert "ask_user" not in REGISTRY  # the agent-runner's own tool (agent_runner.interactive)


def _undocumented(x: int) -> int:
    return x


def _untyped(x):  # type: ignore[no-untyped-def]
    """Untyped."""
    return x


def test_registration_rejects_bad_names_missing_docstrings_and_untyped_parameters() -> None:
    with pytest.raises(InvalidInput):
        Tool.from_function(_distance, name="has space")
    with pytest.raises(ValueError, match="docstring"):
        Tool.from_function(_undocumented)
    with pytest.raises(TypeError, match="typed keyword parameter"):
        Tool.from_function(_untyped)


# ---------------------------------------------------------------- invoke


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ('{"expression": ', "not valid JSON"),
        ("not json", "not valid JSON"),
        ('{"expression": 17}', r"Expected `str`, got `int` - at `\$.expression`"),
        ("{}", "missing required field `expression`"),
        ('{"expression": "1", "extra": 1}', "unknown field `extra`"),
        ('["1+1"]', "Expected `object`"),
        (json.dumps({"expression": "1" * 501}), "expression"),
    ],
)
async def test_invoke_rejects_bad_arguments_naming_the_problem(arguments: str, message: str) -> None:
    with pytest.raises(ToolArgumentError, match=message) as raised:
        await _tool("calculator").invoke(arguments)
    assert raised.value.message.startswith("invalid arguments for calculator")
    assert isinstance(raised.value, ToolError)


async def test_invoke_does_not_coerce_types() -> None:
    with pytest.raises(ToolArgumentError, match=r"at `\$\.limit`"):
        await _tool("search_docs").invoke('{"query": "x", "limit": "3"}')
    with pytest.raises(ToolArgumentError, match="limit"):
        await _tool("search_docs").invoke('{"query": "x", "limit": 0}')


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=()), max_size=200))  # lone surrogates included
def test_decoding_garbage_only_raises_argument_errors(arguments: str) -> None:
    for tool in REGISTRY.values():
        with contextlib.suppress(ToolArgumentError):
            tool.decode_arguments(arguments)


async def test_invoke_runs_the_tool_and_returns_text() -> None:
    assert await _tool("calculator").invoke('{"expression": "17*23"}') == "391"
    assert await _tool("convert_units").invoke('{"value": 100, "from_unit": "C", "to_unit": "F"}') == "100 C = 212 F"
    assert await _tool("slow_echo").invoke('{"text": "hi", "seconds": 0}') == "hi"


async def test_empty_arguments_mean_all_defaults() -> None:
    assert datetime.fromisoformat(await _tool("clock").invoke("")).utcoffset() == timedelta(0)


def _where(payload: dict[str, int]) -> dict[str, Any]:
    """Reports the thread it ran on."""
    return {"thread": threading.get_ident(), **payload}


async def test_sync_tools_run_off_the_event_loop_and_non_strings_are_json() -> None:
    result = await Tool.from_function(_where).invoke('{"payload": {"a": 1}}')
    decoded = json.loads(result)
    assert decoded["a"] == 1
    assert decoded["thread"] != threading.get_ident()


async def test_tool_failures_propagate_as_tool_error() -> None:
    with pytest.raises(ToolError, match="division by zero"):
        await _tool("calculator").invoke('{"expression": "1/0"}')


async def test_slow_echo_caps_and_clamps_its_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(slow_echo_module.asyncio, "sleep", fake_sleep)
    assert await slow_echo_module.slow_echo("a", 3600) == "a"
    assert await slow_echo_module.slow_echo("b", -5) == "b"
    assert slept == [60.0, 0.0]


# ---------------------------------------------------------------- clock


def test_clock_defaults_to_utc_now() -> None:
    now = datetime.fromisoformat(clock())
    assert now.utcoffset() == timedelta(0)
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


def test_clock_uses_the_named_zone() -> None:
    now = datetime.fromisoformat(clock("Asia/Kolkata"))  # no daylight saving: always +05:30
    assert now.utcoffset() == timedelta(hours=5, minutes=30)
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../etc/passwd", "/etc/localtime", "", "Europe"])
def test_clock_rejects_unknown_zones(zone: str) -> None:
    with pytest.raises(ToolError, match="unknown time zone"):
        clock(zone)


# ---------------------------------------------------------------- convert_units


@pytest.mark.parametrize(
    ("value", "src", "dst", "expected"),
    [
        (10, "km", "mi", "10 km = 6.21371192237 mi"),
        (100, "C", "F", "100 C = 212 F"),
        (-40, "F", "C", "-40 F = -40 C"),
        (0, "K", "C", "0 K = -273.15 C"),
        (1, "GiB", "B", "1 GiB = 1073741824 B"),
        (1, "GB", "MiB", "1 GB = 953.674316406 MiB"),
        (90, "min", "h", "90 min = 1.5 h"),
        (1, "lb", "oz", "1 lb = 16 oz"),
        (0.1, "m", "cm", "0.1 m = 10 cm"),
        (3.5, "Miles", "M", "3.5 mi = 5632.704 m"),
    ],
)
def test_convert_units(value: float, src: str, dst: str, expected: str) -> None:
    assert convert_units(value, src, dst) == expected


@pytest.mark.parametrize(
    ("src", "dst", "message"),
    [
        ("km", "kg", r"cannot convert length \(km\) to mass \(kg\)"),
        ("C", "s", "cannot convert temperature"),
        ("furlong", "m", "unknown unit 'furlong'"),
    ],
)
def test_convert_units_refuses_incompatible_or_unknown_units(src: str, dst: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        convert_units(1, src, dst)


def test_convert_units_refuses_below_absolute_zero_and_overflow() -> None:
    with pytest.raises(ToolError, match="absolute zero"):
        convert_units(-300, "C", "K")
    with pytest.raises(ToolError, match="out of range"):
        convert_units(1.7e308, "mi", "mm")


# ---------------------------------------------------------------- search_docs


@pytest.fixture
def docs_root(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "README.md").write_text(
        "# Demo\n\nDemo streams tasks to clients.\n\n## Cancel\n\nCancel a task with POST /cancel; the task stops.\n"
    )
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "replay.md").write_text(
        "# Replay\n\nA client resumes with Last-Event-ID and gets every task event it missed.\n\n"
        "```\ncurl -N /tasks/1/events\n\ncurl again\n```\n\nUnrelated paragraph about bananas.\n"
    )
    (tmp_path / "docs" / "notes.txt").write_text("task task task task")  # not Markdown: ignored
    return tmp_path


def test_search_ranks_paragraphs_by_matching_terms(docs_root: Path) -> None:
    result = search_paragraphs(docs_root, "how do I cancel a task?", limit=2)
    first, second = result.split("\n\n")
    assert first == "[README.md § Cancel]\nCancel a task with POST /cancel; the task stops."
    assert second.startswith("[README.md § Demo]\nDemo streams tasks")
    assert "notes.txt" not in search_paragraphs(docs_root, "task", limit=10)


def test_search_labels_docs_files_and_keeps_code_blocks_whole(docs_root: Path) -> None:
    assert search_paragraphs(docs_root, "curl", limit=1) == (
        "[docs/replay.md § Replay]\n```\ncurl -N /tasks/1/events\n\ncurl again\n```"
    )
    assert search_paragraphs(docs_root, "Last-Event-ID resume").startswith("[docs/replay.md § Replay]")


def test_search_is_deterministic_and_honours_limit(docs_root: Path) -> None:
    first = search_paragraphs(docs_root, "task", limit=2)
    assert first == search_paragraphs(docs_root, "task", limit=2)
    assert first.count("\n\n[") == 1
    assert search_paragraphs(docs_root, "zebra") == "no paragraphs match 'zebra'"
    with pytest.raises(ToolError, match="no searchable words"):
        search_paragraphs(docs_root, "how do I?")


def test_search_without_docs(tmp_path: Path) -> None:
    assert search_paragraphs(tmp_path, "task") == NO_DOCS


def test_project_root_is_found_by_walking_up(docs_root: Path) -> None:
    nested = docs_root / "a" / "b"
    nested.mkdir(parents=True)
    assert find_project_root(nested) == docs_root


async def test_search_docs_tool_reads_the_project_root(docs_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_docs_module, "find_project_root", lambda start: docs_root)
    result = await _tool("search_docs").invoke('{"query": "bananas", "limit": 1}')
    assert result == "[docs/replay.md § Replay]\nUnrelated paragraph about bananas."
    monkeypatch.setattr(search_docs_module, "find_project_root", lambda start: None)
    assert await _tool("search_docs").invoke('{"query": "bananas"}') == NO_DOCS
