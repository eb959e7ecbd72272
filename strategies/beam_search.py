"""Beam search over reasoning steps, guided by a process reward model.

Snell et al. 2024, "Scaling LLM Test-Time Compute Optimally can be More Effective than
Scaling Model Parameters" (arXiv:2408.03314), Sec. 5.1; details (collected finished
beams, the final pool) as in Beeching, Tunstall & Rush 2024, "Scaling test-time compute
with open models".

With N beams and beam width M, as in the reference code (huggingface/search-and-learn,
`src/sal/search/beam_search.py` `_beam_search`, defaults from `src/sal/config.py` and
`recipes/*/beam_search.yaml`):

1. sample N first steps (one request, ``n = N``) and score them with the PRM;
2. beams that finish (end of sequence or a step/token cap) are collected; among the
   unfinished ones, duplicates (same text) are dropped, the first kept
   (``filter_duplicates: true``, as every beam-search recipe sets; config.py's dataclass
   default is false), and the top N/M by their aggregated PRM score are kept;
3. the kept beams are refilled to N (``refill: true``, the reference's "duplicate active
   beams to ensure that we have config.n beams per iteration": N // kept copies each,
   the first N % kept beams one more) and each copy takes one next step (the copies of a
   beam go in one request, ``n = copies``; all requests in flight together), so N
   candidates are scored at every step even when fewer than N/M beams are left;
4. repeat 2-3 while unfinished beams remain.

The pool is the first N beams to finish, in the order they finished (the reference's
``sort_completed: false``; ``sort_completed: true``: the N best), or the unfinished
frontier if none finished before the budget ran out; the answer is the one with the best
aggregated PRM score (``selection: argmax``) or the answer class with the largest total
score (``selection: weighted_vote``). Deviations kept: the reference pads a pool of fewer
than N finished beams with copies (ttscale does not: copies would only re-weight a vote);
the reference's look-ahead steps are generated but never scored in beam search, so
ttscale's beam search has no look-ahead (DVTS has it).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from ttscale.strategy import RequestShape, Strategy
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
from ttscale.strategies.tree_record import SearchTree
from ttscale.context import SolveContext
from ttscale.types import Candidate, Problem, Result
from ttscale.verifier import aggregate


class BeamSearch(Strategy):
    """Step-level beam search with a PRM (Snell et al. 2024).

    n: the number of beams N (candidates scored per step).
    beam_width: M, the continuations per kept beam; N/M beams are kept. N must be a
        multiple of M.
    aggregation: how a beam's per-prefix PRM scores are reduced to rank it and to
        select the answer ("last", the reference's agg_strategy; "min", "prod", "mean").
    selection: "argmax" (best aggregated score) or "weighted_vote".
    refill: expand the kept beams into N next steps in all (reference); false: M per
        kept beam (fewer than N once fewer than N/M beams are left).
    filter_duplicates: drop unfinished beams whose text another one has before keeping
        the top N/M (the reference's recipes); false: keep duplicates.
    sort_completed: the pool is the N best finished beams; false (reference): the
        first N to finish.
    temperature, top_p: sampling of the policy.
    step: how solutions are cut into steps (see `StepConfig`).
    """

    name = "beam_search"
    requires_verifier = True
    score_needs = {"selection=weighted_vote": (0.0, math.inf, "the vote weighs an answer class by the sum of its "
                                                           "scores, so negative scores would make a larger class weigh less")}
    count_params = ("n", "beam_width")

    def request_shape(self) -> RequestShape:
        return RequestShape(self.n, self.step.max_step_tokens, "step.max_step_tokens")  # one step of each

    def __init__(
        self,
        n: int = 8,
        beam_width: int = 4,
        temperature: float = 0.7,
        top_p: float = 1.0,
        step: StepConfig | Mapping[str, Any] | None = None,
        aggregation: str = "last",
        selection: str = "argmax",
        refill: bool = True,
        filter_duplicates: bool = True,
        sort_completed: bool = False,
    ) -> None:
        if beam_width < 1 or n < beam_width or n % beam_width:
            raise ValueError(f"strategy.n ({n}) must be a positive multiple of strategy.beam_width ({beam_width})")
        aggregate([], aggregation)  # validates
        if selection not in SELECTIONS:
            raise ValueError(f"strategy.selection must be one of {SELECTIONS}, got {selection!r}")
        self.n, self.beam_width = int(n), int(beam_width)
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.step = StepConfig.coerce(step)
        self.aggregation, self.selection = aggregation, selection
        self.refill, self.filter_duplicates, self.sort_completed = bool(refill), bool(filter_duplicates), bool(sort_completed)

    def sampling(self, ctx: SolveContext) -> Sampling:
        return Sampling.for_verifier(ctx, self.temperature, self.top_p)

    def rank_key(self, node: Node) -> float:
        s = node_score(node, self.aggregation)
        return float("-inf") if s is None else s

    def finish(
        self, problem: Problem, ctx: SolveContext, cands: list[Candidate], stats: SearchStats,
        tree: SearchTree | None = None, pool: list[Node] | None = None, **extra: Any
    ) -> Result:
        """The result; `tree` and `pool` (the candidates' nodes): the search tree to record."""
        weights = [c.score if c.score is not None else 0.0 for c in cands]
        sel = select(ctx, cands, weights, self.selection)
        return Result(
            problem_id=problem.id,
            answer=cands[sel].answer if sel is not None else None,
            candidates=cands,
            selected=sel,
            stats=stats.as_dict(ctx, **extra),
            tree=tree.to_dict(pool[sel] if sel is not None else None, pool) if tree and pool is not None else None,
        )

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        prompt_ids = ctx.prompt_ids(problem)
        sampling = self.sampling(ctx)
        stats = SearchStats()
        tree = SearchTree(self.name)
        keep = self.n // self.beam_width
        beams: list[Node] = []
        jobs: list[tuple[Node, int]] = [(Node.root(), self.n)]
        tree.id_of(jobs[0][0])
        completed: list[Node] = []
        kept_per_step: list[int] = []
        duplicates: list[int] = []
        while jobs and not ctx.ledger.exhausted:
            children = [
                c for group in await expand_all(ctx, prompt_ids, jobs, self.step, sampling, stats) for c in group
            ]
            if not children:
                break
            stats.steps += 1
            tree.grow(children, stats.steps)
            await score_nodes(ctx, problem, children)
            # a beam the budget cut mid-step is not a finished solution: it stays a beam
            cut = [c for c in children if c.finish_reason == "budget"]
            completed += [c for c in children if c.finished and c.finish_reason != "budget"]
            active = [c for c in children if not c.finished] + cut
            candidates = list(active)
            if self.filter_duplicates:
                first: dict[str, Node] = {}
                for c in active:
                    first.setdefault(c.text(), c)
                duplicates.append(len(active) - len(first))
                active = list(first.values())
            # the top N/M unfinished beams (stable: the earlier one wins a tie), in their order
            order = sorted(range(len(active)), key=lambda i: (-self.rank_key(active[i]), i))
            beams = [active[i] for i in sorted(order[:keep])]
            if not stats.budget_exhausted:  # a selection the search goes on from
                tree.selected(candidates, beams)
            kept_per_step.append(len(beams))
            if stats.budget_exhausted:
                break
            jobs = self.refilled(beams) if self.refill else [(b, self.beam_width) for b in beams]
        if self.sort_completed:
            completed = sorted(completed, key=self.rank_key, reverse=True)
        pool = completed[: self.n] or beams
        cands = candidates_of(ctx, pool, self.aggregation)
        return self.finish(
            problem,
            ctx,
            cands,
            stats,
            tree,
            pool,
            completed=len(completed),
            kept_per_step=kept_per_step,
            duplicates_filtered=duplicates,
            beam_width=self.beam_width,
        )

    def refilled(self, beams: list[Node]) -> list[tuple[Node, int]]:
        """N next steps shared among the kept beams: N // len copies each, the first
        N % len beams one more (the reference's ``(active_beams * repeats)[: config.n]``)."""
        if not beams:
            return []
        q, r = divmod(self.n, len(beams))
        return [(b, q + (1 if j < r else 0)) for j, b in enumerate(beams) if q + (1 if j < r else 0) > 0]
