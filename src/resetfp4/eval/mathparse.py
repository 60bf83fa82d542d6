"""A small, safe parser from answer strings (plain or LaTeX math) to sympy expressions.

Model output is never handed to ``eval``/``sympify``/``parse_expr`` (they all run Python
``eval`` underneath). Instead this recursive-descent parser accepts a narrow grammar and
builds sympy objects directly:

    expr   := term (('+' | '-') term)*
    term   := unary (('*' | '/' | implicit) unary)*
    unary  := ('+' | '-') unary | power
    power  := atom ('^' unary)?
    atom   := number | symbol | '(' expr ')' | '{' expr '}' | \\frac{a}{b} | \\sqrt[n]{x}
              | \\pi | \\infty | func
    func   := function ('^' arg)? ( '(' expr ')' | power )

A function's parenthesised argument is an atom, so a following ``^`` raises the function's
value: ``\\sin(x)^2`` and ``\\sin^2 x`` / ``\\sin^{2}(x)`` are (sin x)^2, while ``\\sin x^2``
is sin(x^2); ``\\sin^{-1}`` (and the other trig functions) is the inverse function.

Anything else raises :class:`MathParseError`. Sizes are bounded (input length, exponent
magnitude, and the size of the integers a numeric power would build, nested powers and
roots included) so a hostile answer like ``9^9^9^9`` or ``(((9^{199})^{199})^{199})^{199}``
cannot stall the grader: big-integer arithmetic runs in C and no timeout can stop it.
"""

from __future__ import annotations

import re

import sympy

MAX_INPUT_CHARS = 200  # answers longer than this are compared as strings only
MAX_EXPONENT = 200  # |numeric exponent| above this would make sympy build huge integers
# bits of the largest integer a power may build: bits(base) * |exponent|. Each power's base is
# already evaluated, so nested powers ((9^{199})^{199})... are bounded as they grow.
MAX_RESULT_BITS = 100_000

_TOKEN_RE = re.compile(
    r"\s*(?:"
    r"(?P<num>\d+\.\d*|\.\d+|\d+)"
    r"|(?P<cmd>\\[A-Za-z]+)"
    r"|(?P<name>[A-Za-z])"
    r"|(?P<op>[-+*/^(){}\[\]])"
    r")"
)

_FUNCS = {
    "sin": sympy.sin,
    "cos": sympy.cos,
    "tan": sympy.tan,
    "cot": sympy.cot,
    "sec": sympy.sec,
    "csc": sympy.csc,
    "ln": sympy.log,
    "log": sympy.log,
    "exp": sympy.exp,
    "arcsin": sympy.asin,
    "arccos": sympy.acos,
    "arctan": sympy.atan,
}
_INVERSE_TRIG = {
    "sin": sympy.asin,
    "cos": sympy.acos,
    "tan": sympy.atan,
    "cot": sympy.acot,
    "sec": sympy.asec,
    "csc": sympy.acsc,
}
_CONSTS = {"pi": sympy.pi, "infty": sympy.oo, "infinity": sympy.oo}
_MUL_CMDS = {"cdot", "times"}


class MathParseError(ValueError):
    """The string is outside the small grammar this parser accepts."""


def _int_bits(e: sympy.Expr) -> int:
    """Bits of the largest numerator or denominator written in ``e`` (0 if none)."""
    return max((max(abs(int(r.p)).bit_length(), int(r.q).bit_length()) for r in e.atoms(sympy.Rational)),
               default=0)


def _pow(base: sympy.Expr, exp: sympy.Expr) -> sympy.Expr:
    """``base ** exp``, refused when sympy would build an integer too large to compare.

    A numeric exponent must be finite and at most ``MAX_EXPONENT`` in magnitude, and
    ``bits(base) * |exp|`` at most ``MAX_RESULT_BITS``: sympy evaluates ``(9^{199})^{199}``
    (and distributes ``(9^{199} x)^{199}``) at once, so the base already carries the size
    of any inner power.
    """
    if exp.is_number:
        if not exp.is_finite:
            raise MathParseError("exponent too large to compare safely")
        mag = abs(complex(exp.evalf(5)))
        if mag > MAX_EXPONENT or _int_bits(base) * mag > MAX_RESULT_BITS:
            raise MathParseError("power too large to compare safely")
    return sympy.Pow(base, exp)


def _tokenize(s: str) -> list[tuple[str, str]]:
    toks: list[tuple[str, str]] = []
    pos = 0
    s = s.strip()
    while pos < len(s):
        m = _TOKEN_RE.match(s, pos)
        if not m or m.end() == pos:
            raise MathParseError(f"unexpected character {s[pos]!r} at {pos}")
        kind = m.lastgroup
        assert kind is not None
        toks.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(s) and s[pos].isspace():
            pos += 1
    return toks


