"""``calculate(expression)``: exact arithmetic without the kernel, shown as a small widget.

It works on every provider and with no sandbox: the expression is evaluated in-process by
``tools/arithmetic.py`` (simpleeval over Python's AST, exact numbers, limits against abuse),
never by ``eval`` or the kernel, and within a bounded time — in a worker thread, as even a
bounded calculation (a long sum of 997th roots) takes a good part of a second, which the
event loop would spend frozen for every other stream.

The user sees ``expression = result`` in a calculator widget, streamed as an item of its own
(added and done at once, so it is saved as is); the plug-in shows no workflow task, since a
widget ends the open workflow and would save the task still spinning. The model reads the
same line, plus notes on how ``%``, ``^`` and long results were read. Every failure (syntax,
division by zero, a domain error such as ``sqrt(-1)``, an unknown name, a limit) is the
tool's text result and shows in the widget: nothing raises out of the tool.

Demo trigger: a line ``calc: <expression>`` in the user's message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agents import FunctionTool, function_tool
from agents.tool_context import ToolContext
from chatkit.types import ThreadItemAddedEvent, ThreadItemDoneEvent, WidgetItem

from workbench.config import Settings
from workbench.plugins import ToolPlugin, TurnContext
from workbench.tools.arithmetic import CalcError, Limits, Result, calculate
from workbench.tools.arithmetic_functions import FUNCTIONS
from workbench.tools.arithmetic_values import SIGNIFICANT_DIGITS
from workbench.tools.services import ToolServices
from workbench.widgets import template, truncate_middle

TOOL_NAME = "calculate"
SHOWN_EXPRESSION_CHARS = 200  # of the expression in the widget (and in the model's answer)
SHOWN_RESULT_CHARS = 400  # of the result in the widget; the model reads all of it

_DEMO_TRIGGER = re.compile(r"^[ \t]*calc:[ \t]*(\S.*?)[ \t]*$", re.MULTILINE | re.IGNORECASE)
_log = logging.getLogger(__name__)


def plugins(services: ToolServices) -> list[ToolPlugin]:
    return [CalculatorTool(limits(services.settings))]


def limits(settings: Settings) -> Limits:
    return Limits(
        max_chars=settings.calculator_max_chars,
        max_digits=settings.calculator_max_digits,
        max_factorial=settings.calculator_max_factorial,
        seconds=settings.calculator_time_budget,
    )


def description(limits: Limits) -> str:
    functions = ", ".join(function.signature for function in FUNCTIONS.values())
    return f"""Calculate an arithmetic expression exactly and show the user the result.

Use it for any arithmetic instead of working it out yourself. It runs no code (no sandbox).
Numbers are exact: integers of any size (up to {limits.max_digits:,} digits), decimals and
fractions, so 0.1+0.2 is exactly 0.3 and 1/3 stays the fraction 1/3 (with a decimal).
Operators: + - * / (exact division), // (floor division), ** or ^ (power), parentheses,
n! (factorial).
% has two meanings: followed by a number, a name or "(" it is modulo (17 % 5 = 2, with the
sign of the divisor, as in Python); otherwise it makes the number before it a percentage,
x% = x/100: 200*15% = 30, 100*(1+8%) = 108 (and 100 + 10% is 100.1, not 110). For a modulo
by a negative number write 7 % (-3).
Functions: {functions}. Trigonometry is in radians (use radians(30) for degrees); round
takes halves away from zero. Constants: pi, e, tau. There are no variables.
Irrational results (sqrt(2), sin, log, pi) are given to {SIGNIFICANT_DIGITS} significant digits;
everything else is exact. Limits: {limits.max_chars:,} characters, numbers up to
{limits.max_digits:,} digits, factorial up to {limits.max_factorial:,}!. An expression it
cannot calculate comes back as an error saying why."""


@dataclass(frozen=True)
class Calculation:
    """One call: the expression as shown, and its result or the reason it has none."""

    expression: str
    result: Result | None = None
    error: str | None = None

    @property
    def relation(self) -> str:
        return "=" if self.result is None or self.result.exact else "≈"

    def for_model(self) -> str:
        if self.result is None:
            return f"Error in {self.expression}: {self.error}"
        line = f"{self.expression} {self.relation} {self.result.text}"
        notes = list(self.result.notes)
        if not self.result.exact:
            notes.append(f"rounded to {SIGNIFICANT_DIGITS} significant digits")
        return line + (f"\n({'; '.join(notes)})" if notes else "")

    def widget_data(self) -> dict[str, Any]:
        result = note = None
        if self.result is not None:
            result, cut = truncate_middle(self.result.text, SHOWN_RESULT_CHARS)
            notes = [*self.result.notes, *([cut] if cut else [])]
            note = "; ".join(notes) if notes else None
        return {
            "expression": self.expression,
            "relation": self.relation,
            "result": result,
            "error": self.error,
            "note": note[:1].upper() + note[1:] if note else None,
        }


def run_calculation(expression: str, limits: Limits) -> Calculation:
    shown = shown_expression(expression)
    try:
        return Calculation(shown, result=calculate(expression, limits))
    except CalcError as error:
        return Calculation(shown, error=clean(str(error)))
    except Exception:  # a bug of ours must not end the turn: the model is told
        _log.exception("calculate failed on %r", shown)
        return Calculation(shown, error="The calculator failed on this expression (a bug).")


def shown_expression(expression: str) -> str:
    """``expression`` on one line, bounded, and safe to store (no NUL, no lone surrogate)."""
    text, _ = truncate_middle(" ".join(clean(expression).split()), SHOWN_EXPRESSION_CHARS)
    return text.replace("\n", " ") or "(empty)"


def clean(text: str) -> str:
    return "".join(
        "\ufffd" if unicodedata.category(char) in {"Cc", "Cs"} and char not in "\t\n" else char
        for char in text
    )


class CalculatorTool(ToolPlugin):
    id = TOOL_NAME
    widget_templates = ("calculator",)
    instructions = "For arithmetic, call calculate: it is exact and shows the user the result."

    def __init__(self, limits: Limits) -> None:
        self._limits = limits

    def tool(self) -> FunctionTool:
        @function_tool(name_override=TOOL_NAME, description_override=description(self._limits))
        async def calculate(context: ToolContext[TurnContext], expression: str) -> str:
            """
            Args:
                expression: The arithmetic expression, e.g. 2**100 or 200*15%.
            """
            return await self.run(context.context, expression)

        return calculate

    def demo_trigger(self, text: str) -> str | None:
        found = _DEMO_TRIGGER.search(text)
        return json.dumps({"expression": found.group(1)}) if found else None

    async def call_started(self, turn: TurnContext, item: Any) -> None:
        return None  # the widget is the display: no workflow task

    async def call_output(self, turn: TurnContext, call_id: str, output: Any) -> None:
        return None

    async def run(self, context: TurnContext, expression: str) -> str:
        calculation = await asyncio.to_thread(run_calculation, expression, self._limits)
        text = calculation.for_model()
        item = WidgetItem(
            id=context.generate_id("message"),
            thread_id=context.thread.id,
            created_at=datetime.now(UTC),
            widget=template("calculator").build(calculation.widget_data()),
            copy_text=text.split("\n")[0],
        )
        await context.stream(ThreadItemAddedEvent(item=item))
        await context.stream(ThreadItemDoneEvent(item=item))
        return text
