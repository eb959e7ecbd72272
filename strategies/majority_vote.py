"""Majority vote (self-consistency): sample N solutions, return the most frequent answer.

Wang et al. 2023, "Self-Consistency Improves Chain of Thought Reasoning in Language
Models" (arXiv:2203.11171). Answers are grouped by the task's equivalence (math-verify
for math), not by string. If a verifier is configured the pool is scored as well, so
best-of-k and weighted@k curves can be replayed from the same samples.
"""

from __future__ import annotations

import math

from ttscale.strategy import RequestShape, Strategy
from ttscale.strategies.sampling import plurality, sample_candidates, score_candidates
from ttscale.context import SolveContext
from ttscale.types import Problem, Result


class MajorityVote(Strategy):
    name = "majority_vote"
    independent_samples = True
    count_params = ("n",)

    def request_shape(self) -> RequestShape:
        return RequestShape(self.n, self.max_tokens, "max_tokens")  # n whole samples

    def __init__(self, n: int = 8, temperature: float = 0.7, top_p: float = 1.0, max_tokens: int = 256) -> None:
        self.n, self.temperature, self.top_p, self.max_tokens = n, temperature, top_p, max_tokens

    def weights(self, cands) -> list[float] | None:
        return None

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        draw: dict = {}
        cands = await sample_candidates(problem, ctx, self.n, self.temperature, self.top_p, self.max_tokens, stats=draw)
        await score_candidates(problem, ctx, cands)
        sel = plurality(cands, self.weights(cands))
        return Result(
            problem_id=problem.id,
            answer=cands[sel].answer if sel is not None else None,
            candidates=cands,
            selected=sel,
            stats={**draw, "answer_classes": len({c.cluster for c in cands if c.cluster is not None})},
        )


class WeightedMajorityVote(MajorityVote):
    """Weighted majority vote: each answer class weighs the sum of its verifier scores.

    Uesato et al. 2022, "Solving math word problems with process- and outcome-based
    feedback" (arXiv:2211.14275); Li et al. 2023 (DiVeRSe, arXiv:2206.02336).
    Unscored candidates (verifier budget spent) weigh 0."""

    name = "weighted_majority"
    requires_verifier = True
    score_needs = {"": (0.0, math.inf, "an answer class weighs the sum of its scores, so negative scores would make "
                                       "a larger class weigh less")}

    def weights(self, cands) -> list[float]:
        return [c.score if c.score is not None else 0.0 for c in cands]
