"""Answer extraction and equivalence for math and multiple-choice answers.

Pipeline: :func:`extract_answer` pulls the final answer out of a generation (after the
last ``</think>`` when there is one: last ``\\boxed{...}``, else ``#### N``, else the last
"answer is X" / "Answer: X", else the last number); :func:`normalize_answer`
canonicalises LaTeX and formatting; :func:`is_equiv` then decides equality by, in order,
string identity, exact numeric value (integers and fractions; a relative tolerance only when
one side is written as a decimal), tuple/interval element-wise comparison, and sympy symbolic
equality under a timeout. Model output is never executed: expressions go through
:mod:`resetfp4.eval.mathparse`, not ``eval``.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable
from fractions import Fraction
from typing import TypeVar

import sympy

from resetfp4.eval.mathparse import MathParseError, parse_math

REL_TOL = 1e-4  # relative tolerance, only when a side is a decimal (rounded 0.3333 vs 1/3 passes)
ABS_TOL = 1e-9  # absolute floor so that 0 vs 1e-12 compares equal (decimals only)
# relative tolerance for sympy's 30-digit numeric check of two exact (decimal-free) expressions:
# truly equal values differ by ~1e-29 there, so this only absorbs a failed `simplify`
EXACT_REL_TOL = 1e-12
SYMPY_TIMEOUT_S = 2.0  # wall-clock budget for one symbolic comparison (parsing included)
_TIMEOUT_REPEAT_S = 0.05  # after the first alarm, again this often until the call ends

_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_BOXED_CMDS = ("\\boxed", "\\fbox")
_BOXED_BRACE_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")  # brace form: only whitespace before "{"


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}``, nested braces honoured."""
    start = max(text.rfind(cmd) for cmd in _BOXED_CMDS)
    if start < 0:
        return None
    brace = _BOXED_BRACE_RE.match(text, start)
    if brace is None:
        # "\boxed 5" (no braces) takes the following token
        m = re.match(r"\\(?:boxed|fbox)\s+([^\s$]+)", text[start:])
        return m.group(1) if m else None
    i = brace.end() - 1
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None  # unbalanced: the generation was cut inside the box


_THINK_END = "</think>"
# "the answer is X", "The final answer is: X", "Answer: X", "**Answer:** X", "**Final Answer**: X"
_ANSWER_PHRASE_RE = re.compile(r"(?i)\banswer\b\**\s*(?:is\b\s*:?|:)[\s*]*")
# an English word of three letters or more ends the answer ("42 because ..."), outside braces
# (not "7\text{ apples}"); function names do not. At the start it means no answer: "the answer
# is correct", "the answer is therefore 12" (the last number then decides)
_ANSWER_WORD_END_RE = re.compile(
    r"(?:^|\s)(?!(?:sin|cos|tan|cot|sec|csc|log|exp|sqrt|arcsin|arccos|arctan)\b)[A-Za-z]{3,}\b"
)
# the end of a sentence: a full stop (not a decimal point), "!", "?", ";" or a line break
_SENTENCE_END_RE = re.compile(r"\.(?=\s|$)|[!?;\n]")
_MATH_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def _phrase_answer(text: str) -> str | None:
    """X in the last "answer is X" / "Answer: X" phrase that states a mathematical answer.

    X is the ``$...$`` (``\\(...\\)``, ``\\[...\\]``) right after the phrase, else the
    rest of the sentence up to an English word ("42 because ..."), without trailing
    punctuation or markdown ``**``. A phrase whose X has neither a digit nor a LaTeX command
    (nor math delimiters), as in "the answer is correct", is skipped.
    """
    for m in reversed(list(_ANSWER_PHRASE_RE.finditer(text))):
        rest = text[m.end():]
        ans, delimited = None, False
        for open_, close in _MATH_DELIMS:
            if rest.startswith(open_):
                end = rest.find(close, len(open_))
                if end > 0:
                    ans, delimited = rest[len(open_):end], True
                break
        if ans is None:
            stop = _SENTENCE_END_RE.search(rest)
            ans = rest[: stop.start()] if stop else rest
            for word in _ANSWER_WORD_END_RE.finditer(ans):
                head = ans[: word.start()]
                if head.count("{") == head.count("}"):
                    ans = head
                    break
            ans = ans.strip().rstrip(".,:*").strip().strip("$").strip()
        ans = ans.strip()
        if ans and (delimited or "\\" in ans or re.search(r"\d", ans)):
            return ans
    return None


