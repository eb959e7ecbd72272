"""Self-certainty: score a candidate by the policy's own confidence, no extra model.

Kang et al. 2025, "Scalable Best-of-N Selection for Large Language Models via Self-Certainty"
(arXiv:2502.18581) use the KL divergence of the next-token distribution from uniform;
with the top-k log-probabilities vLLM returns, the mean log-probability of the sampled
tokens is the cheap proxy used here (it needs `logprobs=1` only, which the strategies ask
for when this verifier is configured).

`output`: what the score is.
- `mean_logprob` (default): the raw mean log-probability, in (-inf, 0]. Strategies that
  need bounded or non-negative scores refuse it at config time (`score_range`, read by
  `ttscale.runner.validation.check_score_range`): under particle filtering's logit
  weighting every such score would be clipped to the same weight (uniform resampling), in
  a weighted vote a larger answer class would weigh less, and A*'s `1 - r` leaves [0, 1].
  Best-of-N and majority voting read it as before (run directories keep their hash).
- `prob` (`+verifier.output=prob`): exp(mean log-probability), the geometric mean of the
  sampled tokens' probabilities, in [0, 1]: the mapping its_hub applies to self-certainty
  before a particle filter's logit. It ranks candidates exactly as the raw mean does, and
  those strategies read it as they read a PRM's score.
"""

from __future__ import annotations

import math
from typing import Sequence

from ttscale.context import SolveContext
from ttscale.types import Candidate, Problem
from ttscale.verifier import Verifier

OUTPUTS = {"prob": (0.0, 1.0), "mean_logprob": (-math.inf, 0.0)}


class SelfCertainty(Verifier):
    name = "self_certainty"
    needs_logprobs = True
    bounded_override = "+verifier.output=prob maps its scores to [0, 1]"  # named by the config check

    def __init__(self, output: str = "mean_logprob") -> None:
        if output not in OUTPUTS:
            raise ValueError(f"verifier.output must be one of {sorted(OUTPUTS)}, got {output!r}")
        self.output = output

    @property
    def score_range(self) -> tuple[float, float]:  # type: ignore[override]
        return OUTPUTS[self.output]

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: SolveContext) -> list[float]:
        out = []
        for c in candidates:
            if c.mean_logprob is None:
                raise ValueError(
                    "verifier=self_certainty needs token log-probabilities; the strategy did not request them"
                )
            lp = float(c.mean_logprob)
            out.append(math.exp(lp) if self.output == "prob" else lp)
        # Free: no forward pass beyond generation. Counted as calls for comparability.
        ctx.ledger.charge_verifier(calls=len(candidates))
        return out
