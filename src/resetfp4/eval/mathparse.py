"""A small, safe parser from answer strings (plain or LaTeX math) to sympy expressions.

Model output is never handed to ``eval``/``sympify``/``parse_expr`` (they all run Python
``eval`` underneath). Instead this recursive-descent parser accepts a narrow grammar and
builds sympy objects directly:

    expr   := term (('+' | '-') term)*
    term   := unary (('*' | '/' | implicit) unary)*
    unary  := ('+' | '-') unary | power
    power  := atom ('^' unary)?
    atom   := number | symbol | '(' expr ')' | '{' expr '}' | \\frac{a}{b} | \\sqrt[n]{x}
              | \\pi | \\infty | function '(' expr ')'

Anything else raises :class:`MathParseError`. Sizes are bounded (input length, exponent
magnitude) so a hostile answer like ``9^9^9^9`` cannot stall the grader.
"""

from __future__ import annotations

import re

import sympy

MAX_INPUT_CHARS = 200  # answers longer than this are compared as strings only
MAX_EXPONENT = 200  # |numeric exponent| above this would make sympy build huge integers

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
_CONSTS = {"pi": sympy.pi, "infty": sympy.oo, "infinity": sympy.oo}
_MUL_CMDS = {"cdot", "times"}


class MathParseError(ValueError):
    """The string is outside the small grammar this parser accepts."""


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
            exp = self.unary()
            if exp.is_number and (not exp.is_finite or abs(complex(exp.evalf(5))) > MAX_EXPONENT):
                raise MathParseError("exponent too large to compare safely")
            return sympy.Pow(base, exp)
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
                return sympy.root(self.arg(), n)
            return sympy.sqrt(self.arg())
        if name in _CONSTS:
            return _CONSTS[name]
        if name in _FUNCS:
            return _FUNCS[name](self.power())
        raise MathParseError(f"unsupported LaTeX command \\{name}")

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
