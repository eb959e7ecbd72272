"""The Strategy contract: `async solve(problem, ctx) -> Result`.

A strategy reads like its paper's pseudocode for *one* problem; the runner keeps
many problems in flight and the engine batches their requests. Costs are charged
to `ctx.ledger` by `ctx.generate` and by the verifier; the runner copies the
ledger's usage into the result.
"""

from __future__ import annotations

from ttscale.context import SolveContext
from ttscale.types import Problem, Result


class Strategy:
    name: str = "strategy"
    # Whether the strategy needs a verifier (checked before any model loads).
    requires_verifier: bool = False
    # Whether `Result.candidates` are independent samples of the policy (best-of-N, voting):
    # only then do curves over k (pass@k, maj@k, best_of@k, weighted@k) estimate anything.
    # A search's pool (resampled particles, kept beams, every finished node) is not; the
    # runner writes this into every record (`independent_samples`) for metrics and merge.
    independent_samples: bool = False
    # Verifier scores this strategy can be guided by: {"setting=value": (low, high, why)},
    # "" for always. Checked against the built verifier's `score_range` before any model
    # loads (ttscale.validate.check_score_range).
    score_needs: dict[str, tuple[float, float, str]] = {}

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        raise NotImplementedError
