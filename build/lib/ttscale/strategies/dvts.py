"""Diverse Verifier Tree Search (DVTS).

Beeching, Tunstall and Rush 2024, "Scaling test-time compute with open models" (blog
post): an extension of the PRM beam search of Snell et al. 2024 (arXiv:2408.03314)
that keeps the N candidates diverse at large N.

The N candidates are split into N/M independent subtrees of width M, each grown from
its own root. At every step each unfinished subtree expands its current leaf into M
next steps (one request, ``n = M``; the subtrees' requests all in flight together),
the PRM scores them, and the subtree greedily keeps its best child (a beam of width 1
at the subtree level). Subtrees never compete with each other: a subtree whose
children all score low is kept, not replaced by another's. A subtree is done when its
kept leaf finishes.

The pool is, as in the blog post, the M children of each subtree's last expansion
(the kept leaf and its siblings; N candidates in all); the answer is the best
aggregated PRM score (``selection: argmax``) or the answer class with the largest
total score (``selection: weighted_vote``).
"""

from __future__ import annotations

from ttscale.strategies.beam_search import BeamSearch
from ttscale.strategies.steps import Node, SearchStats, candidates_of, expand_all, score_nodes
from ttscale.context import SolveContext
from ttscale.types import Problem, Result


class DVTS(BeamSearch):
    """DVTS. n: the number of candidates N; beam_width: M, the subtree width (N/M
    subtrees). Other hyperparameters as in BeamSearch."""

    name = "dvts"

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        prompt_ids = ctx.prompt_ids(problem)
        sampling = self.sampling(ctx)
        stats = SearchStats()
        m = self.n // self.beam_width
        leaves = [Node.root() for _ in range(m)]  # one root per subtree
        last: list[list[Node]] = [[] for _ in range(m)]  # each subtree's last expansion
        while not ctx.ledger.exhausted:
            live = [j for j in range(m) if not leaves[j].finished]
            if not live:
                break
            groups = await expand_all(
                ctx, prompt_ids, [(leaves[j], self.beam_width) for j in live], self.step, sampling, stats
            )
            children = [c for g in groups for c in g]
            if not children:
                break
            stats.steps += 1
            await score_nodes(ctx, problem, children)
            for j, kids in zip(live, groups):
                if kids:
                    last[j] = kids
                    leaves[j] = max(kids, key=self.rank_key)  # first of the best on ties
            if stats.budget_exhausted:
                break
        pool, subtree, chosen = [], [], []
        for j in range(m):
            for node in last[j]:  # empty for a subtree the budget never reached
                pool.append(node)
                subtree.append(j)
                chosen.append(node is leaves[j])
        cands = candidates_of(ctx, pool, self.aggregation)
        for c, j, ch in zip(cands, subtree, chosen):
            c.extra["subtree"] = j
            c.extra["chosen"] = ch
        return self.finish(
            problem,
            ctx,
            cands,
            stats,
            subtrees=m,
            subtrees_finished=sum(leaf.finished for leaf in leaves),
            beam_width=self.beam_width,
        )
