"""Exact arithmetic with limits: the evaluator behind the ``calculate`` tool.

Why these libraries: **simpleeval** walks Python's own AST (``ast.parse``) and evaluates only
the node types, operators, functions and names it is handed: no ``eval``, no attributes, no
builtins and no parser of ours. We hand it exact operators and our functions, and give it
exact literals by evaluating each number from its source text (a float literal would already
have lost ``0.1``). asteval runs a much larger Python subset (statements, loops), more than a
calculator wants to guard. **mpmath** (already pinned as sympy's dependency) computes the
irrational functions in a private context at a fixed working precision, so nothing here
changes global state.

Values are ``Fraction`` (exact: integers of any size, decimals, fractions) or ``Approx`` (an
mpmath number, ``WORKING_DIGITS`` digits). An operation stays exact when its result is
rational (``sqrt(16)``, ``8**(1/3)``, ``log10(1000)``, ``0.1+0.2``); anything touching an
``Approx`` is an ``Approx``, shown to ``SIGNIFICANT_DIGITS`` digits.

Reading the text (``prepare``, stdlib ``tokenize``, before parsing):
* ``^`` is a power, like ``**``; the signs for times, divided by and minus (U+00D7, U+00F7,
  U+2212) are ``*``, ``/`` and ``-``.
* ``%`` followed by a number, a name or ``(`` is modulo (``17 % 5``); any other ``%`` after an
  operand makes that operand a percentage: ``15%`` is ``(15/100)``, so ``200*15%`` is 30.
* ``n!`` is ``factorial(n)``. Both postfix forms bind tighter than any operator.

Limits (``Limits``): the input's length is checked first, the AST's depth before evaluation.
No literal, power, factorial or result may pass ``max_digits`` digits in size or 10**±that
in magnitude, and powers and factorials are estimated *before* they are computed, so no
single step can run long; the wall-clock budget is checked after every step as a backstop.
A fraction that outgrows the limit while its magnitude stays within it goes on approximately
(and says so). ``calculate`` raises nothing but ``CalcError``, whose text is for the model.
"""

from __future__ import annotations

import ast
import difflib
import io
import re
import tokenize
from fractions import Fraction

from simpleeval import (
    FeatureNotAvailable,
    FunctionNotDefined,
    InvalidExpression,
    NameNotDefined,
    OperatorNotDefined,
    SimpleEval,
)

from workbench.tools.arithmetic_functions import FUNCTIONS, bound, constants
from workbench.tools.arithmetic_values import (
    CalcError,
    Limits,
    Result,
    Steps,
    Value,
    describe,
    number,
)

__all__ = ["CalcError", "Limits", "Result", "calculate", "prepare"]

MAX_DEPTH = 100
"""Deepest AST evaluated (simpleeval recurses per node)."""

Token = tuple[int, str]
_OPEN: Token = (tokenize.OP, "(")
_CLOSE: Token = (tokenize.OP, ")")
_OPERAND = {tokenize.NUMBER, tokenize.NAME}
_NUMBER_EXPONENT = re.compile(r"[eE]([+-]?[\d_]+)")
_SYMBOLS = str.maketrans({"\u00d7": "*", "\u00f7": "/", "\u2212": "-"})
_HINTS = {"√": " (write sqrt(x))", "²": " (write x**2)", "³": " (write x**3)"}
_ARITHMETIC_ONLY = (
    "the calculator does arithmetic only: numbers, + - * / // % ** ^ !, parentheses and "
    "functions such as sqrt(x)"
)
_UNSUPPORTED = {
    "Compare": "Comparisons", "BoolOp": "and/or", "UnaryOp": "This operator",
    "IfExp": "if/else", "Attribute": "Attributes (x.y)", "Subscript": "Indexing (x[i])",
    "Tuple": "Several values (a, b)", "List": "Lists", "Set": "Sets", "Dict": "Dicts",
    "Lambda": "lambda", "keyword": "Keyword arguments (name=value)", "JoinedStr": "f-strings",
    "NamedExpr": "Assignments", "Starred": "*arguments", "Slice": "Slices",
}  # fmt: skip


