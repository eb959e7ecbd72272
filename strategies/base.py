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

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        raise NotImplementedError