class _Parser:
    def __init__(self, toks: list[tuple[str, str]]) -> None:
        self.toks = toks
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise MathParseError(f"expected {value or 'a token'}, got {tok}")
        self.i += 1
        return tok

    def expr(self) -> sympy.Expr:
        out = self.term()
        while (tok := self.peek()) and tok[1] in "+-" and tok[0] == "op":
            self.take()
            rhs = self.term()
            out = out + rhs if tok[1] == "+" else out - rhs
        return out

    def _starts_atom(self, tok: tuple[str, str] | None) -> bool:
        if tok is None:
            return False
        kind, val = tok
        if kind in ("num", "name"):
            return True
        if kind == "cmd":
            return val[1:] not in _MUL_CMDS
        return val in "({["

    def term(self) -> sympy.Expr:
        out = self.unary()
        while True:
            tok = self.peek()
            if tok and (tok[1] in ("*", "/") or (tok[0] == "cmd" and tok[1][1:] in _MUL_CMDS)):
                self.take()
                rhs = self.unary()
                out = out / rhs if tok[1] == "/" else out * rhs
            elif self._starts_atom(tok):  # implicit multiplication: 2x, 3\sqrt{2}, (a)(b)
                out = out * self.power()
            else:
                return out

    def unary(self) -> sympy.Expr:
        tok = self.peek()
        if tok and tok[0] == "op" and tok[1] in "+-":
            self.take()
            val = self.unary()
            return -val if tok[1] == "-" else val
        return self.power()

    def power(self) -> sympy.Expr:
        base = self.atom()
        tok = self.peek()
        if tok and tok[1] == "^":
            self.take()
            return _pow(base, self.unary())
        return base

    def group(self) -> sympy.Expr:
        self.take("{")
        val = self.expr()
        self.take("}")
        return val

    def arg(self) -> sympy.Expr:
        """A LaTeX argument: ``{...}`` or a single digit/letter (``\\frac12``)."""
        tok = self.peek()
        if tok and tok[1] == "{":
            return self.group()
        if tok and tok[0] == "num":
            self.take()
            # \frac12 means \frac{1}{2}: only the first digit belongs to this argument
            digits = tok[1]
            if len(digits) > 1 and digits.isdigit():
                self.toks.insert(self.i, ("num", digits[1:]))
                return sympy.Integer(digits[0])
            return sympy.nsimplify(digits, rational=True)
        return self.atom()

    def command(self, name: str) -> sympy.Expr:
        if name in ("frac", "dfrac", "tfrac"):
            num = self.arg()
            return num / self.arg()
        if name == "sqrt":
            if self.peek() and self.peek()[1] == "[":
                self.take("[")
                n = self.expr()
                self.take("]")
                radicand = self.arg()
                if n == 0:
                    raise MathParseError("zeroth root")
                return _pow(radicand, 1 / n)  # \\sqrt[0.001]{x} is x^1000: bounded like a power
            return sympy.sqrt(self.arg())
        if name in _CONSTS:
            return _CONSTS[name]
        if name in _FUNCS:
            return self.function(name)
        raise MathParseError(f"unsupported LaTeX command \\{name}")

    def function(self, name: str) -> sympy.Expr:
        """``\\sin(x)``, ``\\sin x``, ``\\sin^2 x``, ``\\sin^{2}(x)``, ``\\sin^{-1} x``.

        A parenthesised argument ends the function (``\\sin(x)^2`` is (sin x)^2: the caller's
        :meth:`power` applies the ``^``); an unparenthesised one is a power (``\\sin x^2``
        is sin(x^2)). ``\\sin^n`` raises the value to ``n``, except that ``^{-1}`` on a trig
        function is its inverse.
        """
        func = _FUNCS[name]
        exp = None
        if (tok := self.peek()) and tok == ("op", "^"):
            self.take()
            exp = self.arg()
            if exp == -1 and name in _INVERSE_TRIG:
                func, exp = _INVERSE_TRIG[name], None
        if (tok := self.peek()) and tok == ("op", "("):
            value = func(self.atom())
        else:
            value = func(self.power())
        return value if exp is None else _pow(value, exp)

    def atom(self) -> sympy.Expr:
        kind, val = self.take()
        if kind == "num":
            return sympy.nsimplify(val, rational=True) if "." in val else sympy.Integer(val)
        if kind == "name":
            return sympy.Symbol(val)
        if kind == "cmd":
            return self.command(val[1:])
        if val in "([":
            inner = self.expr()
            self.take(")" if val == "(" else "]")
            return inner
        if val == "{":
            inner = self.expr()
            self.take("}")
            return inner
        raise MathParseError(f"unexpected {val!r}")


def parse_math(s: str) -> sympy.Expr:
    """Parse ``s`` (e.g. ``"\\frac{3}{4}"``, ``"2\\sqrt{3}"``, ``"x^2+1"``) to sympy.

    Raises :class:`MathParseError` for anything outside the grammar or too large.
    """
    if len(s) > MAX_INPUT_CHARS:
        raise MathParseError(f"answer longer than {MAX_INPUT_CHARS} characters")
    # function names written without a backslash (sin, log, sqrt) become commands
    s = re.sub(r"(?<![\\A-Za-z])(sqrt|sin|cos|tan|ln|log|exp|pi)(?![A-Za-z])", r"\\\1", s)
    parser = _Parser(_tokenize(s))
    if not parser.toks:
        raise MathParseError("empty expression")
    out = parser.expr()
    if parser.peek() is not None:
        raise MathParseError(f"trailing input at token {parser.peek()}")
    return out