def calculate(expression: str, limits: Limits) -> Result:
    """The value of ``expression``, or a ``CalcError`` saying why there is none."""
    if len(expression) > limits.max_chars:
        raise CalcError(
            f"The expression is {len(expression):,} characters long; the calculator reads at "
            f"most {limits.max_chars:,}."
        )
    python, notes = prepare(expression)
    if not python:
        raise CalcError("The expression is empty.")
    steps = Steps(limits)
    value = Evaluation(steps, python).evaluate(_parse(python))
    if steps.approximated:
        notes.append(
            f"an exact fraction grew past {limits.max_digits:,} digits, so the result is "
            "approximate"
        )
    result = describe(value)
    return Result(result.exact, result.text, (*notes, *result.notes))


# -- reading the text ----------------------------------------------------------------------


def prepare(expression: str) -> tuple[str, list[str]]:
    """``expression`` as Python arithmetic, and notes on how ``%`` and ``^`` were read."""
    tokens = _tokens(" ".join(expression.translate(_SYMBOLS).split()))
    out: list[Token] = []
    notes: dict[str, None] = {}  # in order, once each
    for index, (kind, text) in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else (tokenize.ENDMARKER, "")
        if text == "^":
            out.append((tokenize.OP, "**"))
            notes["^ was read as a power (like **)"] = None
        elif text == "%" and (following[0] in _OPERAND or following[1] == "("):
            out.append((tokenize.OP, "%"))
            notes["% between two operands was read as modulo (the remainder)"] = None
        elif text == "%":
            _wrap_operand(out, "%", [_OPEN], [(tokenize.OP, "/"), (tokenize.NUMBER, "100"), _CLOSE])
            notes["x% was read as a percentage (x/100)"] = None
        elif text == "!":
            _wrap_operand(out, "!", [(tokenize.NAME, "factorial"), _OPEN], [_CLOSE])
        else:
            out.append((kind, text))
    return " ".join(text for _, text in out), list(notes)


def _tokens(text: str) -> list[Token]:
    skipped = {tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.COMMENT}
    tokens: list[Token] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type in skipped or not token.string.strip():
                continue
            if token.type == tokenize.ERRORTOKEN and token.string != "!":
                char = token.string
                raise CalcError(f"Unexpected character {char!r}{_HINTS.get(char, '')}.")
            tokens.append((token.type, token.string))
    except tokenize.TokenError:
        raise CalcError("The parentheses do not match.") from None
    except SyntaxError as error:  # IndentationError and friends
        raise CalcError(f"Not a valid expression: {error.msg}.") from None
    return tokens


def _wrap_operand(
    out: list[Token],
    symbol: str,
    before: list[Token],
    after: list[Token],
) -> None:
    """Put ``before`` and ``after`` around the operand ``out`` ends with (a postfix operator)."""
    start = _operand_start(out)
    if start is None:
        raise CalcError(f"{symbol} must follow a number or a closing parenthesis.")
    out[start:] = [*before, *out[start:], *after]


