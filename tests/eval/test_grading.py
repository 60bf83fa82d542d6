"""Answer extraction, normalisation and equivalence: one test per form."""

from __future__ import annotations

import pytest

from resetfp4.eval.grading import extract_answer, extract_choice_letter, is_equiv, normalize_answer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{\\frac{a}{b^{2}}} done", "\\frac{a}{b^{2}}"),  # nested braces
        (
            "\\boxed{1} then finally \\boxed{\\left(3, \\frac{\\pi}{2}\\right)}",
            "\\left(3, \\frac{\\pi}{2}\\right)",
        ),
        ("work\n#### 1,234", "1,234"),  # GSM8K style
        ("She pays 5 then 7, so 42.", "42"),  # last number
        ("it is \u22123 degrees", "-3"),  # unicode minus
        ("no number at all", None),
        ("cut inside \\boxed{\\frac{1}{", "1"),  # unbalanced box: falls back to the last number
        ("\\boxed 5 and then {x}", "5"),  # no-brace form: a later "{" is not its argument
        ("\\boxed {7}", "7"),  # whitespace before the brace is fine
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("\\tfrac{3}{4}", "\\frac{3}{4}"),
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("\\text{yes}", "yes"),
        ("5\\text{ cm}", "5"),
        ("18 dollars", "18"),
        ("\\$18", "18"),
        ("$x$", "x"),
        ("50\\%", "50"),
        ("25%", "25"),
        ("1,000,000", "1000000"),
        ("1{,}000", "1000"),
        ("\u22127", "-7"),
        ("90^\\circ", "90"),
        ("x = 5", "5"),
        ("18.00", "18"),
        (".5", "0.5"),
        ("12.", "12"),
    ],
)
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("18", "18"),
        ("18.0", "18"),  # number
        ("18", "18.0"),
        ("0.5", "1/2"),  # exact decimal vs a/b
        ("0.3333", "\\frac{1}{3}"),  # rounded decimal: within the relative tolerance
        ("2^{20}", "1048576"),  # exact symbolic value
        ("10.00001", "10"),  # within the relative tolerance
        ("0.5", "\\frac{1}{2}"),  # fraction vs decimal
        ("1/2", "\\dfrac12"),  # a/b vs short \frac
        ("-\\frac{3}{4}", "-0.75"),
        ("\\$1,234", "1234"),  # units and separators
        ("\u22125", "-5"),
        ("2\\sqrt{3}", "\\sqrt{12}"),  # symbolic
        ("x^2+2x+1", "(x+1)^2"),
        ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}"),
        ("\\frac{\\pi}{2}", "\\pi/2"),
        ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),  # tuple
        ("[2, 5)", "[2,5)"),  # interval
        ("(-\\infty, 0]", "(-\\infty,0]"),
        ("y = 3 + 2x", "y=2x+3"),  # equation
        ("50%", "50"),
    ],
)
def test_is_equiv_true(pred, gold):
    assert is_equiv(pred, gold)


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("17", "18"),
        ("10001", "10000"),  # integers compare exactly, no relative tolerance
        ("123457", "123456"),
        ("\\frac{10001}{3}", "\\frac{10000}{3}"),  # exact fractions too
        ("2^{20}", "1048577"),  # exact expressions: no 1e-4 tolerance through sympy either
        ("0.33", "\\frac{1}{3}"),  # outside the tolerance
        ("[2,5)", "(2,5)"),  # interval ends differ
        ("(1,2)", "(2,1)"),  # tuples are ordered
        ("(1,2)", "(1,2,3)"),
        ("x^2", "x^3"),
        (None, "5"),
        ("", "5"),
        ("9^9^9^9", "1"),  # too large to evaluate: not equal, and returns fast
    ],
)
def test_is_equiv_false(pred, gold):
    assert not is_equiv(pred, gold)


def test_is_equiv_never_executes_model_output(tmp_path):
    marker = tmp_path / "pwned"
    evil = f"__import__('pathlib').Path('{marker}').touch()"
    assert not is_equiv(evil, "0")
    assert not marker.exists()


