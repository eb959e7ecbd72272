"""Self-certainty: score a candidate by the policy's own confidence, no extra model.

`mean_logprob` (default): mean log-probability of the sampled tokens. Kang et al. 2025,
"Scalable Best-of-N Selection for Large Language Models via Self-Certainty"
(arXiv:2502.18581) use the KL divergence of the next-token distribution from uniform;
with the top-k log-probabilities vLLM returns, the mean sampled-token log-probability is
the cheap proxy used here (it needs `logprobs=1` only, which the parallel strategies ask
for when this verifier is configured).
"""

from __future__ import annotations

from typing import Sequence

from ttscale.context import SolveContext
from ttscale.types import Candidate, Problem
from ttscale.verifier import Verifier


class SelfCertainty(Verifier):
    name = "self_certainty"
    needs_logprobs = True

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: SolveContext) -> list[float]:
        out = []
        for c in candidates:
            if c.mean_logprob is None:
                raise ValueError(
                    "verifier=self_certainty needs token log-probabilities; the strategy did not request them"
                )
            out.append(float(c.mean_logprob))
        # Free: no forward pass beyond generation. Counted as calls for comparability.
        ctx.ledger.charge_verifier(calls=len(candidates))
        return out