def _operand_start(out: list[Token]) -> int | None:
    if not out:
        return None
    kind, text = out[-1]
    if kind in _OPERAND:
        return len(out) - 1
    if text != ")":
        return None
    depth = 0
    for index in range(len(out) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(out[index][1], 0)
        if depth == 0:
            called = index > 0 and out[index - 1][0] == tokenize.NAME
            return index - 1 if called else index
    return None


def _parse(python: str) -> ast.expr:
    try:
        tree = ast.parse(python, mode="eval")
    except SyntaxError as error:
        near = python[(error.offset or 1) - 1 :][:20].strip()
        where = f" near {near!r}" if near else " at the end"
        reason = (error.msg or "invalid syntax").split(".")[0]
        raise CalcError(f"Not a valid expression ({reason}{where}).") from None
    except (ValueError, RecursionError, MemoryError):
        raise CalcError("The expression is too complex.") from None
    if _depth(tree.body) > MAX_DEPTH:
        raise CalcError(f"The expression is nested too deeply (at most {MAX_DEPTH} levels).")
    return tree.body


def _depth(root: ast.AST) -> int:
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


# -- evaluating ----------------------------------------------------------------------------


class Evaluation:
    """simpleeval over ``source`` with exact operators, our functions and constants only."""

    def __init__(self, steps: Steps, source: str) -> None:
        self._steps = steps
        self._source = source
        operators = {
            ast.Add: steps.add, ast.Sub: steps.sub, ast.Mult: steps.mul, ast.Div: steps.div,
            ast.FloorDiv: steps.floordiv, ast.Mod: steps.mod, ast.Pow: steps.power,
            ast.USub: steps.neg, ast.UAdd: steps.pos,
        }  # fmt: skip
        evaluator = SimpleEval(operators=operators, functions=bound(steps), names=constants())
        # Only these node types: anything else (comparisons, attributes, subscripts, lambdas,
        # comprehensions, strings) is FeatureNotAvailable before it is evaluated.
        evaluator.nodes = {
            ast.Constant: self._constant,
            ast.Name: evaluator._eval_name,
            ast.Call: evaluator._eval_call,
            ast.UnaryOp: evaluator._eval_unaryop,
            ast.BinOp: evaluator._eval_binop,
        }
        self._evaluator = evaluator

    def evaluate(self, tree: ast.expr) -> Value:
        try:
            return number(self._evaluator.eval(self._source, previously_parsed=tree))
        except CalcError:
            raise
        except NameNotDefined as error:
            raise CalcError(_unknown_name(str(error.name))) from None
        except FunctionNotDefined as error:
            raise CalcError(_unknown_function(str(error.func_name))) from None
        except OperatorNotDefined:
            raise CalcError(f"This operator is not supported: {_ARITHMETIC_ONLY}.") from None
        except FeatureNotAvailable as error:
            raise CalcError(_unsupported(str(error))) from None
        except InvalidExpression as error:
            raise CalcError(f"Not a valid expression: {error}.") from None
        except ZeroDivisionError:
            raise CalcError("Division by zero.") from None
        except (ArithmeticError, ValueError, TypeError, RecursionError, MemoryError) as error:
            raise CalcError(f"The calculation failed: {error}.") from None

    def _constant(self, node: ast.Constant) -> Value:
        value = node.value
        if isinstance(value, complex):
            raise CalcError("Complex numbers (like 2j) are not supported.")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CalcError(f"Only numbers can be calculated with: {_ARITHMETIC_ONLY}.")
        if isinstance(value, int):
            return self._steps.checked(Fraction(value))
        # The literal's own digits: the float in the AST has already lost 0.1.
        text = (ast.get_source_segment(self._source, node) or repr(value)).replace("_", "")
        exponent = _NUMBER_EXPONENT.search(text)
        digits = self._steps.limits.max_digits
        if exponent and abs(int(exponent.group(1))) > digits + len(text):
            raise CalcError(
                f"{text} is out of range: the calculator works with numbers up to {digits:,} "
                "digits."
            )
        return self._steps.checked(Fraction(text))


def _unknown_name(name: str) -> str:
    if name in FUNCTIONS:
        return f"{name} is a function: call it with its argument, e.g. {name}(2)."
    like = difflib.get_close_matches(name, [*constants(), *FUNCTIONS], n=1)
    hint = f" (did you mean {like[0]}?)" if like else ""
    return (
        f"Unknown name {name!r}{hint}. The calculator has no variables; its constants are "
        "pi, e and tau. Put the numbers in the expression."
    )


def _unknown_function(name: str) -> str:
    like = difflib.get_close_matches(name, list(FUNCTIONS), n=1)
    hint = f" (did you mean {like[0]}?)" if like else ""
    return f"Unknown function {name!r}{hint}. The functions are: {', '.join(FUNCTIONS)}."


def _unsupported(message: str) -> str:
    if "Lambda Functions" in message:  # simpleeval's words for calling what is no name
        return "Only the calculator's functions can be called, like sqrt(2); write * to multiply."
    found = re.search(r"Sorry, (\w+) is not available", message)
    what = _UNSUPPORTED.get(found.group(1), found.group(1)) if found else "This"
    return f"{what} cannot be used: {_ARITHMETIC_ONLY}."
