"""Arithmetic step checker: a process scorer that checks the equations a step writes.

For the synthetic arithmetic task (and any solution that writes its arithmetic out):
every equation in a step (`12 + 7 = 19`, `3 x 4 = 12`, `(2.5 + 0.5) * 2 = 6 = 6`) is
evaluated exactly and compared. No model, no reference answer: it checks the *claims*
the solution makes, which is what a process reward model is meant to judge, and it is
the one verifier on the offline default that really checks something.

Scores of a step (configurable):

- `wrong_score` (0.0): some equation in the step is false;
- `right_score` (1.0): the step has equations and all of them hold;
- `neutral_score` (0.5): the step writes no checkable equation;
- `ungrounded_score` (0.1, `null` to disable): every equation holds, but one uses an
  operand that is neither a number of the problem's text nor a value an earlier
  equation of the path produced (`20 + 5 = 25` for "Leo has 10 stamps ... gives him 5").
  True arithmetic about numbers that came from nowhere is a wrong step of a solution;
  this is what makes the checker a useful guide on word problems, where a small model's
  equations are mostly right but about the wrong numbers. It reads the problem's text,
  never its answer;
- `boxed_mismatch_score` (0.25, `null` to disable): the step boxes a number
  (`\\boxed{18}`) that differs from the result of the last equation written before it on
  the path — a copying slip between the computation and the final answer. It is only
  suspicious, not proof (the last equation may be an intermediate result), hence not 0.
  A boxed value that agrees with the last equation counts as a checked claim (right).

Safety: nothing is ever passed to `eval`/`exec`. The text is tokenised into numbers,
the operators `+ - * / x × · ÷ \\times \\cdot \\div`, parentheses and `=`; anything else
(letters, other symbols) splits the text into separate runs. Each side of an `=` is
parsed by a small recursive-descent parser over those tokens and evaluated with
`fractions.Fraction` (exact decimals, no float error). Sizes are bounded (number
literals, tokens per run, nesting depth), so no input can make it slow.

What counts as an equation: a run of arithmetic tokens with at least one `=` and at
least one operator (so `5 = 5` alone, a label or a list is not a claim). Text glued to
the left side (`Step 1 12 + 7 = 19`) is trimmed from the left, and from the right on
the right side, until the side parses. A `x` is "times" only between two operands
(`3 x 4`), never a variable (`x = 5` is not checked). A right-hand decimal literal is
accepted as a rounding of the exact value (`10 / 3 = 3.33`); integers must be exact.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from ttscale.context import SolveContext
from ttscale.segment import STEP_DELIMITER
from ttscale.types import Problem
from verifiers.prefix_cache import CachedProcessVerifier

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


@functools.lru_cache(maxsize=4096)
def _step_equations(step: str) -> tuple[Equation, ...]:
    """`find_equations` of one step, kept: each new prefix of a path is scored with the steps
    before it, which the previous prefixes of that path already parsed."""
    return tuple(find_equations(step))


@functools.lru_cache(maxsize=256)
def _givens(question: str) -> frozenset[Fraction]:
    """`numbers_in` of a problem's text, kept: every prefix of the problem needs it."""
    return frozenset(numbers_in(question))


def grounded(eqs: Sequence[Equation], known: set[Fraction]) -> bool:
    """Whether every operand of every equation, in order, is known: a given of the problem or
    a value an earlier equation produced (each equation's values join `known`, in place)."""
    ok = True
    for e in eqs:
        if any(v not in known for v in e.operands):
            ok = False
        known.update(v for v in e.values if v is not None)
    return ok


def boxed_values(text: str) -> list[tuple[int, Fraction]]:
    """(offset, value) of every `\\boxed{...}` whose content is an arithmetic expression."""
    out = []
    for m in _BOXED.finditer(text):
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        content = text[m.end() : j - 1] if depth == 0 else ""
        toks = tokenize(content)
        if toks and all(t.kind != "break" and t.kind != "=" for t in toks):
            v = evaluate(toks)
            if v is not None:
                out.append((m.start(), v))
    return out


class ArithmeticChecker(CachedProcessVerifier):
    """Checks the equations of each step (see the module doc). No model: 0 parameters."""

    name = "arithmetic_checker"
    granularity = "step"
    parameters = 0.0

    def __init__(
        self,
        right_score: float = 1.0,
        wrong_score: float = 0.0,
        neutral_score: float = 0.5,
        boxed_mismatch_score: float | None = 0.25,
        ungrounded_score: float | None = 0.1,
        aggregation: str = "min",
        use_cache: bool = True,
        step_delimiter: str = STEP_DELIMITER,
    ) -> None:
        super().__init__(aggregation=aggregation, use_cache=use_cache, step_delimiter=step_delimiter)
        self.right_score, self.wrong_score, self.neutral_score = right_score, wrong_score, neutral_score
        self.boxed_mismatch_score = boxed_mismatch_score
        self.ungrounded_score = ungrounded_score

    @property
    def score_range(self) -> tuple[float, float]:  # type: ignore[override]
        """From the configured scores: a step gets one of them."""
        levels = [self.right_score, self.wrong_score, self.neutral_score, self.boxed_mismatch_score, self.ungrounded_score]
        levels = [float(v) for v in levels if v is not None]
        return (min(levels), max(levels))

    def check_step(self, step: str, previous: Sequence[str] = (), question: str | None = None) -> float:
        """The score of `step` given the steps before it on the path (and, for the grounding
        check, the problem's text: without it operands are not checked)."""
        eqs = _step_equations(step)
        if any(not e.ok for e in eqs):
            return self.wrong_score
        if self.ungrounded_score is not None and question is not None and eqs:
            known = set(_givens(question))
            for prev in previous:
                grounded(_step_equations(prev), known)
            if not grounded(eqs, known):
                return float(self.ungrounded_score)
        checked = bool(eqs)
        if self.boxed_mismatch_score is not None:
            boxes = boxed_values(step)
            if boxes:
                offset, value = boxes[-1]
                before = [e for e in eqs if e.end <= offset]
                last = before[-1] if before else None
                if last is None:
                    for prev in reversed(previous):
                        prev_eqs = _step_equations(prev)
                        if prev_eqs:
                            last = prev_eqs[-1]
                            break
                if last is not None:
                    if value != last.values[-1]:
                        return float(self.boxed_mismatch_score)
                    checked = True
        return self.right_score if checked else self.neutral_score

    async def _score_prefixes(
        self, problem: Problem, prefixes: Sequence[Sequence[str]], ctx: SolveContext
    ) -> list[float]:
        scores = [self.check_step(p[-1], p[:-1], problem.question) for p in prefixes]
        ctx.ledger.charge_verifier(calls=len(prefixes), parameters=0.0)
        return scores
