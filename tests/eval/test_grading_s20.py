"""Grader review, session 20: nested powers and the parse timeout, function powers
(``\\sin(x)^2``), and final-answer extraction after ``</think>`` and from "the answer is X"."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from resetfp4.eval import grading
from resetfp4.eval.grading import extract_answer, is_equiv, run_with_timeout
from resetfp4.eval.mathparse import MathParseError, parse_math

SRC = Path(__file__).resolve().parents[2] / "src"
NESTED = "(((9^{199})^{199})^{199})^{199}"


# ---- 1. nested powers: a bound on the integers a power builds, and the parse under the timeout


@pytest.mark.parametrize(
    "s",
    [
        "(9^{199})^{199}",  # each exponent is small, the result has 125,000 bits
        # (NESTED itself is tested in a child process below: a regression would hang here)
        "(9^{199}x)^{199}",  # sympy distributes the power over the product
        "\\sqrt[0.001]{9}",  # a root is a power: 9^1000
        "\\sqrt[0.01]{\\sqrt[0.01]{\\sqrt[0.01]{9}}}",
        "\\sin^{9^{199}}(x)",
    ],
)
def test_powers_too_large_are_refused(s):
    with pytest.raises(MathParseError):
        parse_math(s)


@pytest.mark.parametrize(
    "s, value",
    [("2^{100}", 2**100), ("(2^{10})^{10}", 2**100), ("9^{199}", 9**199), ("\\sqrt[3]{8}", 2),
     ("(2^{100})^{100}", 2**10000)],
    ids=["2^100", "(2^10)^10", "9^199", "cbrt 8", "(2^100)^100"],
)
def test_ordinary_powers_still_parse(s, value):
    assert parse_math(s) == value


def test_nested_power_grades_fast_in_the_main_thread_and_in_a_worker():
    # a child process: on a hang the C-level big-integer power cannot be interrupted in-process
    script = textwrap.dedent(f"""
        import threading
        from resetfp4.eval.grading import is_equiv
        out = {{}}
        t = threading.Thread(target=lambda: out.update(worker=is_equiv({NESTED!r}, "1")))
        t.start()
        t.join()
        print(is_equiv({NESTED!r}, "1"), out["worker"], is_equiv({NESTED!r}, {NESTED!r}))
    """)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(SRC)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False", "True"]  # too large: not equal (same string: equal)
    assert time.monotonic() - t0 < 30


def _slow_parse(seconds):
    real = parse_math

    def parse(s):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # pure Python: a signal can stop it
            pass
        return real(s)

    return parse


def test_the_parse_runs_inside_the_timeout(monkeypatch):
    monkeypatch.setattr(grading, "parse_math", _slow_parse(3.0))
    t0 = time.monotonic()
    assert not is_equiv("x+1", "1+x", timeout_s=0.2)
    assert time.monotonic() - t0 < 1.5


def test_off_the_main_thread_the_symbolic_check_is_skipped_not_run(monkeypatch):
    monkeypatch.setattr(grading, "parse_math", _slow_parse(3.0))
    out = {}
    t0 = time.monotonic()
    t = threading.Thread(target=lambda: out.update(r=(is_equiv("x+1", "1+x"), is_equiv("0.5", "1/2"))))
    t.start()
    t.join(10)
    assert out["r"] == (False, True)  # numbers need no sympy and still compare
    assert time.monotonic() - t0 < 1.5


def test_run_with_timeout_stops_code_that_swallows_one_timeout():
    def stubborn():
        deadline = time.monotonic() + 3.0
        try:
            while time.monotonic() < deadline:
                pass
        except TimeoutError:  # swallowed once, as a broad `except Exception` inside sympy would
            while time.monotonic() < deadline:
                pass
        return "done"

    t0 = time.monotonic()
    assert run_with_timeout(stubborn, 0.1) is None
    assert time.monotonic() - t0 < 1.5
    assert run_with_timeout(lambda: 7, 1.0) == 7  # and the alarm is off afterwards
    time.sleep(0.2)


# ---- 2. function powers


@pytest.mark.parametrize(
    "pred, gold, want",
    [
        ("\\sin(x)^2", "\\sin(x^2)", False),
        ("\\cos(x)^2+\\sin(x)^2", "1", True),
        ("\\sin^2 x + \\cos^2 x", "1", True),
        ("\\sin^{2}(x)", "\\sin(x)^2", True),
        ("\\sin^2(x)", "1-\\cos^2(x)", True),
        ("\\sin^2 x", "\\sin(x)\\sin(x)", True),
        ("\\sin x^2", "\\sin(x^2)", True),  # conventionally sin(x^2)
        ("\\sin x^2", "\\sin(x)^2", False),
        ("sin(x)^2", "\\sin^2(x)", True),
        ("2\\sin(x)^2", "1-\\cos(2x)", True),
        ("\\ln(x)^2", "\\ln^2 x", True),
        ("\\sin^{-1}(1)", "\\frac{\\pi}{2}", True),  # ^{-1} on a trig function: the inverse
        ("\\tan^{-1} x", "\\arctan(x)", True),
    ],
)
def test_function_powers(pred, gold, want):
    assert is_equiv(pred, gold) is want


# ---- 3. extraction: after the last </think>, and "the answer is X" before the last number


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>maybe \\boxed{3}</think> The answer is 5.", "5"),
        ("The answer is 42. Check: 42*2 = 84.", "42"),
        ("<think>so 4</think>\\boxed{5}", "5"),
        ("<think>a</think> 6 </think> The answer is 7.", "7"),  # after the last </think>
        ("<think>so \\boxed{4}</think>", "4"),  # nothing after it: the whole text, as before
        ("<think>the answer is 4</think>", "4"),
        ("<think>so 4</think>I am not sure.", "4"),
        ("<think>cut off, so \\boxed{4}", "4"),  # no </think>: as before
        ("The answer is 3.5. So 9", "3.5"),  # a decimal point is no full stop
        ("The answer is $\\frac{1}{2}$. Then 7.", "\\frac{1}{2}"),
        ("The answer is \\(\\frac{1}{2}\\). Then 7.", "\\frac{1}{2}"),
        ("So the final answer is \\boxed{12}. 13", "12"),  # the boxed rule comes first
        ("Final Answer: The final answer is $42$. I hope it is correct.", "42"),
        ("**Answer:** 42\n\nCheck 84", "42"),
        ("The answer is **42**.", "42"),
        ("The answer is 42, which is 6*7.", "42"),
        ("The answer is 7\\text{ apples}. 9", "7\\text{ apples}"),
        ("The answer is x = 5.", "x = 5"),
        ("the answer is \u22123.", "-3"),
        ("The answer is (1, 2). 3", "(1, 2)"),
        ("The answer is correct: 6*7 = 42.", "42"),  # no answer stated: the last number
        ("#### 5 and the answer is 6", "5"),  # GSM8K's #### first
        ("She pays 5 then 7, so 42.", "42"),
    ],
)
def test_extract_answer_think_and_phrase(text, expected):
    assert extract_answer(text) == expected


def test_extracted_phrase_answers_grade():
    assert is_equiv(extract_answer("The answer is $\\frac{1}{2}$."), "0.5")
    assert is_equiv(extract_answer("The answer is 7\\text{ apples}. 9"), "7")


def test_choice_letter_reads_after_think():
    from resetfp4.eval.grading import extract_choice_letter

    assert extract_choice_letter("<think>maybe (A), or \\boxed{B}</think> The answer is (C).") == "C"
    assert extract_choice_letter("<think>so the answer is B</think>") == "B"  # nothing after: all
    assert extract_choice_letter("<think>(A)</think>\n\\boxed{D}") == "D"
