"""The calculator: exact numbers, percent and modulo, functions to 15 digits, every abuse input
refused fast, errors as text; then ``calc:`` over HTTP with the demo model and one turn with a
scripted provider."""

from __future__ import annotations

import json
import math
import time
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import mpmath
import pytest
from chatkit.types import AssistantMessageItem, ThreadItemDoneEvent, WidgetItem, WorkflowItem

from tests.live import (
    LiveServer,
    ScriptedOpenAI,
    create_thread,
    list_items,
    provider_settings,
    responses_step,
    running,
    stream_events,
    title_step,
)
from tests.test_tool_seam import toolset_ids
from workbench.agent.response_events import FunctionCall, Text
from workbench.config import Settings
from workbench.tools import calculator
from workbench.tools.arithmetic import CalcError, Limits, Result, calculate
from workbench.widgets import template

LIMITS = Limits()


def calc(expression: str, limits: Limits = LIMITS) -> Result:
    return calculate(expression, limits)


def refusal(expression: str, limits: Limits = LIMITS) -> str:
    with pytest.raises(CalcError) as error:
        calculate(expression, limits)
    return str(error.value)


def to_15(value: Decimal | str) -> Decimal:
    """``value`` rounded to 15 significant digits."""
    return Context(prec=15).plus(Decimal(value))


def shown_15(result: Result, reference: Decimal | str) -> bool:
    """``result`` is approximate, and ``reference`` to 15 significant digits."""
    digits = result.text.split("e")[0].replace("-", "").replace(".", "").strip("0")
    return not result.exact and len(digits) <= 15 and Decimal(result.text) == to_15(reference)


# -- exactness -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "shown"),
    [
        ("2**100", str(2**100)),
        ("0.1+0.2", "0.3"),
        ("0.1*3 - 0.3", "0"),
        ("1/3", "1/3 ≈ 0.333333333333333"),
        ("2/3", "2/3 ≈ 0.666666666666667"),
        ("1/8", "0.125"),
        ("2**-10", "0.0009765625"),
        ("1e-3 + 1e-3", "0.002"),
        ("1_000_000 * 1.5", "1500000"),
        ("0x1F + 0b101", "36"),
        ("123456789012345678901234567890 * 987654321098765432109876543210",
         str(123456789012345678901234567890 * 987654321098765432109876543210)),
        ("factorial(100)", str(math.factorial(100))),
        ("10**2999 + 1", str(10**2999 + 1)),
        ("3 × 4 ÷ 2 − 1", "5"),
        ("1 +\n 2  # a comment", "3"),
    ],
)  # fmt: skip
def test_numbers_are_exact(expression: str, shown: str) -> None:
    result = calc(expression)
    assert result.exact
    assert result.text == shown


def test_an_exact_value_too_long_to_show_is_shown_approximately_and_says_so() -> None:
    result = calc("1.05**1000")  # a terminating decimal of 2,000 places
    assert shown_15(result, Context(prec=3000).power(Decimal("1.05"), 1000))
    assert any("exact decimal has 2,023 characters" in note for note in result.notes)


def test_a_fraction_that_outgrows_the_limit_goes_on_approximately() -> None:
    result = calc("1.0000001**1000000000")  # e**100-ish; exactly, a billion-digit fraction
    assert shown_15(result, str(mpmath.mpf("1.0000001") ** 1000000000))
    assert any("approximate" in note for note in result.notes)


# -- percent, modulo, powers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "shown", "note"),
    [
        ("200*15%", "30", "percentage"),
        ("50%", "0.5", "percentage"),
        ("100*(1+8%)", "108", "percentage"),
        ("100 + 10%", "100.1", "percentage"),
        ("10% - 3", "-2.9", "percentage"),
        ("(1+2)%", "0.03", "percentage"),
        ("sqrt(16)%", "0.04", "percentage"),
        ("50%%", "0.005", "percentage"),
        ("17 % 5", "2", "modulo"),
        ("-7 % 3", "2", "modulo"),
        ("7 % (-3)", "-2", "modulo"),
        ("5.5 % 2", "1.5", "modulo"),
        ("10 % 4 * 3", "6", "modulo"),
        ("2^10", "1024", "power"),
        ("2 ^ 3 ^ 2", "512", "power"),
    ],
)
def test_percent_modulo_and_caret_are_read_as_documented(
    expression: str, shown: str, note: str
) -> None:
    result = calc(expression)
    assert (result.text, result.exact) == (shown, True)
    assert any(note in n for n in result.notes), result.notes


