"""The calculator's numbers and the checked steps between them (see ``tools/arithmetic.py``).

A value is a ``Fraction`` (exact) or an ``Approx`` (an mpmath number at ``WORKING_DIGITS``
digits, computed in a private mpmath context). ``Steps`` does arithmetic on them within the
``Limits``: every result passes ``checked`` (size, magnitude, time), and the steps that could
run long (powers, roots) estimate their result before computing it. ``describe`` turns a
value into the text the user and the model read.
"""

from __future__ import annotations

import functools
import math
import operator
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NoReturn

import mpmath
from mpmath import libmp

SIGNIFICANT_DIGITS = 15
"""Digits shown of an approximate result."""
WORKING_DIGITS = 40
"""Digits mpmath computes with, so the digits shown survive a chain of steps."""
EXACT_SHOWN_CHARS = 120
"""A non-integer exact result longer than this is shown as its approximation."""
PRECISE_EXPONENT = 10**20
"""Past this exponent an approximate power loses the digits shown (rounding error grows)."""
NOISE = 10 ** -(WORKING_DIGITS - 5)
"""An approximate sum or sine smaller than this, relative to its inputs, is their rounding
error: it shows as 0 (``sin(pi)``, ``sqrt(2)**2 - 2``)."""

CTX = mpmath.MPContext()
CTX.dps = WORKING_DIGITS
_LOG10_2 = math.log10(2)
_TRAILING_POINT_ZERO = re.compile(r"\.0(?=e|$)")


@dataclass(frozen=True)
class Limits:
    max_chars: int = 1000
    max_digits: int = 3000
    max_factorial: int = 1000
    seconds: float = 1.0

    @property
    def max_log2(self) -> float:
        """log2 of the largest magnitude (10**max_digits)."""
        return self.max_digits / _LOG10_2

    @functools.cached_property
    def bound(self) -> int:
        """No numerator or denominator reaches this (10**max_digits)."""
        bound: int = 10**self.max_digits
        return bound


class CalcError(Exception):
    """Why an expression has no result; ``str(error)`` is written for the model."""


@dataclass(frozen=True)
class Approx:
    value: Any  # an mpmath ``mpf`` of ``CTX``


Value = Fraction | Approx


@dataclass(frozen=True)
class Result:
    exact: bool
    text: str  # "84", "0.3", "1/3 ≈ 0.333333333333333", "1.4142135623731"
    notes: tuple[str, ...] = ()


def number(value: object) -> Value:
    """``value`` if it is a number; a bare function name (``sqrt + 1``) is explained."""
    if isinstance(value, Fraction | Approx):
        return value
    name = getattr(value, "name", None)
    if isinstance(name, str):
        raise CalcError(f"{name} is a function: call it with its argument, e.g. {name}(2).")
    raise CalcError("Only numbers can be calculated with.")


def to_mpf(value: Value) -> Any:
    if isinstance(value, Approx):
        return value.value
    return CTX.mpf(value.numerator) / value.denominator


def sign(value: Value) -> int:
    if isinstance(value, Fraction):
        return (value > 0) - (value < 0)
    return int(CTX.sign(value.value))


def whole(value: Value, what: str) -> int:
    if isinstance(value, Fraction) and value.denominator == 1:
        return value.numerator
    raise CalcError(f"{what} must be a whole number, not {show(value)}.")


