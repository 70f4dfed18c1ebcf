"""`convert_units`: unit conversion, which models get subtly wrong when they do it in their heads.

Factors are exact `Fraction`s to one base unit per dimension (metre, kilogram, second, byte), so a round
trip loses nothing; temperature is affine and converted through kelvin. KB/MB/GB are decimal (SI),
KiB/MiB/GiB binary. Unit names are matched without regard to case; bits are not supported.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Annotated

from msgspec import Meta

from .errors import ToolError

__all__ = ["UNITS", "convert_units"]

# unit -> (dimension, factor to the dimension's base unit)
UNITS: dict[str, tuple[str, Fraction]] = {
    "m": ("length", Fraction(1)),
    "km": ("length", Fraction(1000)),
    "cm": ("length", Fraction(1, 100)),
    "mm": ("length", Fraction(1, 1000)),
    "mi": ("length", Fraction("1609.344")),
    "yd": ("length", Fraction("0.9144")),
    "ft": ("length", Fraction("0.3048")),
    "in": ("length", Fraction("0.0254")),
    "kg": ("mass", Fraction(1)),
    "g": ("mass", Fraction(1, 1000)),
    "lb": ("mass", Fraction("0.45359237")),
    "oz": ("mass", Fraction("0.45359237") / 16),
    "s": ("time", Fraction(1)),
    "min": ("time", Fraction(60)),
    "h": ("time", Fraction(3600)),
    "day": ("time", Fraction(86400)),
    "B": ("data", Fraction(1)),
    "KB": ("data", Fraction(10**3)),
    "MB": ("data", Fraction(10**6)),
    "GB": ("data", Fraction(10**9)),
    "KiB": ("data", Fraction(2**10)),
    "MiB": ("data", Fraction(2**20)),
    "GiB": ("data", Fraction(2**30)),
    # Temperature: factor unused; see _to_kelvin / _from_kelvin.
    "C": ("temperature", Fraction(1)),
    "F": ("temperature", Fraction(1)),
    "K": ("temperature", Fraction(1)),
}
_ALIASES = {
    "meter": "m", "meters": "m", "metre": "m", "metres": "m", "kilometer": "km", "kilometers": "km",
    "mile": "mi", "miles": "mi", "foot": "ft", "feet": "ft", "inch": "in", "inches": "in", "yard": "yd",
    "yards": "yd", "gram": "g", "grams": "g", "kilogram": "kg", "kilograms": "kg", "lbs": "lb",
    "pound": "lb", "pounds": "lb", "ounce": "oz", "ounces": "oz", "sec": "s", "second": "s",
    "seconds": "s", "mins": "min", "minute": "min", "minutes": "min", "hr": "h", "hour": "h",
    "hours": "h", "days": "day", "d": "day", "byte": "B", "bytes": "B", "celsius": "C", "°c": "C",
    "fahrenheit": "F", "°f": "F", "kelvin": "K",
}  # fmt: skip
_BY_LOWER = {name.lower(): name for name in UNITS} | _ALIASES


def convert_units(
    value: float,
    from_unit: Annotated[str, Meta(max_length=32)],
    to_unit: Annotated[str, Meta(max_length=32)],
) -> str:
    """Convert a value between units of length (m km cm mm mi ft in yd), mass (kg g lb oz),
    temperature (C F K), time (s min h day) or data (B KB MB GB KiB MiB GiB)."""
    if not math.isfinite(value):
        raise ToolError("value must be a finite number")
    src, dst = _unit(from_unit), _unit(to_unit)
    (src_dim, src_factor), (dst_dim, dst_factor) = UNITS[src], UNITS[dst]
    if src_dim != dst_dim:
        raise ToolError(f"cannot convert {src_dim} ({src}) to {dst_dim} ({dst})")
    exact = Fraction(repr(value))  # the decimal the model wrote, not its binary approximation
    if src_dim == "temperature":
        kelvin = _to_kelvin(exact, src)
        if kelvin < 0:
            raise ToolError(f"{value:g} {src} is below absolute zero")
        result = _from_kelvin(kelvin, dst)
    else:
        result = exact * src_factor / dst_factor
    return f"{_number(exact)} {src} = {_number(result)} {dst}"


def _unit(name: str) -> str:
    unit = _BY_LOWER.get(name.strip().lower())
    if unit is None:
        raise ToolError(f"unknown unit {name!r}; known units: {', '.join(UNITS)}")
    return unit


def _to_kelvin(value: Fraction, unit: str) -> Fraction:
    if unit == "C":
        return value + Fraction("273.15")
    if unit == "F":
        return (value - 32) * Fraction(5, 9) + Fraction("273.15")
    return value


def _from_kelvin(kelvin: Fraction, unit: str) -> Fraction:
    if unit == "C":
        return kelvin - Fraction("273.15")
    if unit == "F":
        return (kelvin - Fraction("273.15")) * Fraction(9, 5) + 32
    return kelvin


def _number(value: Fraction) -> str:
    """At most 12 significant digits: enough for any unit, and no 0.30000000000000004 noise."""
    if value.denominator == 1 and abs(value) < 10**15:
        return str(value.numerator)
    try:
        return f"{float(value):.12g}"
    except OverflowError:
        raise ToolError("the result is out of range") from None
