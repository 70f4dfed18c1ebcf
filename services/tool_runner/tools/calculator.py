"""`calculator`: exact arithmetic on an expression the model writes, by parsing it — never `eval`.

Numbers become `Fraction`s from their decimal text, so `0.1+0.2` is `0.3` and `17*23` is `391`. A sync
tool runs in a worker thread that no timeout can stop, so every cost is bounded before it is paid: the
expression's length, its nesting depth, each literal's magnitude, and each power (checked from the
operands' sizes *before* computing, so `9**9**9` is refused in microseconds).

Grammar (Python's precedence: `**` binds tighter than a unary sign on its left, and is right-associative):

    expr  := term (("+" | "-") term)*
    term  := unary (("*" | "/" | "//" | "%") unary)*
    unary := ("+" | "-") unary | power
    power := atom ("**" unary)?
    atom  := NUMBER | "(" expr ")"
"""

from __future__ import annotations

import re
from decimal import Context, Decimal, DecimalException, localcontext
from fractions import Fraction
from typing import Annotated

from msgspec import Meta

from .errors import ToolError

__all__ = ["MAX_BITS", "MAX_LENGTH", "calculator"]

MAX_LENGTH = 500
MAX_DEPTH = 50  # parentheses, unary signs and chained powers; keeps recursion far from Python's limit
MAX_BITS = 10_000  # per numerator/denominator: ~3000 digits, under Python's 4300-digit int→str limit
_MAX_LITERAL_EXPONENT = 1_000
_MAX_DECIMAL_EXPONENT = 3_011  # the decimal exponent of a MAX_BITS number: MAX_BITS * log10(2)
_SIGNIFICANT_DIGITS = 16  # what repr(float) shows, for results that are not integers

_TOKEN = re.compile(r"\s*(?:(?P<num>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)|(?P<op>\*\*|//|[-+*/%()]))")
_Token = tuple[str, int]  # text, position


def calculator(
    expression: Annotated[str, Meta(max_length=MAX_LENGTH, description="e.g. (17*23 + 4) / 3 or 2**0.5; no variables")],
) -> str:
    """Evaluate an arithmetic expression exactly: numbers, + - * / // % ** (power), unary signs, parentheses.

    Integers stay exact; other results are given to 16 significant digits.
    """
    if len(expression) > MAX_LENGTH:
        raise ToolError(f"expression is longer than {MAX_LENGTH} characters")
    parser = _Parser(_tokenize(expression))
    value = parser.parse()
    return _format(value, approximate=parser.approximate)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while True:
        match = _TOKEN.match(text, pos)
        if match is None:
            rest = text[pos:].lstrip()
            if not rest:
                return tokens
            where = len(text) - len(rest)
            hint = "; use ** for powers" if rest[0] == "^" else ""
            raise ToolError(f"unexpected character {rest[0]!r} at position {where}{hint}")
        tokens.append((match.group("num") or match.group("op"), match.start(match.lastgroup or 0)))
        pos = match.end()


class _Parser:
    """Recursive descent over the token list; `depth` counts nesting so deep input fails cleanly.

    `approximate` records that a non-integer power was taken, so the result is not exact and must not
    be printed as if every digit were known.
    """

    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._i = 0
        self.approximate = False

    def parse(self) -> Fraction:
        if not self._tokens:
            raise ToolError("empty expression")
        value = self._expr(0)
        if self._i < len(self._tokens):
            text, pos = self._tokens[self._i]
            raise ToolError(f"unexpected {text!r} at position {pos}")
        return value

    def _peek(self) -> str | None:
        return self._tokens[self._i][0] if self._i < len(self._tokens) else None

    def _take(self) -> _Token:
        if self._i >= len(self._tokens):
            raise ToolError("expression ends early")
        self._i += 1
        return self._tokens[self._i - 1]

    def _expr(self, depth: int) -> Fraction:
        value = self._term(depth)
        while (op := self._peek()) in ("+", "-"):
            self._take()
            rhs = self._term(depth)
            value = _checked(value + rhs if op == "+" else value - rhs)
        return value

    def _term(self, depth: int) -> Fraction:
        value = self._unary(depth)
        while (op := self._peek()) in ("*", "/", "//", "%"):
            self._take()
            value = _binary(op, value, self._unary(depth))
        return value

    def _unary(self, depth: int) -> Fraction:
        if (op := self._peek()) in ("+", "-"):
            self._take()
            value = self._unary(_deeper(depth))
            return -value if op == "-" else value
        return self._power(depth)

    def _power(self, depth: int) -> Fraction:
        base = self._atom(depth)
        if self._peek() != "**":
            return base
        self._take()
        exponent = self._unary(_deeper(depth))
        self.approximate |= exponent.denominator != 1
        return _power(base, exponent)

    def _atom(self, depth: int) -> Fraction:
        text, pos = self._take()
        if text == "(":
            value = self._expr(_deeper(depth))
            if self._peek() != ")":
                raise ToolError(f"missing ')' for the '(' at position {pos}")
            self._take()
            return value
        if text[0].isdigit() or text[0] == ".":
            return _number(text)
        raise ToolError(f"unexpected {text!r} at position {pos}")