class Steps:
    """Arithmetic within ``limits``, for one expression (its time budget starts now)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.approximated = False  # an exact fraction outgrew the limits and went on approx
        self._deadline = time.monotonic() + limits.seconds

    def checked(self, value: Value) -> Value:
        if time.monotonic() > self._deadline:
            raise CalcError(
                f"The calculation took longer than its {self.limits.seconds:g} s budget."
            )
        if isinstance(value, Fraction):
            bound = self.limits.bound
            if abs(value.numerator) < bound and value.denominator < bound:
                return value
            if value.denominator == 1:
                self.too_far(math.log2(abs(value.numerator)), lambda: "The result")
            self.magnitude(_log2(value), lambda: "The result")
            self.approximated = True
            return Approx(to_mpf(value))
        if not isinstance(value.value, CTX.mpf) or not CTX.isfinite(value.value):
            raise CalcError("The result is not a finite real number.")
        if value.value != 0:
            self.magnitude(CTX.mag(value.value), lambda: "The result")
        return value

    def magnitude(self, log2: Any, what: Callable[[], str]) -> None:
        """Refuse a result of about ``2**log2`` beyond 10**±max_digits, naming ``what()``."""
        if abs(log2) > self.limits.max_log2:
            self.too_far(log2, what)

    def too_far(self, log2: Any, what: Callable[[], str]) -> NoReturn:
        digits = self.limits.max_digits
        about = log2 * _LOG10_2
        size = f"{round(about):,}" if abs(about) < 10**15 else CTX.nstr(about, 3)
        if log2 > 0:
            raise CalcError(
                f"{what()} would be about 10**{size}: too large (the calculator works with "
                f"numbers up to {digits:,} digits). For the size of such a number use "
                "logarithms, e.g. 100000*log10(2) for the digits of 2**100000."
            )
        raise CalcError(
            f"{what()} would be about 10**{size}: too small (the calculator works with "
            f"numbers down to 10**-{digits:,})."
        )

    def approx(self, value: Any) -> Value:
        return self.checked(Approx(value))

    # -- operators -------------------------------------------------------------------------

    def add(self, a: object, b: object) -> Value:
        return self._sum(a, b, operator.add)

    def sub(self, a: object, b: object) -> Value:
        return self._sum(a, b, operator.sub)

    def mul(self, a: object, b: object) -> Value:
        return self._binary(a, b, operator.mul)

    def div(self, a: object, b: object) -> Value:
        return self._binary(a, self._divisor(b, "Division"), operator.truediv)

    def floordiv(self, a: object, b: object) -> Value:
        return self._binary(a, self._divisor(b, "Division"), _floordiv)

    def mod(self, a: object, b: object) -> Value:
        return self._binary(a, self._divisor(b, "Modulo"), _mod)

    def neg(self, a: object) -> Value:
        value = number(a)
        return -value if isinstance(value, Fraction) else Approx(-value.value)

    def pos(self, a: object) -> Value:
        return number(a)

    def _binary(self, a: object, b: object, op: Callable[[Any, Any], Any]) -> Value:
        x, y = number(a), number(b)
        if isinstance(x, Fraction) and isinstance(y, Fraction):
            return self.checked(Fraction(op(x, y)))
        return self.approx(op(to_mpf(x), to_mpf(y)))

    def _sum(self, a: object, b: object, op: Callable[[Any, Any], Any]) -> Value:
        result = self._binary(a, b, op)
        if isinstance(result, Approx):
            largest = max(abs(to_mpf(number(a))), abs(to_mpf(number(b))))
            return chopped(result.value, largest)
        return result

    @staticmethod
    def _divisor(b: object, what: str) -> Value:
        value = number(b)
        if sign(value) == 0:
            raise CalcError(f"{what} by zero.")
        return value

    # -- powers and roots ------------------------------------------------------------------

    def power(self, a: object, b: object) -> Value:
        base, exponent = number(a), number(b)
        if isinstance(exponent, Fraction) and exponent.denominator == 1:
            if isinstance(base, Fraction):
                return self._integer_power(base, exponent.numerator)
            return self._approximate_power(base, exponent)
        if sign(base) == 0:
            if sign(exponent) < 0:
                raise CalcError("0 cannot be raised to a negative power (division by zero).")
            return Fraction(0)
        if sign(base) < 0:
            if not isinstance(exponent, Fraction) or exponent.denominator % 2 == 0:
                raise CalcError(
                    f"({show(base)})**{show(exponent)} is not a real number (a negative "
                    "number to a fractional power)."
                )
            # An odd root of a negative number is real: (-8)**(1/3) is -2.
            result = self.power(self.neg(base), exponent)
            return self.neg(result) if exponent.numerator % 2 else result
        if isinstance(base, Fraction) and isinstance(exponent, Fraction):
            root = exact_root(base, exponent.denominator)
            if root is not None:
                return self._integer_power(root, exponent.numerator)
        return self._approximate_power(base, exponent)

    def root(self, value: Value, n: int, name: str) -> Value:
        if n < 1:
            raise CalcError(f"{name}: the root's degree must be 1 or more, not {n}.")
        if sign(value) < 0 and n % 2 == 0:
            raise CalcError(
                f"{name}({show(value)}) is not a real number (an even root of a negative number)."
            )
        return self.power(value, Fraction(1, n))

    def _integer_power(self, base: Fraction, exponent: int) -> Value:
        if base == 0:
            if exponent < 0:
                raise CalcError("0 cannot be raised to a negative power (division by zero).")
            return Fraction(0 if exponent else 1)
        if abs(base) == 1:
            return base**exponent

        def what() -> str:
            return f"{show(base)}**{show(Fraction(exponent))}"

        self.magnitude(CTX.mpf(_log2(base)) * exponent, what)
        size = abs(exponent) * max(base.numerator.bit_length(), base.denominator.bit_length())
        if size > 2 * self.limits.max_log2:
            self.approximated = True
            return self._approximate_power(base, Fraction(exponent))
        return self.checked(base**exponent)

    def _approximate_power(self, base: Value, exponent: Value) -> Value:
        b = to_mpf(base)
        integer = isinstance(exponent, Fraction) and exponent.denominator == 1
        e = exponent.numerator if isinstance(exponent, Fraction) and integer else to_mpf(exponent)
        if b == 0:
            if e < 0:
                raise CalcError("0 cannot be raised to a negative power (division by zero).")
            return Fraction(0 if e else 1)

        def what() -> str:
            return f"{show(base)}**{show(exponent)}"

        self.magnitude(CTX.log(abs(b), 2) * e, what)
        if abs(e) > PRECISE_EXPONENT:
            raise CalcError(
                f"{what()}: the exponent is too large to compute the result to "
                f"{SIGNIFICANT_DIGITS} digits."
            )
        return self.approx(CTX.power(b, e))


def precise_mpf(value: Fraction) -> Any:
    """``value`` with all its digits (``to_mpf`` rounds), for arguments that get reduced."""
    bits = max(value.numerator.bit_length(), value.denominator.bit_length()) + CTX.prec
    exact = libmp.from_rational(value.numerator, value.denominator, bits, libmp.round_nearest)
    return CTX.make_mpf(exact)


def chopped(value: Any, scale: Any) -> Approx:
    """``value``, or 0 if it is below the rounding error of inputs of size ``scale``."""
    return Approx(CTX.zero if abs(value) < abs(scale) * NOISE else value)


def exact_root(value: Fraction, n: int) -> Fraction | None:
    """``value ** (1/n)`` for ``value > 0``, if that is rational."""
    top = _integer_root(value.numerator, n)
    bottom = _integer_root(value.denominator, n) if top is not None else None
    return Fraction(top, bottom) if top is not None and bottom is not None else None


def _integer_root(value: int, n: int) -> int | None:
    if value == 1 or n == 1:
        return value
    if n >= value.bit_length():  # the root is between 1 and 2
        return None
    if n == 2:
        root = math.isqrt(value)
    else:
        precision = value.bit_length() // n + 32
        estimate = libmp.mpf_nthroot(libmp.from_int(value), n, precision)
        root = libmp.to_int(estimate, libmp.round_nearest)
    return root if root**n == value else None


def _log2(value: Fraction) -> float:
    """log2 of ``|value|`` (``value`` nonzero; ints of any size)."""
    return math.log2(abs(value.numerator)) - math.log2(value.denominator)


def _floordiv(a: Any, b: Any) -> Any:
    return a // b if isinstance(a, Fraction) else CTX.floor(a / b)


def _mod(a: Any, b: Any) -> Any:
    return a % b if isinstance(a, Fraction) else a - b * CTX.floor(a / b)


# -- showing values ------------------------------------------------------------------------


def describe(value: Value) -> Result:
    """Integers and terminating decimals exactly; other fractions exactly with a decimal
    approximation; approximate values to ``SIGNIFICANT_DIGITS`` digits."""
    if isinstance(value, Approx):
        return Result(False, approximate(value.value))
    if value.denominator == 1:
        return Result(True, str(value.numerator))
    decimal = terminating_decimal(value)
    if decimal is not None and len(decimal) <= EXACT_SHOWN_CHARS:
        return Result(True, decimal)
    fraction = f"{value.numerator}/{value.denominator}"
    shown = approximate(to_mpf(value))
    if decimal is None and len(fraction) <= EXACT_SHOWN_CHARS:
        return Result(True, f"{fraction} ≈ {shown}")
    kind = "decimal" if decimal else "fraction"
    length = len(decimal or fraction)
    return Result(False, shown, (f"the exact {kind} has {length:,} characters, too many to show",))


def show(value: Value) -> str:
    """``value`` short, for a message."""
    text = describe(value).text.split(" ≈ ")[0]
    return text if len(text) <= 40 else approximate(to_mpf(value))


def approximate(value: Any) -> str:
    return _TRAILING_POINT_ZERO.sub("", CTX.nstr(value, SIGNIFICANT_DIGITS))


def terminating_decimal(value: Fraction) -> str | None:
    """``value`` as an exact decimal, if its denominator has no prime factors but 2 and 5."""
    denominator = value.denominator
    twos = (denominator & -denominator).bit_length() - 1
    rest = denominator >> twos
    fives = round(math.log(rest, 5)) if rest > 1 else 0
    if 5**fives != rest:
        return None
    places = max(twos, fives)
    digits = str(abs(value.numerator) * 10**places // denominator).rjust(places + 1, "0")
    sign_ = "-" if value < 0 else ""
    return f"{sign_}{digits[:-places]}.{digits[-places:]}" if places else sign_ + digits
