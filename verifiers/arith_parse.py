"""The arithmetic checker's parser: equations in text, evaluated exactly.

Nothing is ever passed to `eval`/`exec`. The text is tokenised into numbers, the
operators `+ - * / x × · ÷ \\times \\cdot \\div`, parentheses and `=`; anything else
(letters, other symbols) splits the text into separate runs. Each side of an `=` is
parsed by a small recursive-descent parser over those tokens and evaluated with
`fractions.Fraction` (exact decimals, no float error). Sizes are bounded (number
literals, tokens per run, nesting depth), so no input can make it slow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

MAX_NUMBER_CHARS = 40


MAX_RUN_TOKENS = 256


MAX_DEPTH = 32


_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+")


_WORD = re.compile(r"[A-Za-z_]+")


_COMMAND = re.compile(r"\\[A-Za-z]+")


_BOXED = re.compile(r"\\boxed\s*\{")


_OPS = {"+": "+", "-": "-", "\u2212": "-", "*": "*", "\u00d7": "*", "\u00b7": "*", "\u22c5": "*",
        "/": "/", "\u00f7": "/"}


_COMMAND_OPS = {"\\times": "*", "\\cdot": "*", "\\div": "/"}


_COMMAND_SKIP = {"\\left", "\\right", "\\,", "\\;", "\\!"}


@dataclass(frozen=True)
class Tok:
    kind: str  # "num" | "op" | "(" | ")" | "=" | "break"
    text: str
    value: Fraction | None = None
    pos: int = 0  # character offset in the text


def tokenize(text: str) -> list[Tok]:
    """Arithmetic tokens of `text`; everything else becomes a `break` token."""
    toks: list[Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":  # equations on separate lines are separate claims
            toks.append(Tok("break", c, pos=i))
            i += 1
            continue
        if c.isspace() or c == "$":
            i += 1
            continue
        if c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            m = _NUMBER.match(text, i)
            assert m is not None
            lit = m.group(0)
            # a number glued to letters (x2, 3rd, a_1) is not a quantity we check; "3x4" is
            nxt = text[m.end()] if m.end() < n else ""
            glued = (i > 0 and (text[i - 1].isalpha() or text[i - 1] == "_")) or nxt == "_" or (
                nxt.isalpha() and nxt not in "xX")
            if len(lit) > MAX_NUMBER_CHARS or glued:
                toks.append(Tok("break", lit, pos=i))
            else:
                toks.append(Tok("num", lit, Fraction(lit.replace(",", "")), pos=i))
            i = m.end()
            continue
        if c == "\\":
            m = _COMMAND.match(text, i)
            if m is not None:
                cmd = m.group(0)
                if cmd in _COMMAND_OPS:
                    toks.append(Tok("op", _COMMAND_OPS[cmd], pos=i))
                elif cmd not in _COMMAND_SKIP:
                    toks.append(Tok("break", cmd, pos=i))
                i = m.end()
                continue
            if i + 1 < n and text[i + 1] in "()[],;!":  # \( \) \[ \] and spacing commands
                i += 2
                continue
            toks.append(Tok("break", c, pos=i))
            i += 1
            continue
        if c.isalpha() or c == "_":
            m = _WORD.match(text, i)
            word = m.group(0) if m is not None else c
            end = m.end() if m is not None else i + 1
            if word in ("x", "X") and toks and toks[-1].kind in ("num", ")"):
                j = end
                while j < n and text[j] in " \t":
                    j += 1
                if j < n and (text[j].isdigit() or text[j] == "(" or text[j] == "."):
                    toks.append(Tok("op", "*", pos=i))
                    i = end
                    continue
            toks.append(Tok("break", word, pos=i))
            i = end
            continue
        if c in _OPS:
            toks.append(Tok("op", _OPS[c], pos=i))
        elif c in "()":
            toks.append(Tok(c, c, pos=i))
        elif c == "=":
            while i + 1 < n and text[i + 1] == "=":  # "==" is "="
                i += 1
            toks.append(Tok("=", "=", pos=i))
        else:
            toks.append(Tok("break", c, pos=i))
        i += 1
    return toks


UNDEFINED = "undefined"  # a side that parses but divides by zero


class _Parser:
    """Recursive descent over tokens: expr := term (+|- term)*; term := unary (*|/ unary)*;
    unary := (+|-) unary | num | ( expr ). Returns None on anything else, UNDEFINED when
    it parses but divides by zero."""

    def __init__(self, toks: Sequence[Tok]) -> None:
        self.toks, self.i = toks, 0
        self.undefined = False

    def parse(self) -> Fraction | str | None:
        try:
            v = self._expr(0)
        except _Fail:
            return None
        if self.i != len(self.toks):
            return None
        return UNDEFINED if self.undefined else v

    def _peek(self) -> Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _expr(self, depth: int) -> Fraction:
        v = self._term(depth)
        while (t := self._peek()) is not None and t.kind == "op" and t.text in "+-":
            self.i += 1
            w = self._term(depth)
            v = v + w if t.text == "+" else v - w
        return v

    def _term(self, depth: int) -> Fraction:
        v = self._unary(depth)
        while (t := self._peek()) is not None and t.kind == "op" and t.text in "*/":
            self.i += 1
            w = self._unary(depth)
            if t.text == "*":
                v = v * w
            elif w == 0:
                self.undefined, v = True, Fraction(0)
            else:
                v = v / w
        return v

    def _unary(self, depth: int) -> Fraction:
        if depth > MAX_DEPTH:
            raise _Fail
        t = self._peek()
        if t is None:
            raise _Fail
        if t.kind == "op" and t.text in "+-":
            self.i += 1
            v = self._unary(depth + 1)
            return -v if t.text == "-" else v
        if t.kind == "num":
            self.i += 1
            assert t.value is not None
            return t.value
        if t.kind == "(":
            self.i += 1
            v = self._expr(depth + 1)
            close = self._peek()
            if close is None or close.kind != ")":
                raise _Fail
            self.i += 1
            return v
        raise _Fail


class _Fail(Exception):
    pass


def evaluate(toks: Sequence[Tok]) -> Fraction | str | None:
    """The exact value of an arithmetic expression's tokens, None if it is not one,
    UNDEFINED if it divides by zero."""
    if not toks or len(toks) > MAX_RUN_TOKENS:
        return None
    return _Parser(toks).parse()


def _decimals(lit: str) -> int:
    return len(lit.split(".", 1)[1]) if "." in lit else 0


def values_agree(a: Fraction, b: Fraction, b_toks: Sequence[Tok], a_toks: Sequence[Tok] = ()) -> bool:
    """a == b exactly, or one side is a decimal literal that rounds the other."""
    if a == b:
        return True
    for lit_toks, exact in ((b_toks, a), (a_toks, b)):
        if len(lit_toks) == 1 and lit_toks[0].kind == "num":
            d = _decimals(lit_toks[0].text)
            if d > 0 and abs(exact - lit_toks[0].value) <= Fraction(1, 2 * 10**d):  # type: ignore[operator]
                return True
    return False


@dataclass
class Equation:
    sides: list[str]
    values: list[Fraction]
    ok: bool
    end: int  # character offset just after the equation
    operands: tuple[Fraction, ...] = ()  # the number literals of the left side


def find_equations(text: str) -> list[Equation]:
    """Every checkable equation (chain) in `text`, in order (see the module doc)."""
    toks = tokenize(text)
    runs: list[tuple[Tok | None, list[Tok]]] = [(None, [])]  # (token before the run, run)
    for t in toks:
        if t.kind == "break":
            runs.append((t, []))
        else:
            runs[-1][1].append(t)
    eqs: list[Equation] = []
    for before, run in runs:
        if len(run) > MAX_RUN_TOKENS or not any(t.kind == "=" for t in run) or not any(t.kind == "op" for t in run):
            continue
        sides: list[list[Tok]] = [[]]
        for t in run:
            if t.kind == "=":
                sides.append([])
            else:
                sides[-1].append(t)
        vals = [_side_value(side, k, len(sides) - 1, before) for k, side in enumerate(sides)]
        for a, b in zip(vals, vals[1:]):
            if a is None or b is None:
                continue
            (va, ta), (vb, tb) = a, b
            defined = va is not UNDEFINED and vb is not UNDEFINED
            ok = defined and values_agree(va, vb, tb, ta)  # type: ignore[arg-type]
            end = tb[-1].pos + len(tb[-1].text)
            eqs.append(Equation(sides=[_show(ta), _show(tb)],
                                values=[v if v is not UNDEFINED else None for v in (va, vb)],  # type: ignore[misc]
                                ok=ok, end=end, operands=tuple(t.value for t in ta if t.kind == "num")))  # type: ignore[misc]
    return eqs


def _side_value(side: list[Tok], k: int, last: int, before: Tok | None):
    """(value, tokens) of one side of an equation chain, or None when it is not checkable.

    The first side may have text glued on its left (`Step 1 12 + 7`), the last side on its
    right (`19 20`): they are trimmed until the side parses, but never across an operator
    (`y * 3 + 4` and `7 + x` are about unknowns, not arithmetic). A first side that starts
    with an operator right after a word or a closing bracket (`a - 3`) is skipped too."""
    if not side:
        return None
    first = side[0]
    v = evaluate(side)
    if v is None and k == 0:
        for s in range(1, len(side)):
            if side[s - 1].kind == "op":
                break
            v = evaluate(side[s:])
            if v is not None:
                side = side[s:]
                break
    if v is None and k == last and k > 0:
        for e in range(len(side) - 1, 0, -1):
            if side[e].kind == "op":
                continue
            v = evaluate(side[:e])
            if v is not None:
                side = side[:e]
                break
    if v is None:
        return None
    if k == 0 and side[0].kind == "op":
        trimmed = side[0] is not first
        prev = before.text[-1] if before is not None else ""
        if trimmed or (prev != "" and (prev.isalnum() or prev in ")]}_^%'\"")):
            return None
    return v, side


def _show(toks: Sequence[Tok]) -> str:
    return " ".join(t.text for t in toks)


def numbers_in(text: str) -> set[Fraction]:
    """Every number literal of `text` (the problem's givens)."""
    return {t.value for t in tokenize(text) if t.kind == "num" and t.value is not None}
