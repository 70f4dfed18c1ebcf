"""Which tools a user message asks for, found by patterns: pure functions, no I/O.

Each detector finds spans of the text that ask for what one tool does and the arguments the call needs.
Detectors run in priority order and a span already claimed is not claimed again (``look up 2+2`` is a
search, not also a sum); the result is in the order the requests appear in the text.

``calculator``
    an arithmetic expression (``17*23``, ``(2+3)/4``, ``2 plus 2``) -> ``{"expression": "17*23"}``
``clock``
    ``what time is it``, ``current date``, ``today's date`` -> ``{}``, or ``{"timezone": "UTC"}`` when one is named
``convert_units``
    ``convert 5 km to miles``, ``10 kg in pounds`` -> ``{"value": 5, "from_unit": "km", "to_unit": "mi"}``
``search_docs``
    ``search the docs for X``, ``look up X``, ``find X in the docs`` -> ``{"query": "X"}``
``ask_user``
    ``ask me ...``, ``ask the user ...`` -> ``{"question": "Could you tell me ...?"}``
any tool, by name
    ``call tool NAME with {JSON object}`` -> that object (e.g. an MCP tool: ``call tool demo__add with {"a": 1}``)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Intent", "detect_intents"]


@dataclass(frozen=True, slots=True)
class Intent:
    """A request for one tool call found at ``start:end`` in the text."""

    start: int
    end: int
    name: str
    arguments: dict[str, Any]


# A clause ends at a sentence mark, or where "and"/"then"/"also" starts another request.
_CLAUSE_END = (
    r"(?=[?!;\n]|\.(?:\s|$)|,?\s+(?:and|then|also)\s+(?:what|what's|whats|how|tell|compute|calculate"
    r"|convert|search|look|ask|give|find|please|show)\b|$)"
)

_NUM = r"\d+(?:\.\d+)?"
# A standalone number: not the tail of a word or id ("t3f2", "a716-4466" are not sums).
_OPERAND = rf"\(*\s*-?(?<![\w.]){_NUM}(?!\w|\.\d)\s*\)*"
_OPERATOR = r"(?:\*\*|[-+*/%^×÷]|\b(?:plus|minus|times|multiplied by|divided by)\b)"
_EXPRESSION = re.compile(rf"{_OPERAND}(?:\s*{_OPERATOR}\s*{_OPERAND})+", re.IGNORECASE)
_WORD_OPERATORS = {"plus": "+", "minus": "-", "times": "*", "multiplied by": "*", "divided by": "/"}
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

_CLOCK = re.compile(
    r"\b(?:what\s+time|time\s+is\s+it|(?:current|the)\s+(?:local\s+)?(?:time|date)\s+(?:now|today|is)"
    r"|current\s+(?:time|date)|today'?s\s+date|what\s+(?:day|date)\s+is\s+(?:it|today)"
    r"|what(?:'s|\s+is)\s+the\s+(?:time|date)|tell\s+me\s+the\s+(?:time|date)|date\s+today)\b",
    re.IGNORECASE,
)
_TIMEZONE = re.compile(r"\b(?:in|for)\s+(UTC|GMT|[A-Z][a-z]+/[A-Z][A-Za-z_]+)\b")

_CONVERSION = re.compile(
    rf"\b(?P<convert>convert\s+)?(?P<value>-?{_NUM})\s*(?P<from>°?[A-Za-z]+)\s+(?:to|into|in)\s+(?P<to>°?[A-Za-z]+)",
    re.IGNORECASE,
)
_UNITS = {
    "km": ("km", "kilometer", "kilometers", "kilometre", "kilometres"),
    "mi": ("mi", "mile", "miles"),
    "m": ("m", "meter", "meters", "metre", "metres"),
    "cm": ("cm", "centimeter", "centimeters", "centimetre", "centimetres"),
    "mm": ("mm", "millimeter", "millimeters", "millimetre", "millimetres"),
    "ft": ("ft", "foot", "feet"),
    "in": ("in", "inch", "inches"),
    "yd": ("yd", "yard", "yards"),
    "kg": ("kg", "kilogram", "kilograms", "kilo", "kilos"),
    "g": ("g", "gram", "grams"),
    "lb": ("lb", "lbs", "pound", "pounds"),
    "oz": ("oz", "ounce", "ounces"),
    "C": ("c", "°c", "celsius"),
    "F": ("f", "°f", "fahrenheit"),
    "K": ("k", "kelvin"),
    "l": ("l", "liter", "liters", "litre", "litres"),
    "ml": ("ml", "milliliter", "milliliters", "millilitre", "millilitres"),
    "gal": ("gal", "gallon", "gallons"),
}
_UNIT_OF = {alias: unit for unit, aliases in _UNITS.items() for alias in aliases}

_DOCS = r"(?:docs|documentation)"
_QUERY = rf"(?P<q>.+?){_CLAUSE_END}"
_SEARCHES = [
    re.compile(rf"\bsearch\s+(?:in\s+|through\s+)?(?:the\s+)?{_DOCS}\s+(?:for|about|on)\s+{_QUERY}", re.I),
    re.compile(rf"\b(?:search\s+(?:for\s+)?|look\s+for\s+)(?P<q>.+?)\s+in\s+the\s+{_DOCS}{_CLAUSE_END}", re.I),
    re.compile(rf"\bfind\s+(?P<q>.+?)\s+in\s+the\s+{_DOCS}{_CLAUSE_END}", re.I),
    re.compile(rf"\blook\s+up\s+{_QUERY}", re.I),
]
_IN_THE_DOCS = re.compile(rf"\s+in\s+the\s+{_DOCS}$", re.I)

_ASK = re.compile(rf"\bask\s+(?:me|the\s+user)\b[\s,:]*(?P<rest>.*?){_CLAUSE_END}", re.IGNORECASE)
_EXPLICIT = re.compile(r"\bcall\s+tool\s+(?P<name>[A-Za-z0-9_-]{1,64})\s+with\s+(?P<args>\{.*?\})(?=\s*(?:$|[.;\n]))")
_PRONOUNS = {"my": "your", "mine": "yours", "me": "you", "i": "you", "i'm": "you're", "myself": "yourself"}


def detect_intents(text: str) -> list[Intent]:
    """Every tool request in ``text``, in text order; overlapping requests keep the higher-priority one."""
    claimed: list[Intent] = []
    for detector in _DETECTORS:
        for intent in detector(text):
            if not any(intent.start < c.end and c.start < intent.end for c in claimed):
                claimed.append(intent)
    return sorted(claimed, key=lambda intent: intent.start)


def _explicit_call(text: str) -> Iterator[Intent]:
    for m in _EXPLICIT.finditer(text):
        try:
            arguments = json.loads(m.group("args"))
        except json.JSONDecodeError:
            continue
        if isinstance(arguments, dict):
            yield Intent(m.start(), m.end(), m.group("name"), arguments)


def _ask_user(text: str) -> Iterator[Intent]:
    for m in _ASK.finditer(text):
        rest = _swap_pronouns(m.group("rest").strip().strip("\"'").rstrip(".?! "))
        rest = re.sub(r"^(?:for|to tell you)\s+", "", rest, flags=re.IGNORECASE)
        question = f"Could you tell me {rest}?" if rest else "What would you like me to do next?"
        yield Intent(m.start(), m.end(), "ask_user", {"question": question})


def _swap_pronouns(text: str) -> str:
    return re.sub(
        r"\b(?:my|mine|me|i|i'm|myself)\b",
        lambda m: _PRONOUNS[m.group(0).lower()],
        text,
        flags=re.IGNORECASE,
    )


def _search_docs(text: str) -> Iterator[Intent]:
    for pattern in _SEARCHES:
        for m in pattern.finditer(text):
            query = _IN_THE_DOCS.sub("", m.group("q").strip()).strip().strip("\"'“”")
            if query:
                yield Intent(m.start(), m.end(), "search_docs", {"query": query})


def _convert_units(text: str) -> Iterator[Intent]:
    for m in _CONVERSION.finditer(text):
        source, target = m.group("from").lower(), m.group("to").lower()
        known = source in _UNIT_OF and target in _UNIT_OF
        if not known and not m.group("convert"):
            continue
        raw = m.group("value")
        value: int | float = float(raw) if "." in raw else int(raw)
        arguments = {"value": value, "from_unit": _UNIT_OF.get(source, source), "to_unit": _UNIT_OF.get(target, target)}
        yield Intent(m.start(), m.end(), "convert_units", arguments)


def _clock(text: str) -> Iterator[Intent]:
    zone = _TIMEZONE.search(text)
    arguments = {"timezone": zone.group(1)} if zone else {}
    for m in _CLOCK.finditer(text):
        yield Intent(m.start(), m.end(), "clock", dict(arguments))


def _calculator(text: str) -> Iterator[Intent]:
    for m in _EXPRESSION.finditer(text):
        expression = _normalise_expression(m.group(0))
        if expression and not _ISO_DATE.fullmatch(expression):
            yield Intent(m.start(), m.end(), "calculator", {"expression": expression})


def _normalise_expression(raw: str) -> str:
    expression = re.sub(
        r"\b(?:plus|minus|times|multiplied by|divided by)\b",
        lambda m: _WORD_OPERATORS[re.sub(r"\s+", " ", m.group(0).lower())],
        raw,
        flags=re.IGNORECASE,
    )
    expression = re.sub(r"\s+", "", expression.replace("×", "*").replace("÷", "/"))
    while expression.endswith(")") and expression.count(")") > expression.count("("):
        expression = expression[:-1]
    while expression.startswith("(") and expression.count("(") > expression.count(")"):
        expression = expression[1:]
    return expression


_DETECTORS: tuple[Callable[[str], Iterator[Intent]], ...] = (
    _explicit_call,
    _ask_user,
    _search_docs,
    _convert_units,
    _clock,
    _calculator,
)