@pytest.mark.parametrize(
    ("expression", "shown"),
    [
        ("2**3**2", "512"), ("(-2)**3", "-8"), ("0**0", "1"), ("4**0.5", "2"),
        ("8**(2/3)", "4"), ("(-8)**(1/3)", "-2"), ("(1/4)**-0.5", "2"), ("5!", "120"),
        ("3!!", "720"), ("2**3!", "64"), ("-3!", "-6"), ("10//3", "3"), ("-7//2", "-4"),
    ],
)  # fmt: skip
def test_powers_and_factorials(expression: str, shown: str) -> None:
    assert (calc(expression).text, calc(expression).exact) == (shown, True)


def test_both_meanings_of_percent_are_documented_for_the_model() -> None:
    text = calculator.description(LIMITS)
    assert "modulo (17 % 5 = 2" in text
    assert "x% = x/100: 200*15% = 30" in text
    assert "15 significant digits" in text


# -- functions and precision ---------------------------------------------------------------

mpmath.mp.dps = 50


@pytest.mark.parametrize(
    ("expression", "reference"),
    [
        ("sqrt(2)", Context(prec=40).sqrt(Decimal(2))),
        ("exp(1)", Context(prec=40).exp(Decimal(1))),
        ("ln(10)", Context(prec=40).ln(Decimal(10))),
        ("log(10)", Context(prec=40).ln(Decimal(10))),
        ("log10(2)", Context(prec=40).log10(Decimal(2))),
        ("log(3, 7)", Context(prec=40).ln(Decimal(3)) / Context(prec=40).ln(Decimal(7))),
        ("2**0.5", Context(prec=40).sqrt(Decimal(2))),
        ("1.5**1.5", Context(prec=40).power(Decimal("1.5"), Decimal("1.5"))),
        ("pi", str(mpmath.pi)),
        ("atan(1)*4", str(mpmath.pi)),
        ("e", str(mpmath.e)),
        ("sin(1)", str(mpmath.sin(1))),
        ("cos(1)", str(mpmath.cos(1))),
        ("tan(1)", str(mpmath.tan(1))),
        ("sin(pi/6)", "0.5"),
        ("asin(0.5)", str(mpmath.asin(0.5))),
        ("sinh(2)", str(mpmath.sinh(2))),
        ("degrees(1)", str(180 / mpmath.pi)),
        ("radians(30)", str(mpmath.pi / 6)),
        ("atan2(1, -1)", str(mpmath.atan2(1, -1))),
        ("cbrt(2)", str(mpmath.cbrt(2))),
        ("root(10, 5)", str(mpmath.root(10, 5))),
        ("sin(10**22)", "-0.8522008497671888017727058937530293682"),  # a classic hard case
        ("sqrt(2)*sqrt(3) + 1/3", str(mpmath.sqrt(6) + mpmath.mpf(1) / 3)),
    ],
)
def test_irrational_results_have_15_significant_digits(
    expression: str, reference: Decimal | str
) -> None:
    assert shown_15(calc(expression), reference)


@pytest.mark.parametrize(
    ("expression", "shown"),
    [
        ("sqrt(16)", "4"), ("sqrt(1/4)", "0.5"), ("sqrt(10**40)", str(10**20)),
        ("cbrt(-27)", "-3"), ("root(2**60, 6)", "1024"), ("log10(1000)", "3"),
        ("log10(0.001)", "-3"), ("log2(1024)", "10"), ("log(8, 2)", "3"), ("ln(1)", "0"),
        ("exp(0)", "1"), ("sin(0)", "0"), ("cos(0)", "1"), ("factorial(20)", "2432902008176640000"),
        ("comb(52, 5)", "2598960"), ("gcd(12, 18, 30)", "6"), ("lcm(4, 6, 10)", "60"),
        ("abs(-2.5)", "2.5"), ("floor(-2.5)", "-3"), ("ceil(2.1)", "3"),
        ("round(2.675, 2)", "2.68"), ("round(-2.5)", "-3"), ("round(1234, -2)", "1200"),
        ("min(3, 1/2, 2)", "0.5"), ("max(1, 2**0.5, 3/2)", "1.5"),
    ],
)  # fmt: skip
def test_functions_stay_exact_where_the_result_is_rational(expression: str, shown: str) -> None:
    result = calc(expression)
    assert (result.text, result.exact) == (shown, True)


@pytest.mark.parametrize("expression", ["sin(pi)", "cos(pi/2)", "sqrt(2)**2 - 2", "pi - pi"])
def test_rounding_noise_of_approximate_inputs_shows_as_zero(expression: str) -> None:
    assert calc(expression) == Result(False, "0")


