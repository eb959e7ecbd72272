"""Verifier contracts: outcome scorers and process (step) scorers.

An outcome scorer returns one score per candidate (higher is better). A process
scorer returns one score per step of each candidate and aggregates them
(last / min / prod / mean) into an outcome score. A candidate sampled whole (no
`steps`, as best-of-N and voting make them) is cut into steps by `ttscale.segment.
split_steps` on the verifier's `step_delimiter` (the strategy's `step.delimiter` when
it has one), so it is scored as the same path a step search would have built for the
same text. Every verifier declares `score_range`, the interval its scores lie in, so a
strategy that needs bounded scores (a logit weighting) is checked against the built
verifier at config time (`ttscale.runner.validation.check_score_range`). Every verifier charges its
calls and tokens to `ctx.ledger`, so verifier compute is counted like policy
compute. Only a verifier with `is_oracle = True` is handed the reference.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from ttscale.segment import STEP_DELIMITER, split_steps
from ttscale.types import Candidate, Problem

if TYPE_CHECKING:  # pragma: no cover
    from ttscale.context import SolveContext

AGGREGATIONS = ("last", "min", "prod", "mean")


def aggregate(scores: Sequence[float], how: str) -> float:
    if how not in AGGREGATIONS:
        raise ValueError(f"verifier.aggregation must be one of {AGGREGATIONS}, got {how!r}")
    if not scores:
        return 0.0
    if how == "last":
        return float(scores[-1])
    if how == "min":
        return float(min(scores))
    if how == "prod":
        return float(math.prod(scores))
    return float(sum(scores) / len(scores))


class Verifier:
    name: str = "verifier"
    is_oracle: bool = False
    # Parameter count of the verifier model (0 when no model), for the FLOP model.
    parameters: float = 0.0
    # The closed interval every score lies in. Undeclared: unbounded, so a strategy that
    # needs bounded scores refuses it until the verifier says what it returns.
    score_range: tuple[float, float] = (-math.inf, math.inf)
    # The override that maps its scores into a bounded range, if it has one (named when a
    # strategy refuses the unbounded ones).
    bounded_override: str | None = None
    # Whether it reads the candidates' token log-probabilities (strategies then ask the engine for them).
    needs_logprobs: bool = False
    # Whether it reads the token IDs the policy generated for a path (strategies then record
    # them with `ttscale.policy_tokens.remember` before scoring: a judge riding the policy's cache).
    needs_policy_tokens: bool = False

    def shutdown(self) -> None:
        """Free what the verifier holds (a reward model's own engine); the runner calls it after
        each run, before the next job of a sweep builds another."""

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: SolveContext) -> list[float]:
        raise NotImplementedError

    def call_costs(self, problem: Problem, candidates: Sequence[Candidate], ctx: SolveContext) -> list[int]:
        """Verifier calls scoring each candidate would charge (given the ones before it in
        the list), at most: what the budget checks *before* scoring. One call each."""
        return [1] * len(candidates)


class ProcessVerifier(Verifier):
    """Scores steps; `score` aggregates step scores with `aggregation`."""

    def __init__(self, aggregation: str = "last", step_delimiter: str = STEP_DELIMITER) -> None:
        aggregate([], aggregation)  # validates
        if not isinstance(step_delimiter, str) or not step_delimiter:
            raise ValueError(f"verifier.step_delimiter must be a non-empty string, got {step_delimiter!r}")
        self.aggregation = aggregation
        self.step_delimiter = step_delimiter

    def paths_of(self, candidates: Sequence[Candidate]) -> list[list[str]]:
        """The step-split path `score` gives `score_steps` for each candidate: its own steps
        (a search's), else its text cut on `step_delimiter` as a search would have cut it."""
        return [list(c.steps) if c.steps else split_steps(c.text, self.step_delimiter) for c in candidates]

    async def score_steps(
        self, problem: Problem, steps: Sequence[Sequence[str]], ctx: SolveContext
    ) -> list[list[float]]:
        raise NotImplementedError

    def step_call_costs(self, problem: Problem, paths: Sequence[Sequence[str]], ctx: SolveContext) -> list[int]:
        """Verifier calls `score_steps` would charge for each path (given the paths before
        it), at most. One call per path (one forward pass); a cached scorer refines it."""
        return [1] * len(paths)

    def call_costs(self, problem: Problem, candidates: Sequence[Candidate], ctx: SolveContext) -> list[int]:
        return self.step_call_costs(problem, self.paths_of(candidates), ctx)

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: SolveContext) -> list[float]:
        steps = self.paths_of(candidates)
        per_step = await self.score_steps(problem, steps, ctx)
        for c, s in zip(candidates, per_step):
            c.step_scores = list(s)
        return [aggregate(s, self.aggregation) for s in per_step]
