"""The oracle: scores a candidate 1.0 when it is correct against the reference.

An explicit *upper bound* (what a perfect verifier would give), never a method: it is
the only verifier handed the reference answer, and runs using it are labelled
`verifier_is_oracle: true` in their config, records and metrics.
"""

from __future__ import annotations

from typing import Sequence

from ttscale.context import SolveContext
from ttscale.types import Candidate, Problem
from ttscale.verifier import Verifier


class OracleVerifier(Verifier):
    name = "oracle"
    is_oracle = True
    score_range = (0.0, 1.0)  # 1 right, 0 wrong

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: SolveContext) -> list[float]:
        if ctx.reference is None:
            raise RuntimeError("oracle verifier was not given the reference (runner bug)")
        ctx.ledger.charge_verifier(calls=len(candidates))
        out = []
        for c in candidates:  # code tasks grade in the sandbox
            ok = c.answer is not None and await ctx.task.agrade_answer(c.answer, ctx.reference, problem)
            out.append(1.0 if ok else 0.0)
        return out