@pytest.mark.parametrize(
    "text, letter",
    [
        ("... so \\boxed{C}", "C"),
        ("\\boxed{(B)}", "B"),
        ("\\boxed{\\text{D}}", "D"),
        ("I think the answer is (A).", "A"),
        ("Answer: D", "D"),
        ("compare (A) and (B); clearly (C) works", "C"),
        ("the answer is a number", None),  # lowercase 'a' is not a choice
        ("\\boxed{E}", None),  # only A-D with 4 choices
        ("", None),
    ],
)
def test_extract_choice_letter(text, letter):
    assert extract_choice_letter(text, n_choices=4) == letter


@pytest.mark.parametrize(
    "pred, gold, want",
    [
        ("1" + "1" * 400, "4.5", False),  # a 401-digit number against a decimal: no float overflow
        ("-2, 1", "1,-2", True),  # a bare list (the solutions) in any order
        ("1, 1, 2", "1, 2, 2", False),  # ... as a multiset
        ("(1,2)", "(2,1)", False),  # a tuple keeps its order
        ("\\frac{9}{5}", "1\\frac{4}{5}", True),  # a mixed number
        ("1.8", "1\\dfrac{4}{5}", True),
        ("\\frac{4}{5}", "1\\frac{4}{5}", False),
        ("68.5", "137 \\frac{1}{2}", False),
        ("\\sqrt{2}\\text{ cm}", "\\sqrt{2}", True),  # a unit after a non-number
        ("4\\pi \\text{ cm}^2", "4\\pi", True),
        ("\\frac{68}{3}", "\\frac{68}{3}\\text{ pounds}", True),
        ("5 \\text{ m/s}", "5", True),
        ("18~\\text{dollars}", "18", True),
        ("5 r^5", "5r^5", True),  # a single letter is no unit
        ("2 x", "2", False),
    ],
)
def test_review_cases_session_18(pred, gold, want):
    assert is_equiv(pred, gold) is want


def test_a_grading_error_counts_as_wrong_and_does_not_stop_the_run(monkeypatch, capsys):
    from resetfp4.eval import runner
    from resetfp4.eval.datasets import Problem

    def boom(pred, gold):
        raise OverflowError("int too large to convert to float")

    monkeypatch.setattr(runner, "is_equiv", boom)
    p = Problem(id="p-overflow", question="q", answer="4.5")
    assert runner.grade(p, "so \\boxed{12}") == ("12", False)
    assert "grading problem p-overflow failed (OverflowError" in capsys.readouterr().err


@pytest.mark.parametrize("pred, gold, want", [("52_{8}", "52_8", True), ("4210_5", "4210_{5}", True),
                                              ("528", "52_8", False), ("52_8", "52_9", False)])
def test_base_subscripts(pred, gold, want):
    assert is_equiv(pred, gold) is want


@pytest.mark.parametrize(
    "pred, gold, want",
    [
        # matrices and vectors (MATH precalculus answers), entries compared one by one
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True),
        ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
         "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", True),
        ("\\begin{pmatrix} 0.5 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}\\frac12\\\\2\\end{pmatrix}", True),
        ("\\begin{bmatrix} -1/2 \\\\ \\sqrt{3} \\end{bmatrix}",
         "\\begin{pmatrix} -\\frac{1}{2} \\\\ \\sqrt{3} \\end{pmatrix}", True),
        ("\\begin{pmatrix} 1 \\\\ 2 \\\\ \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True),
        ("\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", False),
        ("\\begin{pmatrix} 1 & 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", False),  # shape
        ("\\begin{vmatrix} 1 & 2 \\\\ 3 & 4 \\end{vmatrix}",
         "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", False),  # a determinant is no matrix
        ("(1,2)", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", False),
        # a constant command before a letter: "\pi r" is pi times r, not "\pir"
        ("2\\pi r^2", "2\\pi r^{2}", True),
        ("\\pi r^2", "r^2\\pi", True),
        ("\\pi r^2", "\\pi r^3", False),
        # decimals: no more tolerance than the written digits explain
        ("1234567.8", "1234567.9", False),
        ("56000.5", "56000", False),
        ("3.1416", "3.14159", True),
        # infinities compare exactly (N(-oo - oo) looked "close" before)
        ("-\\infty", "\\infty", False),
        ("-\\infty", "-\\infty", True),
    ],
)
def test_review_cases_session_19(pred, gold, want):
    assert is_equiv(pred, gold) is want
