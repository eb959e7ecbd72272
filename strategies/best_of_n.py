"""Best-of-N: sample N solutions, return the one the verifier scores highest.

Cobbe et al. 2021, "Training Verifiers to Solve Math Word Problems" (arXiv:2110.14168);
Lightman et al. 2023, "Let's Verify Step by Step" (arXiv:2305.20050) for PRM-scored
selection. Any outcome scorer (or a process scorer with its aggregation) selects.
"""

from __future__ import annotations

from ttscale.strategy import RequestShape, Strategy
from ttscale.strategies.sampling import sample_candidates, score_candidates
from ttscale.context import SolveContext
from ttscale.types import Problem, Result


class BestOfN(Strategy):
    name = "best_of_n"
    requires_verifier = True
    independent_samples = True
    count_params = ("n",)

    def request_shape(self) -> RequestShape:
        return RequestShape(self.n, self.max_tokens, "max_tokens")  # n whole samples

    def __init__(self, n: int = 8, temperature: float = 0.7, top_p: float = 1.0, max_tokens: int = 256) -> None:
        self.n, self.temperature, self.top_p, self.max_tokens = n, temperature, top_p, max_tokens

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        draw: dict = {}
        cands = await sample_candidates(problem, ctx, self.n, self.temperature, self.top_p, self.max_tokens, stats=draw)
        await score_candidates(problem, ctx, cands)
        scored = [i for i, c in enumerate(cands) if c.score is not None]
        sel = max(scored, key=lambda i: (cands[i].score, -i)) if scored else (0 if cands else None)
        return Result(
            problem_id=problem.id,
            answer=cands[sel].answer if sel is not None else None,
            candidates=cands,
            selected=sel,
            stats={**draw, "scored": len(scored)},
        )