# -- errors are text -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("1/0", "Division by zero"), ("5 % 0", "Modulo by zero"), ("7 // 0", "Division by zero"),
        ("0**-1", "0 cannot be raised to a negative power"),
        ("sqrt(-1)", "sqrt(-1) is not a real number"), ("(-1)**0.5", "not a real number"),
        ("log(0)", "log(0) is undefined"), ("log(-1)", "not a real number"),
        ("log10(0)", "log10(0) is undefined"), ("log(8, 1)", "base must be positive and not 1"),
        ("asin(2)", "asin takes values from -1 to 1"), ("tan(pi/2)", "undefined"),
        ("factorial(-1)", "factorial takes 0 or more"),
        ("factorial(2.5)", "must be a whole number, not 2.5"),
        ("foo + 1", "Unknown name 'foo' (did you mean floor?)"), ("x", "no variables"),
        ("sqr(2)", "Unknown function 'sqr' (did you mean sqrt?)"),
        ("sqrt", "sqrt is a function"), ("sqrt(1, 2)", "sqrt(x): got 2 arguments"),
        ("log(8, base=2)", "Keyword arguments"), ("1 +", "Not a valid expression"),
        ("(1+2", "parentheses do not match"), ("1+2)", "parentheses do not match"),
        ("2 pi", "Not a valid expression"), ("2(3)", "write * to multiply"),
        ("1 < 2", "Comparisons cannot be used"), ("1 if 2 else 3", "if/else cannot be used"),
        ("'text'", "Only numbers"), ("True", "Only numbers"), ("1j", "Complex numbers"),
        ("(1).real", "Attributes"), ("[1, 2]", "Lists"), ("1, 2", "Several values"),
        ("lambda: 1", "lambda cannot be used"), ("x = 1", "Not a valid expression"),
        ("__import__('os')", "Unknown function '__import__'"),
        ("__import__('os').system('id')", "Attributes (x.y) cannot be used"),
        ("1 $ 2", "Unexpected character '$'"), ("√2", "write sqrt(x)"), ("5+%", "% must follow"),
        ("", "empty"), ("   ", "empty"), ("\x00", "Unexpected character"),
    ],
)  # fmt: skip
def test_errors_come_back_as_text(expression: str, says: str) -> None:
    assert says in refusal(expression)


# -- abuse ---------------------------------------------------------------------------------

ABUSE = {
    "tower": ("9**9**9**9", "too large"),
    "factorial": ("factorial(10**6)", "allows up to 1,000!"),
    "exponent": ("10**10**10", "too large"),
    "tower of twos": ("2**2**2**2**2**2", "too large"),
    "big literal": ("1e1000000000", "out of range"),
    "tiny literal": ("1e-1000000000", "out of range"),
    "tiny power": ("0.5**100000", "too small"),
    "product": ("factorial(1000)*factorial(1000)", "too large"),
    "exp": ("exp(10**100)", "too large"),
    "approximate power": ("1.5**(10**2999)", "too large"),
    "precise exponent": ("(1+10**-2990)**(10**2990)", "exponent is too large"),
    "comb": ("comb(1000, 500)**11", "too large"),
    "just too many digits": ("10**3000", "too large"),
    "parens": ("(" * 300 + "1" + ")" * 300, "Not a valid expression"),
    "nested calls": ("sqrt(" * 150 + "2" + ")" * 150, "nested too deeply"),
    "unary chain": ("-" * 900 + "1", "nested too deeply"),
    "100 kB": ("1+" * 50_000, "100,000 characters long; the calculator reads at most 1,000"),
}


@pytest.mark.parametrize(("expression", "says"), ABUSE.values(), ids=ABUSE.keys())
def test_abuse_is_refused_fast(expression: str, says: str) -> None:
    started = time.perf_counter()
    message = refusal(expression)
    assert time.perf_counter() - started < 0.5
    assert says in message


def test_the_largest_allowed_numbers_still_work_fast() -> None:
    started = time.perf_counter()
    assert len(calc("2**9965").text) == 3000
    assert len(calc("factorial(1000)").text) == 2568
    assert shown_15(calc("sin(10**2999)"), str(mpmath.sin(10**2999)))
    assert time.perf_counter() - started < 0.5


def test_the_time_budget_stops_a_calculation() -> None:
    assert "budget" in refusal("1+1", Limits(seconds=1e-9))


def test_the_limits_are_settings(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None, data_dir=tmp_path, calculator_max_chars=20, calculator_max_digits=50,
        calculator_max_factorial=10, calculator_time_budget=2.5,
    )  # fmt: skip
    limits = calculator.limits(settings)
    assert limits == Limits(max_chars=20, max_digits=50, max_factorial=10, seconds=2.5)
    assert "reads at most 20" in refusal("1+" * 15 + "1", limits)
    assert "too large" in refusal("2**200", limits)
    assert "allows up to 10!" in refusal("11!", limits)
    assert calc("2**100", limits).text == str(2**100)


# -- the plug-in ---------------------------------------------------------------------------