def _deeper(depth: int) -> int:
    if depth >= MAX_DEPTH:
        raise ToolError(f"expression is nested more than {MAX_DEPTH} levels deep")
    return depth + 1


def _number(text: str) -> Fraction:
    try:
        literal = Decimal(text)  # exact, and its magnitude is known before any big integer is built
    except DecimalException:  # an exponent beyond even Decimal's range
        literal = Decimal("Infinity")
    if not literal.is_finite() or abs(literal.adjusted()) > _MAX_LITERAL_EXPONENT:
        raise ToolError(f"number {text[:40]} is out of range")
    return _checked(Fraction(literal))


def _binary(op: str, lhs: Fraction, rhs: Fraction) -> Fraction:
    if op == "*":
        return _checked(lhs * rhs)
    if rhs == 0:
        raise ToolError("division by zero")
    if op == "/":
        return _checked(lhs / rhs)
    return _checked(Fraction(lhs // rhs) if op == "//" else lhs % rhs)


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if base == 0 and exponent < 0:
        raise ToolError("division by zero")
    if exponent.denominator == 1:
        n = exponent.numerator
        if base in (0, 1) or n == 0:
            return base**n
        if base == -1:
            return Fraction(-1 if n % 2 else 1)
        # A lower bound on the result's size, known without computing it.
        if (max(abs(base.numerator), base.denominator).bit_length() - 1) * abs(n) > MAX_BITS:
            raise _too_large()
        return _checked(base**n)
    if base < 0:
        raise ToolError("a negative number to a fractional power is not a real number")
    if base == 0:
        return base
    return _decimal_power(base, exponent)


def _decimal_power(base: Fraction, exponent: Fraction) -> Fraction:
    """A non-integer power is irrational in general: computed to 34 digits, in a bounded context."""
    ctx = Context(prec=34, Emax=_MAX_DECIMAL_EXPONENT, Emin=-_MAX_DECIMAL_EXPONENT)
    try:
        with localcontext(ctx):
            b = Decimal(base.numerator) / Decimal(base.denominator)
            e = Decimal(exponent.numerator) / Decimal(exponent.denominator)
            return _checked(Fraction(b**e))
    except DecimalException:  # Overflow, or an operand beyond the context's range
        raise _too_large() from None


def _checked(value: Fraction) -> Fraction:
    if max(abs(value.numerator), value.denominator).bit_length() > MAX_BITS:
        raise _too_large()
    return value


def _too_large() -> ToolError:
    return ToolError(f"result is too large to compute exactly (limit {MAX_BITS} bits)")


def _format(value: Fraction, *, approximate: bool) -> str:
    if value.denominator == 1 and not approximate:
        return str(value.numerator)
    whole = abs(value.numerator) // value.denominator
    with localcontext() as ctx:
        # An exact value keeps every digit of its integer part, then _SIGNIFICANT_DIGITS more; an
        # approximate one has only _SIGNIFICANT_DIGITS in all, and shows an exponent rather than zeros.
        ctx.prec = _SIGNIFICANT_DIGITS + (len(str(whole)) if whole and not approximate else 0)
        result = (Decimal(value.numerator) / Decimal(value.denominator)).normalize()
        scientific = result.adjusted() < -9 or (approximate and result.adjusted() >= _SIGNIFICANT_DIGITS)
        return format(result, "E" if scientific else "f")