def _extract_final(text: str) -> str | None:
    """:func:`extract_answer` on text without a ``</think>`` split."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    text = text.replace("\u2212", "-")
    hashes = re.findall(r"####\s*(" + _NUMBER_RE.pattern + r")", text)
    if hashes:
        return hashes[-1].rstrip(".")
    phrase = _phrase_answer(text)
    if phrase is not None:
        return phrase
    nums = _NUMBER_RE.findall(text)
    return nums[-1].rstrip(",") if nums else None


def extract_answer(text: str) -> str | None:
    """The final answer in a generation, or ``None`` if there is none.

    When the text contains ``</think>``, only the part after the last one is read (the
    reasoning before it is a draft); if that part holds no answer at all (a generation cut
    or closed oddly), the whole text is. Order: the last ``\\boxed{...}`` (nested braces
    kept); else the number after the last ``#### ``; else X in the last "answer is X" /
    "Answer: X" phrase (:func:`_phrase_answer`); else the last number in the text
    (thousands separators kept, they are removed by :func:`normalize_answer`).
    """
    if not text:
        return None
    return _after_think(text, _extract_final)


def _after_think(text: str, extract: Callable[[str], str | None]) -> str | None:
    """``extract`` of the text after the last ``</think>`` when there is one and it holds an
    answer, else of the whole text (the tags as line breaks: "is 4</think>" ends at the tag)."""
    if _THINK_END in text:
        ans = extract(text[text.rfind(_THINK_END) + len(_THINK_END):])
        if ans is not None:
            return ans
        text = text.replace(_THINK_END, "\n")
    return extract(text)


def _strip_text_cmds(s: str) -> str:
    """``\\text{abc}`` -> ``abc`` (also ``\\textbf``, ``\\mbox``, ``\\mathrm``)."""
    pat = re.compile(r"\\(?:text|textbf|textit|mbox|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")
    prev = None
    while prev != s:
        prev, s = s, pat.sub(r"\1", s)
    return s


def _strip_units(s: str) -> str:
    """Drop unit words after a number: ``"18 dollars"``, ``"5\\text{ cm}^2"`` -> number."""
    s = re.sub(r"(\d)\s*\\(?:text|mbox|mathrm)\{\s*[A-Za-z][A-Za-z .]*\}(\^\{?\d\}?)?\s*$", r"\1", s)
    # a unit word (two letters or more; "/" and "'" allowed: m/s, dollars/hour) in \text{}
    # after any expression: "\sqrt{2}\text{ cm}", "4\pi \text{ cm}^2"
    s = re.sub(r"(\S)\s*\\(?:text|mbox|mathrm)\{\s*[A-Za-z][A-Za-z .'/]*[A-Za-z]\s*\}(\^\{?\d\}?)?\s*$",
               r"\1", s)
    # a bare unit word after a number: at least two letters, so "2 x" or "5 r^5" stay whole
    m = re.match(r"^([-+]?[\d.,/]*\d)\s+[A-Za-z]{2}[A-Za-z .]*(\^\{?\d\}?)?$", s)
    return m.group(1) if m else s


_FUNC_SPACE_RE = re.compile(
    r"((?<![A-Za-z])\\?(?:arcsin|arccos|arctan|sin|cos|tan|cot|sec|csc|ln|log|exp))\s+(?=[A-Za-z])"
)


def normalize_answer(ans: str) -> str:
    """Canonical string form of an answer (LaTeX and formatting noise removed).

    Handles ``\\dfrac``/``\\tfrac``, ``\\left``/``\\right``, ``\\text{}``, units, ``$``,
    ``%``, degrees, thousands separators (``1,000`` and ``1{,}000``), the unicode
    minus, spacing commands, a leading ``x =``, and trailing full stops.
    """
    s = ans.strip().replace("\u2212", "-").replace("\u2013", "-")
    if "matrix}" in s:  # matrix rows end with "\\": keep them apart from "\ " spacing
        s = s.replace("\\\\", "\\cr ")
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\:", "")
    s = s.replace("\\ ", " ").replace("{,}", ",")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("~", " ")
    # a whole answer that is a mixed number, 1\frac{4}{5} = 9/5 (not 1 x 4/5)
    m = re.fullmatch(r"\s*(-?)(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}\s*", s)
    if m and int(m.group(4)) > 0:
        whole, num, den = int(m.group(2)), int(m.group(3)), int(m.group(4))
        s = f"{m.group(1)}{whole * den + num}/{den}"
    s = re.sub(r"\\left\s*|\\right\s*", "", s)
    s = s.replace("\\displaystyle", "")
    s = _strip_units(s)
    s = _strip_text_cmds(s)
    s = re.sub(r"\^\s*\{?\\circ\}?|°", "", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = s.strip().rstrip(".").strip()
    s = _strip_units(s)
    # a single "x = 5" / "k=3": keep the right-hand side
    m = re.match(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(.+)$", s)
    if m and "=" not in m.group(1):
        s = m.group(1)
    if _THOUSANDS_RE.match(s.replace(" ", "")):
        s = s.replace(",", "").replace(" ", "")
    # a constant command before a letter keeps its boundary: "2\pi r" is not "2\pir"
    s = re.sub(r"\\(pi|infty)\s+(?=[A-Za-z])", r"\\\1*", s)
    # ... and so does a function before its argument: "\sin x" is not "\sinx" (one space kept)
    s = _FUNC_SPACE_RE.sub(lambda m: m.group(1) + "\x00", s)
    s = re.sub(r"\s+", "", s).replace("\x00", " ")
    s = re.sub(r"_\{(\d+)\}", r"_\1", s)  # a base subscript: 52_{8} = 52_8
    s = re.sub(r"^\+", "", s)
    if re.fullmatch(r"-?\d+\.\d*?0+", s) or re.fullmatch(r"-?\d+\.", s):
        s = s.rstrip("0").rstrip(".")  # 18.00 -> 18
    if s.startswith("."):
        s = "0" + s
    return s


def _to_fraction(s: str) -> Fraction | None:
    """Exact value of a plain number, ``a/b`` or ``\\frac{a}{b}``; ``None`` otherwise."""
    s = s.replace(" ", "")
    if "_" in s:  # Fraction("52_8") would read 528: a subscript is no digit separator here
        return None
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}", s)
    if m:
        s = f"{m.group(1)}{m.group(2)}/{m.group(3)}"
    m = re.fullmatch(r"(-?)\\frac(\d)(\d)", s)
    if m:
        s = f"{m.group(1)}{m.group(2)}/{m.group(3)}"
    try:
        if s.startswith("-") and "/" in s and s[1:].startswith("-"):
            return None
        neg = s.startswith("-") and "/" in s
        frac = Fraction(s[1:] if neg else s)
    except (ValueError, ZeroDivisionError):
        return None
    return -frac if neg else frac


def _has_decimal(s: str) -> bool:
    """Whether a normalised answer writes a number with a decimal point (``0.3333``)."""
    return "." in s


def _decimal_places(s: str) -> int | None:
    """Digits after the decimal point of a normalised plain number (``"0.3333"`` -> 4);
    ``None`` when it is not written as a decimal."""
    m = re.fullmatch(r"-?\d*\.(\d+)", s)
    return len(m.group(1)) if m else None


def _numbers_close(a: Fraction, b: Fraction, sa: str, sb: str) -> bool:
    """``a == b`` exactly, unless a side is written as a decimal (``sa``/``sb``: the
    normalised strings). Then they may differ by ``REL_TOL`` relative (``ABS_TOL`` at least),
    but never by more than the decimals can explain: one unit in the last place of the
    decimal side against an exact value (``"0.3333"`` is 1/3, ``"10.00001"`` is 10, but
    ``"56000.5"`` is not 56000), half a unit of the coarser side when both are decimals
    (``"3.1416"`` is ``"3.14159"``, ``"1234567.8"`` is not ``"1234567.9"``)."""
    if a == b:
        return True
    da, db = _decimal_places(sa), _decimal_places(sb)
    if da is None and db is None:
        return False
    if da is not None and db is not None:
        cap = Fraction(1, 2 * 10 ** min(da, db))
    else:
        cap = Fraction(1, 10 ** (da if da is not None else db))
    # in exact arithmetic: float() of a 400-digit number would overflow
    tol = min(Fraction(REL_TOL) * max(abs(a), abs(b)), cap)
    return abs(a - b) <= max(tol, Fraction(ABS_TOL))


def _split_top_level(s: str) -> list[str]:
    """Split on commas not nested in brackets/braces."""
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _as_sequence(s: str) -> tuple[str, list[str], str] | None:
    """``(a,b)`` / ``[a,b)`` / ``a,b`` -> (open, items, close); ``None`` if not a sequence."""
    open_, close = "", ""
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        inner = s[1:-1]
        if _balanced(inner):
            open_, close, s = s[0], s[-1], inner
    items = _split_top_level(s)
    if len(items) < 2:
        return None
    return open_, items, close


_MATRIX_RE = re.compile(r"\\begin\{([pbBvV]?matrix)\}(.*)\\end\{\1\}", re.DOTALL)


def _as_matrix(s: str) -> tuple[str, list[list[str]]] | None:
    """A normalised ``\\begin{pmatrix} a & b \\\\ c & d \\end{pmatrix}`` -> (kind, rows);
    ``None`` if ``s`` is not one matrix. pmatrix / bmatrix / matrix are one kind (the
    value), vmatrix / Vmatrix another (a determinant, a norm)."""
    m = _MATRIX_RE.fullmatch(s)
    if not m:
        return None
    rows = [r for r in m.group(2).split("\\cr")]
    while rows and not rows[-1].strip():
        rows.pop()
    kind = "v" if m.group(1)[:1] in "vV" else "m"
    return kind, [r.split("&") for r in rows]


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth < 0:
            return False
    return depth == 0


T = TypeVar("T")


def run_with_timeout(fn: Callable[[], T], seconds: float) -> T | None:
    """``fn()`` or ``None`` if it takes longer than ``seconds``.

    Uses ``SIGALRM`` (POSIX, main thread only). Elsewhere the call is skipped and ``None``
    returned, because a runaway sympy call in a thread cannot be stopped. The alarm repeats
    every ``_TIMEOUT_REPEAT_S`` after the first, so code that swallows one ``TimeoutError``
    (a broad ``except Exception`` inside sympy) is still stopped; an alarm that lands while
    the timer is being cleared is caught too. A signal only interrupts Python code: a single
    C-level big-integer operation runs to its end, which is why :mod:`resetfp4.eval.mathparse`
    bounds the numbers it builds.
    """
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        return None

    def _raise(signum: int, frame: object) -> None:
        raise TimeoutError

    old = signal.signal(signal.SIGALRM, _raise)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, seconds, _TIMEOUT_REPEAT_S)
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except TimeoutError:
        return None
    finally:
        signal.signal(signal.SIGALRM, old)


def _symbolic_equal(a: str, b: str, timeout_s: float) -> bool:
    """sympy equality; a constant difference passes within ``REL_TOL`` when a side has a
    decimal, else within ``EXACT_REL_TOL``."""
    rel_tol = REL_TOL if _has_decimal(a) or _has_decimal(b) else EXACT_REL_TOL

    def check() -> bool:
        # parsing is inside the timeout too: sympy evaluates while it builds the expressions
        try:
            ea, eb = parse_math(a), parse_math(b)
        except (MathParseError, TypeError, ValueError, ZeroDivisionError, RecursionError):
            return False
        infinite = (sympy.oo, -sympy.oo, sympy.zoo, sympy.nan)
        if any(e.has(*infinite) for e in (ea, eb)):  # oo - oo is nan, -oo vs oo is "close" in N()
            return bool(ea == eb)
        diff = sympy.simplify(ea - eb)
        if diff == 0:
            return True
        if not diff.free_symbols:
            val = complex(sympy.N(diff, 30))
            scale = max(1.0, abs(complex(sympy.N(eb, 30))))
            return abs(val) <= rel_tol * scale
        return False

    try:
        return bool(run_with_timeout(check, timeout_s))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, RecursionError, AttributeError):
        return False


def is_equiv(pred: str | None, gold: str, *, timeout_s: float = SYMPY_TIMEOUT_S) -> bool:
    """Whether the predicted answer equals the gold answer.

    ``pred``/``gold``: raw answer strings (e.g. from :func:`extract_answer`). Both are
    normalised; then plain numbers and fractions compare exactly (``"10001"`` is not
    ``"10000"``, ``"18.0"`` is ``"18"``, ``"0.5"`` is ``"1/2"``), except that when either
    side is written as a decimal they may differ by ``REL_TOL`` (``"0.3333"`` is ``"1/3"``)
    but by no more than its digits explain (:func:`_numbers_close`); matrices compare entry
    by entry (same kind and shape), tuples and intervals element-wise (bracket types must
    match), equations side by side, and other expressions through sympy
    (``simplify(a - b) == 0``, or a constant difference within ``REL_TOL`` with a decimal
    side, ``EXACT_REL_TOL`` without) when both parse, within ``timeout_s`` seconds.
    """
    if pred is None or gold is None:
        return False
    a, b = normalize_answer(pred), normalize_answer(gold)
    if not a or not b:
        return False
    if a == b:
        return True
    ma, mb = _as_matrix(a), _as_matrix(b)
    if ma is not None or mb is not None:  # same kind and shape, entries compared one by one
        if ma is None or mb is None or ma[0] != mb[0]:
            return False
        ra, rb = ma[1], mb[1]
        if [len(r) for r in ra] != [len(r) for r in rb]:
            return False
        return all(is_equiv(x, y, timeout_s=timeout_s)
                   for r, q in zip(ra, rb, strict=True) for x, y in zip(r, q, strict=True))
    fa, fb = _to_fraction(a), _to_fraction(b)
    if fa is not None and fb is not None:
        return _numbers_close(fa, fb, a, b)
    sa, sb = _as_sequence(a), _as_sequence(b)
    if sa is not None or sb is not None:
        if sa is None or sb is None:
            return False
        (oa, ia, ca), (ob, ib, cb) = sa, sb
        if (oa, ca) != (ob, cb) or len(ia) != len(ib):
            return False
        if not oa:  # a bare list ("1, -2": the solutions) is a multiset: any order
            left = list(ib)
            for x in ia:
                hit = next((k for k, y in enumerate(left) if is_equiv(x, y, timeout_s=timeout_s)), None)
                if hit is None:
                    return False
                left.pop(hit)
            return True
        return all(is_equiv(x, y, timeout_s=timeout_s) for x, y in zip(ia, ib, strict=True))
    if a.count("=") == 1 and b.count("=") == 1:
        (la, ra), (lb, rb) = a.split("="), b.split("=")
        return is_equiv(la, lb, timeout_s=timeout_s) and is_equiv(ra, rb, timeout_s=timeout_s)
    return _symbolic_equal(a, b, timeout_s)


_LETTERS = "ABCDEFGHIJ"


def extract_choice_letter(text: str, n_choices: int = 4) -> str | None:
    """The multiple-choice letter a generation settles on, or ``None``.

    Looks, in order, at the last ``\\boxed{}`` (``B``, ``(B)``, ``\\text{B}``), then the
    last "answer is (B)" / "Answer: B" phrase, then the last standalone ``(B)``.
    Only letters among the first ``n_choices`` count. As in :func:`extract_answer`, only the
    text after the last ``</think>`` is read when it holds a letter.
    """
    if not text:
        return None
    return _after_think(text, lambda t: _choice_letter(t, n_choices))


def _choice_letter(text: str, n_choices: int) -> str | None:
    """:func:`extract_choice_letter` on text without a ``</think>`` split."""
    valid = _LETTERS[:n_choices]
    letter_re = rf"\(?([{valid}])\)?"
    boxed = last_boxed(text)
    if boxed is not None:
        m = re.fullmatch(r"\s*" + letter_re + r"[.:]?\s*", _strip_text_cmds(boxed))
        if m:
            return m.group(1)
    phrases = re.findall(
        rf"(?i:answer|choice|option)\s*(?:is|:)?\s*[:\s]*\**\s*\(?([{valid}])\)?(?![A-Za-z])",
        text,
    )
    if phrases:
        return phrases[-1]
    standalone = re.findall(rf"\(([{valid}])\)", text)
    return standalone[-1] if standalone else None
