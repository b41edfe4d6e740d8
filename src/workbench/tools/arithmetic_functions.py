"""The calculator's functions and constants (see ``tools/arithmetic.py``).

Each function checks its domain and says why in words (``sqrt(-1)``, ``log(0)``), stays exact
where its result is rational (``sqrt(16)``, ``log10(1000)``, ``factorial(20)``), and is
otherwise an mpmath function at the working precision. Trigonometry is in radians.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from workbench.tools.arithmetic_values import (
    CTX,
    PRECISE_EXPONENT,
    Approx,
    CalcError,
    Steps,
    Value,
    chopped,
    number,
    precise_mpf,
    show,
    sign,
    to_mpf,
    whole,
)

Compute = Callable[..., Value]


@dataclass(frozen=True)
class Function:
    name: str
    signature: str
    least: int  # arguments
    most: int | None  # None: any number
    compute: Compute  # (steps, *arguments)


@dataclass(frozen=True)
class Bound:
    """A function as simpleeval calls it: the arguments checked, then computed in ``steps``."""

    function: Function
    steps: Steps

    @property
    def name(self) -> str:
        return self.function.name

    def __call__(self, *arguments: object) -> Value:
        function = self.function
        count = len(arguments)
        if count < function.least or (function.most is not None and count > function.most):
            raise CalcError(f"{function.signature}: got {count} argument{'s' * (count != 1)}.")
        values = [number(argument) for argument in arguments]
        return self.steps.checked(function.compute(self.steps, *values))


def constants() -> dict[str, Value]:
    pi = Approx(+CTX.pi)
    return {"pi": pi, "π": pi, "e": Approx(+CTX.e), "tau": Approx(2 * CTX.pi)}


def bound(steps: Steps) -> dict[str, Bound]:
    return {name: Bound(function, steps) for name, function in FUNCTIONS.items()}


# -- roots, powers, logarithms -------------------------------------------------------------


def _sqrt(steps: Steps, x: Value) -> Value:
    return steps.root(x, 2, "sqrt")


def _cbrt(steps: Steps, x: Value) -> Value:
    return steps.root(x, 3, "cbrt")


def _root(steps: Steps, x: Value, n: Value) -> Value:
    return steps.root(x, whole(n, "root's n"), "root")


def _exp(steps: Steps, x: Value) -> Value:
    if x == 0:
        return Fraction(1)
    steps.magnitude(to_mpf(x) / CTX.ln2, lambda: f"exp({show(x)})")
    return Approx(CTX.exp(to_mpf(x)))


def _positive(x: Value, name: str) -> None:
    if sign(x) == 0:
        raise CalcError(f"{name}(0) is undefined (the logarithm of 0 is minus infinity).")
    if sign(x) < 0:
        raise CalcError(f"{name}({show(x)}) is not a real number (the logarithm of a negative).")


def _log(steps: Steps, x: Value, base: Value | None = None) -> Value:
    _positive(x, "log")
    if base is None:
        return Fraction(0) if x == 1 else Approx(CTX.log(to_mpf(x)))
    if sign(base) <= 0 or base == 1:
        raise CalcError(f"log(x, {show(base)}): the base must be positive and not 1.")
    exact = _exact_log(steps, x, base)
    return exact if exact is not None else Approx(CTX.log(to_mpf(x)) / CTX.log(to_mpf(base)))


def _exact_log(steps: Steps, x: Value, base: Value) -> Fraction | None:
    """``k`` if ``x`` is exactly ``base**k`` for a whole ``k``."""
    if not isinstance(x, Fraction) or not isinstance(base, Fraction):
        return None
    estimate = CTX.log(to_mpf(x)) / CTX.log(to_mpf(base))
    k = int(CTX.nint(estimate))
    size = abs(k) * max(base.numerator.bit_length(), base.denominator.bit_length())
    if abs(estimate - k) > 1e-20 or size > 2 * steps.limits.max_log2:
        return None
    return Fraction(k) if base**k == x else None


def _log_base(base: int, name: str) -> Compute:
    def compute(steps: Steps, x: Value) -> Value:
        _positive(x, name)
        return _log(steps, x, Fraction(base))

    return compute


# -- trigonometry and friends --------------------------------------------------------------


def _real(name: str, at_zero: int | None = None, within_one: bool = False) -> Compute:
    """An mpmath function of one real argument (exact at 0 when ``at_zero`` is given)."""

    def compute(steps: Steps, x: Value) -> Value:
        if at_zero is not None and x == 0:
            return Fraction(at_zero)
        value = to_mpf(x)
        if within_one and abs(value) > 1:
            raise CalcError(f"{name}({show(x)}) is undefined: {name} takes values from -1 to 1.")
        return Approx(getattr(CTX, name)(value))

    return compute


def _periodic(name: str) -> Compute:
    """sin or cos, exact at 0."""

    def compute(steps: Steps, x: Value) -> Value:
        if x == 0:
            return Fraction(int(name == "cos"))
        return _sine_or_cosine(name, x)

    return compute


def _tan(steps: Steps, x: Value) -> Value:
    if x == 0:
        return Fraction(0)
    cosine = _sine_or_cosine("cos", x).value
    if cosine == 0:
        raise CalcError(f"tan({show(x)}) is undefined (its cosine is 0: an odd multiple of pi/2).")
    return Approx(_sine_or_cosine("sin", x).value / cosine)


def _sine_or_cosine(name: str, x: Value) -> Approx:
    """An exact argument is reduced with all its digits; an approximate one carries rounding
    error, so a value below that error is 0 (``sin(pi)``), and a huge one is refused."""
    if isinstance(x, Fraction):
        return Approx(getattr(CTX, name)(precise_mpf(x)))
    if abs(x.value) > PRECISE_EXPONENT:
        raise CalcError(
            f"{name}({show(x)}): the argument is approximate and so large that its rounding "
            f"error hides the result."
        )
    return chopped(getattr(CTX, name)(x.value), x.value)


def _atan2(steps: Steps, y: Value, x: Value) -> Value:
    return Approx(CTX.atan2(to_mpf(y), to_mpf(x)))


def _degrees(steps: Steps, x: Value) -> Value:
    return x if x == 0 else Approx(to_mpf(x) * 180 / CTX.pi)


def _radians(steps: Steps, x: Value) -> Value:
    return x if x == 0 else Approx(to_mpf(x) * CTX.pi / 180)


# -- rounding ------------------------------------------------------------------------------


def _abs(steps: Steps, x: Value) -> Value:
    return abs(x) if isinstance(x, Fraction) else Approx(abs(x.value))


def _floor(steps: Steps, x: Value) -> Value:
    return Fraction(math.floor(x)) if isinstance(x, Fraction) else Approx(CTX.floor(x.value))


def _ceil(steps: Steps, x: Value) -> Value:
    return Fraction(math.ceil(x)) if isinstance(x, Fraction) else Approx(CTX.ceil(x.value))


def _round(steps: Steps, x: Value, digits: Value = Fraction(0)) -> Value:
    """Halves away from zero, as on paper (not Python's halves to even)."""
    places = whole(digits, "round's digits")
    if abs(places) > steps.limits.max_digits:
        raise CalcError(f"round: digits must be within ±{steps.limits.max_digits:,}.")
    scale = Fraction(10) ** places
    if isinstance(x, Fraction):
        return math.floor(abs(x) * scale + Fraction(1, 2)) * sign(x) / scale
    rounded = CTX.floor(abs(x.value) * to_mpf(scale) + CTX.mpf(0.5)) * sign(x)
    return Approx(rounded / to_mpf(scale))


# -- whole numbers -------------------------------------------------------------------------


def _factorial(steps: Steps, n: Value) -> Value:
    k = whole(n, "factorial's argument")
    if k < 0:
        raise CalcError(f"factorial({k}) is undefined: factorial takes 0 or more.")
    most = steps.limits.max_factorial
    if k > most:
        raise CalcError(
            f"factorial({show(n)}) is too large: the calculator allows up to {most:,}!."
        )
    steps.magnitude(math.lgamma(k + 1) / math.log(2), lambda: f"factorial({k})")
    return Fraction(math.factorial(k))


def _comb(steps: Steps, n: Value, k: Value) -> Value:
    top, bottom = whole(n, "comb's n"), whole(k, "comb's k")
    if top < 0 or bottom < 0:
        raise CalcError("comb(n, k) takes whole numbers of 0 or more.")
    if top > steps.limits.max_factorial:
        raise CalcError(f"comb: n is at most {steps.limits.max_factorial:,}.")
    if bottom <= top:
        ln = math.lgamma(top + 1) - math.lgamma(bottom + 1) - math.lgamma(top - bottom + 1)
        steps.magnitude(ln / math.log(2), lambda: f"comb({top}, {bottom})")
    return Fraction(math.comb(top, bottom))


def _gcd(steps: Steps, *values: Value) -> Value:
    return Fraction(math.gcd(*(whole(value, "gcd's arguments") for value in values)))


def _lcm(steps: Steps, *values: Value) -> Value:
    result = 1
    for value in values:  # one at a time, so no partial result outgrows the limits
        result = math.lcm(result, whole(value, "lcm's arguments"))
        steps.magnitude(result.bit_length(), lambda: "the least common multiple")
    return Fraction(result)


def _extreme(pick: Callable[..., Any]) -> Compute:
    def compute(steps: Steps, *values: Value) -> Value:
        exact = all(isinstance(value, Fraction) for value in values)
        key: Callable[[Value], Any] = (lambda v: v) if exact else to_mpf
        result: Value = pick(values, key=key)
        return result

    return compute


def _function(
    signature: str, compute: Compute, least: int, *, optional: int = 0, variadic: bool = False
) -> Function:
    most = None if variadic else least + optional
    return Function(signature.split("(")[0], signature, least, most, compute)


FUNCTIONS: dict[str, Function] = {
    function.name: function
    for function in [
        _function("sqrt(x)", _sqrt, 1),
        _function("cbrt(x)", _cbrt, 1),
        _function("root(x, n)", _root, 2),
        _function("exp(x)", _exp, 1),
        _function("ln(x)", _log, 1),
        _function("log(x) or log(x, base)", _log, 1, optional=1),
        _function("log10(x)", _log_base(10, "log10"), 1),
        _function("log2(x)", _log_base(2, "log2"), 1),
        _function("sin(x)", _periodic("sin"), 1),
        _function("cos(x)", _periodic("cos"), 1),
        _function("tan(x)", _tan, 1),
        _function("asin(x)", _real("asin", at_zero=0, within_one=True), 1),
        _function("acos(x)", _real("acos", within_one=True), 1),
        _function("atan(x)", _real("atan", at_zero=0), 1),
        _function("atan2(y, x)", _atan2, 2),
        _function("sinh(x)", _real("sinh", at_zero=0), 1),
        _function("cosh(x)", _real("cosh", at_zero=1), 1),
        _function("tanh(x)", _real("tanh", at_zero=0), 1),
        _function("degrees(x)", _degrees, 1),
        _function("radians(x)", _radians, 1),
        _function("abs(x)", _abs, 1),
        _function("floor(x)", _floor, 1),
        _function("ceil(x)", _ceil, 1),
        _function("round(x) or round(x, digits)", _round, 1, optional=1),
        _function("factorial(n)", _factorial, 1),
        _function("comb(n, k)", _comb, 2),
        _function("gcd(a, b, ...)", _gcd, 1, variadic=True),
        _function("lcm(a, b, ...)", _lcm, 1, variadic=True),
        _function("min(a, b, ...)", _extreme(min), 1, variadic=True),
        _function("max(a, b, ...)", _extreme(max), 1, variadic=True),
    ]
}
