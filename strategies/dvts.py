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

Look-ahead (``lookahead``, the reference code's name: huggingface/search-and-learn
`src/sal/search/diverse_verifier_tree_search.py` with `generate_k_steps` in
`src/sal/search/utils.py`): before the M children are compared, each unfinished child is
extended by up to `lookahead` more steps at temperature 0 (one greedy continuation per
step, stopping at the end of the sequence), the PRM scores the child's path plus those
steps, and that score ranks the child; only the child's own step is kept (the
look-ahead steps are generated again, or not, at the next iteration). Their tokens are
charged like any other; the verifier is called once per child as without look-ahead.
The reference's default is ``lookahead: 0`` (`src/sal/config.py`; it read 1 until
commit 6f81cac, "Fix wrong lookahead value when porting config"), so is ttscale's.
With a look-ahead the child's recorded score is its look-ahead score (the reference
keeps that one too). Not implemented: the reference also ends a subtree once its text
holds "boxed{"; ttscale lets it run to the end of the sequence.
"""

from __future__ import annotations

from typing import Any, Mapping

from ttscale.strategies.beam_search import BeamSearch
from ttscale.strategies.steps import Node, Sampling, SearchStats, StepConfig, candidates_of, expand_all, score_nodes
from ttscale.strategies.tree_record import SearchTree
from ttscale.context import SolveContext
from ttscale.types import Problem, Result


class DVTS(BeamSearch):
    """DVTS. n: the number of candidates N; beam_width: M, the subtree width (N/M
    subtrees); lookahead: greedy steps past each child before it is scored (0: none,
    the reference's default). aggregation, selection, temperature, top_p, step as in
    BeamSearch."""

    name = "dvts"

    def __init__(
        self,
        n: int = 8,
        beam_width: int = 4,
        temperature: float = 0.7,
        top_p: float = 1.0,
        step: StepConfig | Mapping[str, Any] | None = None,
        aggregation: str = "last",
        selection: str = "argmax",
        lookahead: int = 0,
    ) -> None:
        super().__init__(n=n, beam_width=beam_width, temperature=temperature, top_p=top_p, step=step,
                         aggregation=aggregation, selection=selection)
        if lookahead < 0:
            raise ValueError(f"strategy.lookahead must be >= 0, got {lookahead}")
        self.lookahead = int(lookahead)

    async def look_ahead(self, ctx: SolveContext, prompt_ids: list[int], children: list[Node],
                         sampling: Sampling, stats: SearchStats) -> list[Node]:
        """The node to score for each child: the end of its greedy look-ahead (the child
        itself when it is finished, when lookahead is 0 or when the budget stops it)."""
        tips = list(children)
        greedy = Sampling(temperature=0.0, top_p=1.0, logprobs=sampling.logprobs)
        for _ in range(self.lookahead):
            todo = [i for i, tip in enumerate(tips) if not tip.finished]
            if not todo:
                break
            outs = await expand_all(ctx, prompt_ids, [(tips[i], 1) for i in todo], self.step, greedy, stats)
            for i, kids in zip(todo, outs):
                if kids:
                    tips[i] = kids[0]
            if stats.budget_exhausted:
                break
        return tips

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        prompt_ids = ctx.prompt_ids(problem)
        sampling = self.sampling(ctx)
        stats = SearchStats()
        m = self.n // self.beam_width
        leaves = [Node.root() for _ in range(m)]  # one root per subtree
        tree = SearchTree(self.name)
        tree.grow(leaves, 0)
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
            tree.grow(children, stats.steps)
            if self.lookahead:
                tips = await self.look_ahead(ctx, prompt_ids, children, sampling, stats)
                await score_nodes(ctx, problem, tips)
                for child, tip in zip(children, tips):
                    if tip is not child:  # the child is ranked by its look-ahead's score
                        if tip.score is not None:
                            child.with_score(tip.score)
                        if "verifier_error" in tip.extra:
                            child.extra["verifier_error"] = tip.extra["verifier_error"]
            else:
                await score_nodes(ctx, problem, children)
            for j, kids in zip(live, groups):
                if kids:
                    last[j] = kids
                    leaves[j] = max(kids, key=self.rank_key)  # first of the best on ties
                    tree.selected(kids, [leaves[j]])
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
            tree,
            pool,
            subtrees=m,
            subtrees_finished=sum(leaf.finished for leaf in leaves),
            beam_width=self.beam_width,
            lookahead=self.lookahead,
        )
