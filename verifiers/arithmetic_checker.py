"""Arithmetic step checker: a process scorer that checks the equations a step writes.

For the synthetic arithmetic task (and any solution that writes its arithmetic out):
every equation in a step (`12 + 7 = 19`, `3 x 4 = 12`, `(2.5 + 0.5) * 2 = 6 = 6`) is
evaluated exactly and compared. No model, no reference answer: it checks the *claims*
the solution makes, which is what a process reward model is meant to judge, and it is
the one verifier on the offline default that really checks something.

A step's score judges the path up to it (`scoring: prefix`, the default): the lowest of the
scores below over the path's steps so far, as a PRM's reward at a step judges the prefix it
ends, so a search that scores a partial solution by its last step (the papers' rule) sees a
wrong equation anywhere on the path. `scoring: step` scores each step on its own.

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

Safety: nothing is ever passed to `eval`/`exec`; the parser (`verifiers/arith_parse.py`)
evaluates equations exactly over a small token set, with bounded sizes.

What counts as an equation: a run of arithmetic tokens with at least one `=` and at
least one operator (so `5 = 5` alone, a label or a list is not a claim). Text glued to
the left side (`Step 1 12 + 7 = 19`) is trimmed from the left, and from the right on
the right side, until the side parses. A `x` is "times" only between two operands
(`3 x 4`), never a variable (`x = 5` is not checked). A right-hand decimal literal is
accepted as a rounding of the exact value (`10 / 3 = 3.33`); integers must be exact.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from typing import Sequence

from ttscale.context import SolveContext
from ttscale.segment import STEP_DELIMITER
from ttscale.types import Problem
from ttscale.verifiers.arith_parse import _BOXED, Equation, evaluate, find_equations, numbers_in, tokenize
from ttscale.verifiers.prefix_cache import CachedProcessVerifier


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


# "prefix": a step's score judges the path up to it, as a PRM's reward at a step does (its
# worst step so far), so the papers' last-step aggregation of a search sees a wrong equation
# anywhere on the path; "step": each step on its own (then aggregate with min to get the same).
SCORINGS = ("prefix", "step")


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
        aggregation: str = "last",
        use_cache: bool = True,
        step_delimiter: str = STEP_DELIMITER,
        scoring: str = "prefix",
    ) -> None:
        super().__init__(aggregation=aggregation, use_cache=use_cache, step_delimiter=step_delimiter)
        if scoring not in SCORINGS:
            raise ValueError(f"verifier.scoring must be one of {SCORINGS}, got {scoring!r}")
        self.scoring = scoring
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
        if self.scoring == "step":
            scores = [self.check_step(p[-1], p[:-1], problem.question) for p in prefixes]
        else:  # the path up to here: its worst step (a wrong equation anywhere makes it wrong)
            scores = [min(self.check_step(p[i], p[:i], problem.question) for i in range(len(p))) for p in prefixes]
        ctx.ledger.charge_verifier(calls=len(prefixes), parameters=0.0)
        return scores