def test_the_demo_trigger_is_a_calc_line() -> None:
    tool = calculator.CalculatorTool(LIMITS)
    assert json.loads(tool.demo_trigger("calc: 12*(3+4)") or "") == {"expression": "12*(3+4)"}
    assert json.loads(tool.demo_trigger("Hi!\n  CALC:2^10 \nthanks") or "") == {
        "expression": "2^10"
    }
    assert tool.demo_trigger("calculate 12*(3+4)") is None
    assert tool.demo_trigger("calc:   ") is None


@pytest.mark.parametrize("expression", ["12*(3+4)", "1/3", "sqrt(2)", "200*15%", "2**9965",
                                        "1/0", "x\x00y\ud800", "1" * 5000])  # fmt: skip
def test_the_widget_shows_expression_and_result(expression: str) -> None:
    calculation = calculator.run_calculation(expression, LIMITS)
    data = calculation.widget_data()
    jsonschema.validate(data, template("calculator").data_schema)
    texts = widget_texts(template("calculator").build(data).model_dump(exclude_none=True))
    assert calculation.expression in texts
    for value in data.values():  # what reaches Postgres
        assert "\x00" not in str(value) and not any(0xD800 <= ord(c) < 0xE000 for c in str(value))
    assert len(calculation.expression) <= calculator.SHOWN_EXPRESSION_CHARS + 60
    if calculation.result is None:
        assert calculation.error in texts
        assert calculation.for_model().startswith("Error in ")
    else:
        assert f"{calculation.relation} {data['result']}" in texts


async def test_the_calculator_is_offered_on_every_provider_with_no_sandbox(
    tmp_path: Path,
) -> None:
    for provider in ("openai", "chat_completions", "demo"):
        assert "calculate" in await toolset_ids(tmp_path, provider, sandbox="none")


def widget_texts(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["value"]] if isinstance(node.get("value"), str) else []
        return own + [text for value in node.values() for text in widget_texts(value)]
    if isinstance(node, list):
        return [text for value in node for text in widget_texts(value)]
    return []


# -- over HTTP -----------------------------------------------------------------------------


async def test_calc_with_the_demo_model_over_http(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    events = await stream_events(http, live.url, create_thread("calc: 12*(3+4)"))
    assert [e for e in events if e.type == "error"] == []
    thread_id = events[0].thread.id
    done = [e.item for e in events if isinstance(e, ThreadItemDoneEvent)]
    [widget] = [item for item in done if isinstance(item, WidgetItem)]
    assert widget.copy_text == "12*(3+4) = 84"
    texts = widget_texts(widget.widget.model_dump(exclude_none=True))
    assert "12*(3+4)" in texts and "= 84" in texts
    [reply] = [item for item in done if isinstance(item, AssistantMessageItem)]
    assert "`calculate` returned" in reply.content[0].text
    assert "12*(3+4) = 84" in reply.content[0].text
    assert not [item for item in done if isinstance(item, WorkflowItem)]  # no task for it

    items = await list_items(http, live.url, thread_id)
    [saved] = [item for item in items if isinstance(item, WidgetItem)]
    assert saved.id == widget.id
    assert saved.widget == widget.widget
    assert isinstance(items[-1], AssistantMessageItem)
    assert not [item for item in items if isinstance(item, WorkflowItem)]


async def test_an_error_is_shown_and_explained_not_raised(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    events = await stream_events(http, live.url, create_thread("calc: sqrt(-1)"))
    assert [e for e in events if e.type == "error"] == []
    done = [e.item for e in events if isinstance(e, ThreadItemDoneEvent)]
    [widget] = [item for item in done if isinstance(item, WidgetItem)]
    assert "sqrt(-1) is not a real number" in json.dumps(widget.widget.model_dump())
    [reply] = [item for item in done if isinstance(item, AssistantMessageItem)]
    assert "Error in sqrt(-1): sqrt(-1) is not a real number" in reply.content[0].text


async def test_a_provider_model_reads_the_result(
    database_url: str, tmp_path: Path, scripted_openai: ScriptedOpenAI, http: httpx.AsyncClient
) -> None:
    arguments = json.dumps({"expression": "0.1+0.2"})
    scripted_openai.script(
        responses_step([FunctionCall("calculate", arguments, "call_c")]),
        responses_step([Text("It is exactly 0.3.")]),
        title_step("Sum"),
    )
    settings = provider_settings(database_url, tmp_path / "data", scripted_openai)
    with running(LiveServer(settings)) as live:
        events = await stream_events(http, live.url, create_thread("What is 0.1+0.2?"))
    assert [e for e in events if e.type == "error"] == []
    first = scripted_openai.streamed[0]
    [tool] = [tool for tool in first["tools"] if tool.get("name") == "calculate"]
    assert "x% = x/100" in tool["description"]
    assert "For arithmetic, call calculate" in first["instructions"]
    outputs = [
        item["output"] for item in scripted_openai.streamed[1]["input"]
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    ]  # fmt: skip
    assert outputs == ["0.1+0.2 = 0.3"]
