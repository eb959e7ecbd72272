"""Particle filtering over reasoning steps.

Puri et al. 2025, "A Probabilistic Inference Approach to Inference-Time Scaling of
LLMs using Particle-Based Monte Carlo Methods" (arXiv:2502.01618), Algorithm 1.

The policy is the transition model and the process reward model (PRM) the emission
model of a state-space model; N particles (partial solutions) approximate the
posterior. One iteration (one step t):

1. transition: every unfinished particle is extended by one step
   ``x_t ~ p_M(. | c, x_{<t})`` (copies of the same particle go in one request with
   ``n = copies``; all requests of the step are in flight together);
2. weights: the PRM scores each new partial trajectory (the paper's "model
   aggregation": the score of the last step given the whole prefix; `aggregation`
   picks another reduction of the per-prefix scores) and the weight is the logit of
   the score, ``w_i = log(r_i / (1 - r_i))``;
3. resampling: N indices are drawn with ``P(j = i) = softmax(w / softmax_temperature)_i``
   (multinomial, the paper's choice, or systematic), with ``ctx.rng``.

Finished particles (end of sequence or a step/token cap) are not extended any
further, but they stay in the particle set with their final weight and keep
competing in every resampling (and can be duplicated), as in the paper and its
reference implementation. The loop ends when every particle is finished (or the
budget is spent). The answer is the particle with the highest weight
(``selection: argmax``) or the answer class with the largest total softmax weight
(``selection: weighted_vote``).

Checked against the reference code (Red-Hat-AI-Innovation-Team/its_hub,
`its_hub/core/algorithms/particle_gibbs.py`, `ParticleFiltering` = `ParticleGibbs` with
one iteration): the same softmax at temperature 1 over ``_inv_sigmoid`` weights clipped
at 1e-7, multinomial resampling, stopped particles kept with their final weight, argmax
selection, and the PRM's score of the latest partial trajectory as the weight
(``aggregation: last``). Differences: its_hub offers ``sample`` as a final selection
(ttscale: ``weighted_vote``), Particle Gibbs (several iterations with reference
particles, not here), and its `ParticleFiltering` accepts a resampling method it does
not pass on (always multinomial; ttscale honours ``resampling``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np

from ttscale.strategy import RequestShape, Strategy
from ttscale.strategies.tree_record import SearchTree
from ttscale.strategies.steps import (
    SELECTIONS,
    Node,
    Sampling,
    SearchStats,
    StepConfig,
    candidates_of,
    expand_all,
    node_score,
    score_nodes,
    select,
)
from ttscale.context import SolveContext
from ttscale.types import Problem, Result
from ttscale.verifier import aggregate

RESAMPLINGS = ("multinomial", "systematic")
WEIGHTINGS = ("logit", "log", "identity")
_EPS = 1e-7


# ---- the numerics (module level so tests can check them directly) ---------------
def softmax(log_weights: Sequence[float], temperature: float = 1.0) -> np.ndarray:
    """``softmax(log_weights / temperature)``, numerically stable."""
    if temperature <= 0:
        raise ValueError(f"softmax temperature must be > 0, got {temperature}")
    x = np.asarray(log_weights, dtype=float) / temperature
    x = x - np.max(x)
    e = np.exp(x)
    return e / e.sum()


def effective_sample_size(probs: Sequence[float]) -> float:
    """ESS of normalised weights, ``1 / sum p_i^2`` (between 1 and N)."""
    p = np.asarray(probs, dtype=float)
    return float(1.0 / np.sum(p * p))


def normalized_entropy(probs: Sequence[float]) -> float:
    """Shannon entropy of normalised weights divided by ``log N`` (between 0 and 1)."""
    p = np.asarray(probs, dtype=float)
    if p.size <= 1:
        return 1.0
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum() / np.log(p.size))


def resample(probs: Sequence[float], size: int, rng: np.random.Generator, method: str = "multinomial") -> np.ndarray:
    """`size` ancestor indices drawn from `probs`.

    multinomial: i.i.d. draws (the paper's resampling). systematic: one uniform offset,
    evenly spaced positions through the cumulative weights (lower variance: a particle
    of weight p gets floor(size p) or ceil(size p) copies)."""
    p = np.asarray(probs, dtype=float)
    p = p / p.sum()
    if method == "multinomial":
        return rng.choice(p.size, size=size, replace=True, p=p)
    if method == "systematic":
        positions = (rng.random() + np.arange(size)) / size
        cum = np.cumsum(p)
        cum[-1] = 1.0
        return np.searchsorted(cum, positions, side="right").clip(max=p.size - 1)
    raise ValueError(f"strategy.resampling must be one of {RESAMPLINGS}, got {method!r}")


def score_to_log_weight(score: float | None, how: str = "logit") -> float:
    """A particle's log-weight from its PRM score (None: unscored, neutral 0.5)."""
    s = 0.5 if score is None else float(score)
    if how == "logit":
        s = min(max(s, _EPS), 1 - _EPS)
        return float(np.log(s / (1 - s)))
    if how == "log":
        return float(np.log(max(s, _EPS)))
    if how == "identity":
        return s
    raise ValueError(f"strategy.weighting must be one of {WEIGHTINGS}, got {how!r}")


# ---- the strategy ---------------------------------------------------------------
class ParticleFilter(Strategy):
    """Particle filtering (Puri et al. 2025). Hyperparameters, with the paper's names:

    n: the number of particles N.
    softmax_temperature: temperature of the softmax over the particles' log-weights
        (1.0 in the paper; larger flattens the resampling distribution).
    weighting: how a PRM score r becomes a log-weight: "logit" (the paper,
        log(r/(1-r))), "log" (weights proportional to r) or "identity" (an unbounded
        scorer's value used as the log-weight).
    aggregation: reduction of the per-prefix PRM scores into the particle's reward
        ("last" = the paper's model aggregation; "min", "prod", "mean").
    resampling: "multinomial" (the paper) or "systematic".
    selection: "argmax" (highest weight) or "weighted_vote".
    temperature, top_p: sampling of the policy.
    step: how solutions are cut into steps (see `StepConfig`).
    """

    name = "particle_filter"
    requires_verifier = True
    score_needs = {
        "weighting=logit": (0.0, 1.0, "log(r / (1 - r)) is clipped to r in [1e-7, 1 - 1e-7], so scores outside [0, 1] "
                                      "all get the same weight and the resampling is uniform"),
        "weighting=log": (0.0, math.inf, "log(r) is clipped at r = 1e-7, so negative scores all get the same weight"),
    }
    count_params = ("n",)

    def request_shape(self) -> RequestShape:
        return RequestShape(self.n, self.step.max_step_tokens, "step.max_step_tokens")  # one step of each

    def __init__(
        self,
        n: int = 8,
        temperature: float = 0.7,
        top_p: float = 1.0,
        step: StepConfig | Mapping[str, Any] | None = None,
        softmax_temperature: float = 1.0,
        weighting: str = "logit",
        aggregation: str = "last",
        resampling: str = "multinomial",
        selection: str = "argmax",
    ) -> None:
        if n < 1:
            raise ValueError(f"strategy.n must be >= 1, got {n}")
        if softmax_temperature <= 0:
            raise ValueError(f"strategy.softmax_temperature must be > 0, got {softmax_temperature}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"strategy.weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if resampling not in RESAMPLINGS:
            raise ValueError(f"strategy.resampling must be one of {RESAMPLINGS}, got {resampling!r}")
        aggregate([], aggregation)  # validates
        if selection not in SELECTIONS:
            raise ValueError(f"strategy.selection must be one of {SELECTIONS}, got {selection!r}")
        self.n = int(n)
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.step = StepConfig.coerce(step)
        self.softmax_temperature = float(softmax_temperature)
        self.weighting, self.aggregation = weighting, aggregation
        self.resampling, self.selection = resampling, selection

    # ---- hooks a subclass (entropic PF) refines ---------------------------------
    def log_weight(self, node: Node) -> float:
        return score_to_log_weight(node_score(node, self.aggregation), self.weighting)

    async def resampling_log_weights(
        self, problem: Problem, ctx: SolveContext, particles: list[Node], run: FilterRun
    ) -> list[float]:
        """The log-weights the resampling uses (plain PF: the particles' own)."""
        return [self.log_weight(p) for p in particles]

    def resampling_distribution(self, log_weights: Sequence[float], t: int, run: FilterRun) -> np.ndarray:
        """The distribution the N ancestors are drawn from at step t."""
        return softmax(log_weights, self.softmax_temperature)

    def extra_stats(self, run: FilterRun) -> dict[str, Any]:
        return {}

    # ---- the algorithm ------------------------------------------------------------
    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        run = FilterRun(self, problem, ctx)
        N = self.n
        root = Node.root()
        particles: list[Node] = [root] * N  # copies share one node until they diverge
        run.tree.id_of(root)
        t = 0
        while not ctx.ledger.exhausted:
            active = [i for i, p in enumerate(particles) if not p.finished]
            if not active:
                break
            # 1. transition: every distinct unfinished particle, one request with n = copies
            slots: dict[int, list[int]] = defaultdict(list)
            for i in active:
                slots[id(particles[i])].append(i)
            groups = list(slots.values())
            children = await run.expand([(particles[g[0]], len(g)) for g in groups])
            new: list[Node] = []
            for g, kids in zip(groups, children):
                for i, kid in zip(g, kids):
                    particles[i] = kid
                    new.append(kid)
            if not new:
                break
            t += 1
            run.stats.steps = t
            run.tree.grow(new, t)
            # 2. weights: PRM scores of the new partial trajectories
            await score_nodes(ctx, problem, new)
            if all(p.finished for p in particles) or run.stats.budget_exhausted or ctx.ledger.exhausted:
                break
            # 3. resampling (finished particles take part with their final weight)
            log_w = await self.resampling_log_weights(problem, ctx, particles, run)
            probs = self.resampling_distribution(log_w, t, run)
            ancestors = resample(probs, N, ctx.rng, self.resampling)
            pool, particles = particles, [particles[a] for a in ancestors]
            run.tree.selected(pool, particles)
            run.resamplings += 1
            run.ess.append(round(effective_sample_size(probs), 4))
            run.unique.append(len({id(p) for p in particles}))
        return run.result(particles)


class FilterRun:
    """The state of one `solve` call that hooks and statistics share."""

    def __init__(self, strategy: ParticleFilter, problem: Problem, ctx: SolveContext) -> None:
        self.strategy, self.problem, self.ctx = strategy, problem, ctx
        self.prompt_ids = ctx.prompt_ids(problem)
        self.sampling = Sampling.for_verifier(ctx, strategy.temperature, strategy.top_p)
        self.stats = SearchStats()
        self.tree = SearchTree(strategy.name)
        self.resamplings = 0
        self.ess: list[float] = []
        self.unique: list[int] = []
        self.extra: dict[str, Any] = {}  # what a subclass records (annealing events, ...)

    async def expand(self, jobs: list[tuple[Node, int]]) -> list[list[Node]]:
        s = self.strategy
        return await expand_all(self.ctx, self.prompt_ids, jobs, s.step, self.sampling, self.stats)

    def result(self, particles: list[Node]) -> Result:
        s, ctx = self.strategy, self.ctx
        cands = candidates_of(ctx, particles, s.aggregation)
        log_w = [s.log_weight(p) for p in particles]
        probs = softmax(log_w, s.softmax_temperature)
        node_ids: dict[int, int] = {}
        for c, p, w in zip(cands, particles, probs):
            c.extra["weight"] = float(w)
            c.extra["trajectory"] = node_ids.setdefault(id(p), len(node_ids))
        sel = select(ctx, cands, list(probs), s.selection)
        stats = self.stats.as_dict(
            ctx,
            particles=len(particles),
            resamplings=self.resamplings,
            ess=self.ess,
            unique_particles=self.unique,
            distinct_final=len(node_ids),
            finished=sum(p.finished for p in particles),
            **s.extra_stats(self),
        )
        return Result(
            problem_id=self.problem.id,
            answer=cands[sel].answer if sel is not None else None,
            candidates=cands,
            selected=sel,
            stats=stats,
            tree=self.tree.to_dict(particles[sel] if sel is not None else None, particles),
        )
