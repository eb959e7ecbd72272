"""Monte Carlo tree search over reasoning steps, valued by a process verifier.

Hao et al. 2023, "Reasoning with Language Model is Planning with World Model" (RAP,
arXiv:2305.14992); Qi et al. 2024, "Mutual Reasoning Makes Smaller LLMs Stronger
Problem-Solvers" (rStar, arXiv:2408.06195). The search is the UCT search of the reference
code, maitrix-org/llm-reasoners `reasoners/algorithm/mcts.py` (`MCTS`, @f94e5ac), read
point by point; hyperparameters keep its names.

A state is a partial solution (`steps.Node`); an action is one sampled next step. One
simulation (`iterate` in the reference) does:

1. selection (`_select`): from the root, while the node has children and is not
   terminal, go to the child with the highest UCT bound
   ``Q(c) + w_exp * sqrt(ln N(parent) / max(1, N(c)))``, N the visit counts (the length
   of `cum_rewards`), Q = `calc_q(cum_rewards)` (a child never visited: its own reward,
   the reference's `fast_reward`);
2. expansion (`_expand`): the leaf gets `n_actions` children, its next steps sampled in
   one engine request (`n = n_actions`, continued while a step is cut, as every step
   search); each child's reward is the process verifier's score of its prefix;
3. simulation (`_simulate`, `simulate_strategy`): `max` (reference default) rolls out
   from the leaf to a terminal node, expanding each node on the way and following the
   child with the highest reward; `sample` follows a child drawn with probability
   proportional to its reward, `random` a uniform one; `none` stops at the leaf (the
   verifier's score is the value, no rollout);
4. back-propagation (`_back_propagate`): along the path (root included, its reward 0)
   each node appends `cum_reward(rewards from it to the end of the path)`.

`n_iters` simulations are run (fewer when the budget runs out). The answer
(`output_strategy`): `max_reward` (reference default) the terminal path with the highest
`cum_reward` of its rewards; `follow_max` from the root the child with the highest reward
until a terminal node. With `aggregate` (RAP's `MCTSAggregation`, `weight_policy`
`edge` / `edge_inverse_depth` / `uniform`) the answer is instead the answer class with
the largest weight over the terminal nodes. The candidates are every terminal node (in
the order they were created) plus the chosen path when it did not end.

Deviations (README "Defaults and their sources"): the depth limit is `step.max_steps`
(the compute contract; RAP's GSM8K example uses `depth_limit=5` sub-questions); a node
the budget cut mid-step is terminal but not an answer; when no terminal path exists
(a budget stop) the answer is the leaf with the best `cum_reward` (the reference returns
none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ttscale.strategy import RequestShape, Strategy
from ttscale.strategies.steps import Node, Sampling, SearchStats, StepConfig, expand, score_nodes
from ttscale.task import cluster_answers
from ttscale.context import SolveContext
from ttscale.types import Problem, Result

REDUCERS: dict[str, Callable[[list[float]], float]] = {
    "sum": lambda xs: float(sum(xs)),
    "mean": lambda xs: float(sum(xs) / len(xs)) if xs else 0.0,
    "max": lambda xs: float(max(xs)) if xs else 0.0,
}
SIMULATE = ("max", "sample", "random", "none")
OUTPUTS = ("max_reward", "follow_max")
WEIGHT_POLICIES = ("edge", "edge_inverse_depth", "uniform")


@dataclass(eq=False)
class MCTSNode:
    """A tree node: the partial solution, its reward, its children and visit history."""

    node: Node
    parent: "MCTSNode | None" = None
    reward: float = 0.0
    children: list["MCTSNode"] | None = None  # None: not expanded yet
    cum_rewards: list[float] = field(default_factory=list)
    id: int = 0
    born: int = 0  # the simulation that created it (0: the root and the first expansion)

    @property
    def depth(self) -> int:
        return self.node.depth

    @property
    def is_terminal(self) -> bool:
        return self.node.finished

    @property
    def visits(self) -> int:
        return len(self.cum_rewards)


class MCTS(Strategy):
    """UCT search over steps (llm-reasoners `MCTS`; RAP, rStar). See the module doc.

    n_iters: simulations per problem. w_exp: the exploration weight of UCT.
    n_actions: children sampled per expansion (RAP's `n_action`).
    cum_reward: how a path's rewards are reduced (`sum`, `mean`, `max`).
    calc_q: how a node's back-propagated values are reduced to Q (`mean`, `max`, `sum`).
    simulate_strategy: `max` | `sample` | `random` | `none` (no rollout).
    output_strategy: `max_reward` | `follow_max`. aggregate: null, or a `weight_policy`
    of RAP's answer vote (`edge`, `edge_inverse_depth`, `uniform`).
    """

    name = "mcts"
    requires_verifier = True
    count_params = ("n_iters", "n_actions")
    score_needs = {
        "simulate_strategy=sample": (0.0, math.inf, "a child is drawn with probability proportional to its reward"),
        "aggregate=edge": (0.0, math.inf, "the vote adds the rewards of an answer's nodes"),
        "aggregate=edge_inverse_depth": (0.0, math.inf, "the vote adds the rewards of an answer's nodes"),
    }

    def request_shape(self) -> RequestShape:
        return RequestShape(self.n_actions, self.step.max_step_tokens, "step.max_step_tokens")

    def __init__(
        self,
        n_iters: int = 10,
        w_exp: float = 1.0,
        n_actions: int = 4,
        cum_reward: str = "mean",
        calc_q: str = "max",
        simulate_strategy: str = "max",
        output_strategy: str = "max_reward",
        aggregate: str | None = None,
        temperature: float = 0.7,
        top_p: float = 1.0,
        step: StepConfig | Mapping[str, Any] | None = None,
        record_tree: bool = False,
    ) -> None:
        for key, value, allowed in (("cum_reward", cum_reward, tuple(REDUCERS)), ("calc_q", calc_q, tuple(REDUCERS)),
                                    ("simulate_strategy", simulate_strategy, SIMULATE),
                                    ("output_strategy", output_strategy, OUTPUTS)):
            if value not in allowed:
                raise ValueError(f"strategy.{key} must be one of {allowed}, got {value!r}")
        if aggregate is not None and aggregate not in WEIGHT_POLICIES:
            raise ValueError(f"strategy.aggregate must be null or one of {WEIGHT_POLICIES}, got {aggregate!r}")
        if not (isinstance(w_exp, (int, float)) and w_exp >= 0):
            raise ValueError(f"strategy.w_exp must be a number >= 0, got {w_exp!r}")
        self.n_iters, self.w_exp, self.n_actions = n_iters, float(w_exp), n_actions
        self.cum_reward, self.calc_q = cum_reward, calc_q
        self.simulate_strategy, self.output_strategy, self.aggregate = simulate_strategy, output_strategy, aggregate
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.step = StepConfig.coerce(step)
        self.record_tree = bool(record_tree)

    # ---- the tree policy ---------------------------------------------------------
    def q(self, n: MCTSNode) -> float:
        return REDUCERS[self.calc_q](n.cum_rewards) if n.cum_rewards else n.reward

    def uct(self, n: MCTSNode) -> float:
        assert n.parent is not None
        parent_visits = max(1, n.parent.visits)
        return self.q(n) + self.w_exp * math.sqrt(math.log(parent_visits) / max(1, n.visits))

    def uct_select(self, n: MCTSNode) -> MCTSNode:
        """The child with the highest UCT bound (the first among ties)."""
        assert n.children
        return max(n.children, key=self.uct)

    def select(self, root: MCTSNode) -> list[MCTSNode]:
        path, n = [], root
        while True:
            path.append(n)
            if not n.children or n.is_terminal:
                return path
            n = self.uct_select(n)

    def back_propagate(self, path: list[MCTSNode]) -> float:
        """Each node on the path appends the reduced rewards from it to the path's end."""
        rewards: list[float] = []
        cum = -math.inf
        for n in reversed(path):
            rewards.append(n.reward)
            cum = REDUCERS[self.cum_reward](rewards[::-1])
            n.cum_rewards.append(cum)
        return cum

    def simulate_choice(self, ctx: SolveContext, children: list[MCTSNode]) -> int:
        rewards = [c.reward for c in children]
        if self.simulate_strategy == "max":
            return max(range(len(rewards)), key=lambda i: (rewards[i], -i))
        if self.simulate_strategy == "sample" and sum(rewards) > 0:
            return int(ctx.rng.choice(len(rewards), p=[r / sum(rewards) for r in rewards]))
        return int(ctx.rng.integers(len(rewards)))

    # ---- the search ---------------------------------------------------------------
    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        prompt = ctx.prompt_ids(problem)
        sampling = Sampling.for_verifier(ctx, self.temperature, self.top_p)
        stats = SearchStats()
        made: list[MCTSNode] = []
        root = MCTSNode(node=Node.root())
        made.append(root)
        paths: list[list[int]] = []

        iters = 0

        async def expand_node(n: MCTSNode) -> bool:
            """Give `n` its children; False when the budget stopped it."""
            if ctx.ledger.exhausted:
                stats.budget_exhausted = True
                return False
            kids = await expand(ctx, prompt, n.node, self.n_actions, self.step, sampling, stats)
            if not kids:
                stats.budget_exhausted = True
                return False
            stats.steps += 1
            rewards = await score_nodes(ctx, problem, kids)
            n.children = []
            for k, r in zip(kids, rewards):
                c = MCTSNode(node=k, parent=n, reward=float(r), id=len(made), born=iters)
                made.append(c)
                n.children.append(c)
            return not stats.budget_exhausted

        while iters < self.n_iters and not ctx.ledger.exhausted and not stats.budget_exhausted:
            path = self.select(root)
            leaf = path[-1]
            ok = True
            if not leaf.is_terminal:
                ok = await expand_node(leaf)
                if ok and self.simulate_strategy != "none":
                    n = leaf
                    while n.children and not n.is_terminal:
                        n = n.children[self.simulate_choice(ctx, n.children)]
                        path.append(n)
                        if n.is_terminal or not await expand_node(n):
                            break
            if not ok and leaf.children is None:
                break  # nothing generated this simulation: the budget is spent
            self.back_propagate(path)
            paths.append([n.id for n in path])
            iters += 1
        return self.result(problem, ctx, root, made, stats, iters, paths)

    # ---- the answer -----------------------------------------------------------------
    def answer_path(self, root: MCTSNode, made: list[MCTSNode]) -> MCTSNode | None:
        def cum(n: MCTSNode) -> float:
            return REDUCERS[self.cum_reward]([m.reward for m in _path(n)])

        solutions = [n for n in made if n.is_terminal and n.node.finish_reason != "budget"]
        if self.output_strategy == "follow_max":
            n = root
            while n.children and not n.is_terminal:
                n = max(n.children, key=lambda c: c.reward)
            return n if n is not root else None
        if solutions:
            return max(solutions, key=lambda n: (cum(n), -n.id))
        leaves = [n for n in made if n.parent is not None and not n.children]
        return max(leaves, key=lambda n: (cum(n), -n.id)) if leaves else None

    def vote(self, root: MCTSNode, ctx: SolveContext) -> str | None:
        """RAP's `MCTSAggregation`: each terminal node adds its weight to its answer, and
        every ancestor adds its reward once per answer found below it."""
        weights: dict[str, float] = {}
        key_of: dict[str, str] = {}

        def add(answer: str, w: float) -> None:
            k = ctx.task.answer_key(answer)
            key_of.setdefault(k, answer)
            weights[k] = weights.get(k, 0.0) + w

        def visit(n: MCTSNode) -> list[tuple[str, int]]:
            if n.is_terminal:
                a = ctx.extract_answer(n.node.text()) if n.node.finish_reason != "budget" else None
                if a is None:
                    return []
                add(a, {"edge": n.reward, "edge_inverse_depth": n.reward / max(1, n.depth), "uniform": 1.0}[
                    self.aggregate])
                return [(a, n.depth)]
            found: list[tuple[str, int]] = []
            depths: dict[str, list[int]] = {}
            for c in n.children or []:
                got = visit(c)
                found.extend(got)
                for a, d in got:
                    depths.setdefault(a, []).append(d)
            if n.parent is not None:
                for a, ds in depths.items():
                    if self.aggregate == "edge":
                        add(a, n.reward)
                    elif self.aggregate == "edge_inverse_depth":
                        add(a, n.reward / (sum(ds) / len(ds)))
            return found

        visit(root)
        return key_of[max(weights, key=weights.__getitem__)] if weights else None

    def result(self, problem: Problem, ctx: SolveContext, root: MCTSNode, made: list[MCTSNode],
               stats: SearchStats, iters: int, paths: list[list[int]]) -> Result:
        chosen = self.answer_path(root, made)
        keep = [n for n in made if n.parent is not None and n.is_terminal]
        if chosen is not None and chosen not in keep:
            keep.append(chosen)
        cands = []
        for n in keep:
            c = n.node.to_candidate(ctx)
            c.score = n.reward
            if not n.node.finished:
                c.finish_reason = "budget"
            c.extra.update({"node": n.id, "visits": n.visits, "q": self.q(n)})
            cands.append(c)
        cluster_answers(ctx.task, cands)
        selected = keep.index(chosen) if chosen is not None else None
        answer = cands[selected].answer if selected is not None else None
        if self.aggregate is not None:
            voted = self.vote(root, ctx)
            if voted is not None:
                key = ctx.task.answer_key(voted)
                members = [i for i, c in enumerate(cands) if c.answer is not None and ctx.task.answer_key(c.answer) == key]
                selected = max(members, key=lambda i: (cands[i].score or 0.0, -i)) if members else selected
                answer = voted
        extra: dict[str, Any] = {
            "iterations": iters, "nodes": len(made) - 1, "root_visits": root.visits,
            "root_q": self.q(root) if root.cum_rewards else None, "max_depth": max(n.depth for n in made),
            "n_actions": self.n_actions, "w_exp": self.w_exp,
        }
        if self.record_tree:
            extra["paths"] = paths
            extra["tree"] = [{"id": n.id, "parent": n.parent.id if n.parent else None, "depth": n.depth, "born": n.born,
                              "reward": n.reward, "cum_rewards": list(n.cum_rewards),
                              "finish_reason": n.node.finish_reason} for n in made]
        return Result(problem_id=problem.id, answer=answer, candidates=cands, selected=selected,
                      stats=stats.as_dict(ctx, **extra))


def _path(n: MCTSNode) -> list[MCTSNode]:
    out = []
    while n.parent is not None:
        out.append(n)
        n = n.parent
    return out[::-1]
