"""A*-decoding: best-first search over partial solutions guided by a process reward.

Chatziveroglou 2025, "A*-Decoding: Token-Efficient Inference Scaling"
(arXiv:2505.13672). Decoding is a search in the space of partial solutions: a state
`s` is the prompt plus the steps generated so far, a goal is a solution that ended
(end of sequence). The transition samples `k` candidate continuations (one step each)
of the state being expanded, `C(s) = {c_1..c_k} ~ pi(. | s)`, in *one* engine request
(`n=k`, prefix served from the engine's cache), and every successor `s' = s . c_i` is
scored by the process verifier and pushed on one global priority queue ordered by

    f(s') = g(s') + h(s'),   h(s') = 1 - r(s'),

where `r(s') in [0, 1]` is the process reward of the prefix (the PRM's score of its last
step). The search pops the state with the lowest `f`; it stops at the first goal popped
(a complete answer), or when the budget is spent, and then returns the best state found:
the complete solution with the lowest `f` if any was generated, else the partial one
with the lowest `f`.

The cost so far `g` is built from the same signal, the step cost `c(s_{i-1}, s_i) =
1 - r(s_i)` along the path `s_1..s_t = s'`:

- `cost="mean"` (default): `g = mean_i c_i`, the average step cost. Averaging keeps `f`
  on one scale at every depth, so long reasoning chains are not penalised for being
  long; this is how we read the paper's aggregated PRM cost;
- `cost="sum"`: `g = sum_i c_i`, the textbook additive path cost (favours short paths);
- `cost="none"`: `g = 0`, greedy best-first search on `h` alone.

Ties in `f` are broken by insertion order (first generated, first popped), so a run is
deterministic given the seed. Hyperparameters keep the paper's names: `k` continuations
per expansion; `max_expansions` caps the number of expansions (one request of k steps each, plus
the continuations of steps longer than `step.max_step_tokens`) on top
of the ledger's token / verifier-call budget.

`Result.stats`: expansions, pops, goal found, why it stopped, frontier size, generated
tokens, PRM passes (verifier calls), prefix-cache hits, and the `f` of every pop in
order (`pop_f`); with `record_tree=True` also every node (id, parent, depth, f, g, h,
the expansion it was created in, the pop it was popped at) for tests and analysis.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Any, Mapping

from ttscale.strategy import RequestShape, Strategy
from ttscale.strategies.steps import Node, Sampling, SearchStats, StepConfig, expand, score_nodes
from ttscale.strategies.tree_record import SearchTree
from ttscale.task import cluster_answers
from ttscale.context import SolveContext
from ttscale.types import Problem, Result
from ttscale.verifiers import prefix_cache

COSTS = ("mean", "sum", "none")


@dataclass
class _Entry:
    id: int
    node: Node
    f: float
    g: float
    h: float
    created_at: int  # number of expansions done when it was generated (0: the root)
    popped_at: int | None = None


class AStarDecoding(Strategy):
    name = "a_star"
    requires_verifier = True
    score_needs = {"": (0.0, 1.0, "the heuristic h = 1 - r and the step costs 1 - r assume a process reward r in [0, 1]")}
    count_params = ("k", "max_expansions")

    def request_shape(self) -> RequestShape:
        return RequestShape(self.k, self.step.max_step_tokens, "step.max_step_tokens")  # one step of each

    def __init__(
        self,
        k: int = 4,
        max_expansions: int = 32,
        cost: str = "mean",
        temperature: float = 0.7,
        top_p: float = 1.0,
        step: StepConfig | Mapping[str, Any] | None = None,
        record_tree: bool = False,
    ) -> None:
        if k < 1:
            raise ValueError(f"strategy.k must be >= 1, got {k}")
        if max_expansions < 1:
            raise ValueError(f"strategy.max_expansions must be >= 1, got {max_expansions}")
        if cost not in COSTS:
            raise ValueError(f"strategy.cost must be one of {COSTS}, got {cost!r}")
        self.k, self.max_expansions, self.cost = k, max_expansions, cost
        self.temperature, self.top_p = temperature, top_p
        self.step = StepConfig.coerce(step)
        self.record_tree = record_tree

    # ---- the evaluation function ---------------------------------------------
    def evaluate(self, node: Node) -> tuple[float, float, float]:
        """(f, g, h) of a node from its process scores (unscored: r = 0)."""
        r = node.score if node.score is not None else 0.0
        h = 1.0 - r
        costs = [1.0 - s for s in node.step_scores] or [h]
        if self.cost == "mean":
            g = sum(costs) / len(costs)
        elif self.cost == "sum":
            g = sum(costs)
        else:
            g = 0.0
        return g + h, g, h

    # ---- the search -----------------------------------------------------------
    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        prompt = ctx.prompt_ids(problem)
        sampling = Sampling.for_verifier(ctx, self.temperature, self.top_p)
        ids = itertools.count()
        root = _Entry(id=next(ids), node=Node.root(), f=0.0, g=0.0, h=0.0, created_at=0)
        entries = [root]
        tree = SearchTree(self.name)  # its ids are the entries' ids (both count in creation order)
        tree.id_of(root.node)
        heap: list[tuple[float, int, _Entry]] = [(root.f, root.id, root)]
        expansions = pops = 0
        goal: _Entry | None = None
        stop = "frontier_empty"
        pop_f: list[float] = []

        while heap:
            f, _, e = heap[0]
            if not e.node.finished:  # the next pop needs an expansion: can we pay for it?
                if expansions >= self.max_expansions:
                    stop = "max_expansions"
                    break
                left = ctx.ledger.remaining_tokens
                if ctx.ledger.exhausted or (left is not None and left < self.k):
                    stop = "budget"
                    break
            heapq.heappop(heap)
            e.popped_at = pops
            pops += 1
            pop_f.append(f)
            if e.node.finished:
                if e.node.finish_reason == "stop":
                    goal, stop = e, "goal"
                    break
                continue  # a dead end (step/token cap): nothing to expand
            gen = SearchStats()
            children = await expand(ctx, prompt, e.node, self.k, self.step, sampling, gen)
            if not children:  # the engine returned nothing the budget could pay for
                stop = "budget"
                break
            expansions += 1
            await score_nodes(ctx, problem, children)
            tree.grow(children, expansions)
            for child in children:
                cf, cg, ch = self.evaluate(child)
                ce = _Entry(id=next(ids), node=child, f=cf, g=cg, h=ch, created_at=expansions)
                entries.append(ce)
                heapq.heappush(heap, (cf, ce.id, ce))
            if gen.budget_exhausted:  # the budget cut this expansion short: stop expanding
                stop = "budget"
                break

        chosen = goal or self._best_found(entries)
        for e in entries:
            tree.mark(e.node, e.popped_at is not None)
        return self._result(problem, ctx, entries, chosen, heap, tree, {
            "expansions": expansions,
            "pops": pops,
            "goal_found": goal is not None,
            "stopped": stop,
            "pop_f": pop_f,
        })

    @staticmethod
    def _best_found(entries: list[_Entry]) -> _Entry | None:
        """After a budget stop: the complete solution with the lowest f, else the partial one
        with the lowest f among the states not expanded yet (an expanded state's children go
        further along the same path)."""
        generated = [e for e in entries if e.node.parent is not None]
        complete = [e for e in generated if e.node.finished and e.node.finish_reason == "stop"]
        pool = complete or [e for e in generated if e.popped_at is None or e.node.finished]
        return min(pool, key=lambda e: (e.f, e.id)) if pool else None

    def _result(
        self,
        problem: Problem,
        ctx: SolveContext,
        entries: list[_Entry],
        chosen: _Entry | None,
        heap: list,
        tree: SearchTree,
        stats: dict[str, Any],
    ) -> Result:
        # Candidates: every finished trajectory, plus the chosen state if it is partial.
        keep = [e for e in entries if e.node.parent is not None and e.node.finished]
        if chosen is not None and chosen not in keep:
            keep.append(chosen)
        cands = []
        for e in keep:
            c = e.node.to_candidate(ctx)
            if not e.node.finished:
                c.finish_reason = "budget"  # the search stopped before it ended
            c.extra.update({"f": e.f, "g": e.g, "h": e.h, "node": e.id})
            cands.append(c)
        cluster_answers(ctx.task, cands)
        selected = keep.index(chosen) if chosen is not None else None
        u = ctx.ledger.usage
        stats.update({
            "frontier": len(heap),
            "nodes": len(entries) - 1,
            "generated_tokens": u.generated_tokens,
            "prm_passes": u.verifier_calls,
            "k": self.k,
            "cost": self.cost,
            **prefix_cache.stats(ctx),
        })
        if chosen is not None:
            stats["selected_f"] = chosen.f
        if self.record_tree:
            by_node = {id(e.node): e.id for e in entries}
            stats["tree"] = [
                {"id": e.id, "parent": by_node.get(id(e.node.parent)),
                 "depth": e.node.depth, "f": e.f, "g": e.g, "h": e.h, "created_at": e.created_at,
                 "popped_at": e.popped_at, "finished": e.node.finished, "finish_reason": e.node.finish_reason}
                for e in entries
            ]
        return Result(
            problem_id=problem.id,
            answer=cands[selected].answer if selected is not None else None,
            candidates=cands,
            selected=selected,
            stats=stats,
            tree=tree.to_dict(chosen.node if chosen is not None else None, [e.node for e in keep]),
        )

