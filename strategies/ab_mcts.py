"""AB-MCTS-A: adaptive branching tree search, wider or deeper by Thompson sampling.

Inoue et al. 2025, "Wider or Deeper? Scaling LLM Inference-Time Compute with Adaptive
Branching Tree Search" (arXiv:2503.04412), the AB-MCTS-A variant (node aggregation);
reference code SakanaAI/treequest @e6865b7 `src/treequest/algos/ab_mcts_a/` (`ABMCTSA`,
`NodeProbState`, `ProbabilisticDist`), read point by point; hyperparameters keep its names.

A node is a whole answer with its verifier score. Each of the `generation_budget`
generations (treequest's `step` calls) walks down from the root: at a node with
children, Thompson sampling between GEN (a new child of this node: "wider") and CONT
(go into an existing child: "deeper"); CONT picks the child by Thompson sampling over
the children's posteriors, and the walk goes on from there; a node without children is
always expanded (GEN). The new child is generated, scored, and the score is told:
the parent's GEN posterior and the new child's own posterior get it; every ancestor
above the parent gets it in its CONT posterior and in the posterior of the child the
path went through (`_backpropagate`). With one policy model treequest's
`multiarm_bandit_thompson` and `stack` coincide, so no model selection is offered.

Posteriors are closed form (no probabilistic programming), as `ProbabilisticDist`:
`dist_type: gaussian` (default) a Normal-Inverse-Gamma over (mu, sigma^2) with prior
`m, kappa, nu, tau_square` = 0, 1, 1, 0.1, updated with every observation (Murphy,
PML2 Sec. 3.4.3.3) and sampled as sigma^2 ~ InvGamma(nu/2, nu tau^2 / 2), mu ~
N(m, sigma^2 / kappa); `dist_type: beta` a Beta(a, b) with Jeffreys' prior 0.5, 0.5,
updated a += r, b += 1 - r (scores in [0, 1]). `reward_average_priors` sets the prior
mean (treequest's option). Draws use the problem's seeded generator.

What a child of a node is (treequest's `generate_fn(parent_state)`, the paper's
refinement): a child of the root is a fresh sample; a child of an answer is a
*refinement* of it, generated in the same assistant turn: the prompt is the task prompt,
the parent's answer and `refine_prompt` (a cue to check and rewrite it), and the child is
the text generated after the cue, a whole new answer scored on its own. Each generation
is a complete sample of up to `max_tokens` (`sampling.max_tokens`) new tokens, so every
node gets a best-of-N sample's allowance; under a token budget a generation is launched
only when the budget pays for all of it (no answer is cut by the budget). `batch_size`
generations are chosen before any is told and run together (treequest's `ask_batch`).

The answer is the best-scored node with an answer (treequest's `top_k(k=1)`, which
knows no answers: a verifier may score a text without one, an empty refinement, above a
wrong answer); every node is a candidate (a search pool: `independent_samples` is false).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ttscale.strategy import RequestShape, Strategy
from ttscale.strategies.sampling import score_candidates
from ttscale.task import cluster_answers
from ttscale.context import SolveContext
from ttscale.engine import GenerationRequest
from ttscale.types import Candidate, Problem, Result

DIST_TYPES = ("gaussian", "beta")
DEFAULT_PRIORS = {"gaussian": {"m": 0.0, "kappa": 1.0, "nu": 1.0, "tau_square": 0.1}, "beta": {"a": 0.5, "b": 0.5}}
REFINE_PROMPT = "\n\nLet me check this solution step by step and write a corrected, complete solution.\n\n"


class Posterior:
    """treequest's `ProbabilisticDist`: a closed-form posterior over a node's mean score."""

    def __init__(self, dist_type: str, prior: dict[str, float]) -> None:
        self.dist_type = dist_type
        self.prior = dict(prior)
        self.params = dict(prior)
        self.obs: list[float] = []

    def tell(self, obs: float) -> None:
        obs = float(obs)
        self.obs.append(obs)
        if self.dist_type == "beta":
            self.params["a"] += obs
            self.params["b"] += 1.0 - obs
            return
        n = len(self.obs)
        ave = float(np.mean(self.obs))
        ss = float(np.var(self.obs)) * n
        m, kappa, nu, tau2 = (self.prior[k] for k in ("m", "kappa", "nu", "tau_square"))
        self.params = {
            "m": (kappa * m + n * ave) / (kappa + n),
            "kappa": kappa + n,
            "nu": nu + n,
            "tau_square": (nu * tau2 + ss + n * kappa * (m - ave) ** 2 / (kappa + n)) / (nu + n),
        }

    def draw(self, rng: np.random.Generator) -> float:
        p = self.params
        if self.dist_type == "beta":
            return float(rng.beta(p["a"], p["b"]))
        sigma2 = (p["nu"] * p["tau_square"] / 2.0) / rng.gamma(p["nu"] / 2.0)  # InvGamma(nu/2, scale)
        return float(rng.normal(p["m"], math.sqrt(sigma2 / p["kappa"])))


@dataclass(eq=False)
class ABNode:
    parent: "ABNode | None"
    text: str = ""
    score: float = 0.0
    candidate: Candidate | None = None
    depth: int = 0
    id: int = 0
    children: list["ABNode"] = field(default_factory=list)
    gen: Posterior | None = None  # GEN vs CONT posteriors (treequest's gen_vs_cont_probas)
    cont: Posterior | None = None
    child_post: list[Posterior] = field(default_factory=list)  # node_probas, one per child


class ABMCTSA(Strategy):
    """AB-MCTS-A (Inoue et al. 2025; treequest `ABMCTSA`). See the module doc.

    generation_budget: answers generated per problem (nodes of the tree).
    dist_type: `gaussian` | `beta`; prior: the prior's parameters (null: treequest's);
    reward_average_priors: the prior mean (null: the prior's).
    batch_size: generations chosen together and run in flight together.
    refine_prompt: the cue after the parent's answer that asks for a refined one.
    """

    name = "ab_mcts_a"
    requires_verifier = True
    count_params = ("generation_budget", "batch_size")
    score_needs = {"dist_type=beta": (0.0, 1.0, "the Beta posterior is updated with a += r, b += 1 - r")}

    def request_shape(self) -> RequestShape:
        return RequestShape(1, self.max_tokens, "max_tokens")  # one whole answer

    def __init__(
        self,
        generation_budget: int = 16,
        dist_type: str = "gaussian",
        prior: dict[str, float] | None = None,
        reward_average_priors: float | None = None,
        batch_size: int = 1,
        refine_prompt: str = REFINE_PROMPT,
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_tokens: int = 256,
    ) -> None:
        if dist_type not in DIST_TYPES:
            raise ValueError(f"strategy.dist_type must be one of {DIST_TYPES}, got {dist_type!r}")
        params = dict(DEFAULT_PRIORS[dist_type])
        extra = set(prior or {}) - set(params)
        if extra:
            raise ValueError(f"strategy.prior has keys {sorted(extra)} not of a {dist_type} prior: {sorted(params)}")
        params.update({k: float(v) for k, v in (prior or {}).items()})
        if reward_average_priors is not None:
            r = float(reward_average_priors)
            params.update({"m": r} if dist_type == "gaussian" else {"a": r, "b": 1.0 - r})
        if any(v <= 0 for k, v in params.items() if k != "m"):
            raise ValueError(f"strategy.prior: every parameter but m must be > 0, got {params}")
        if not isinstance(refine_prompt, str) or not refine_prompt:
            raise ValueError("strategy.refine_prompt must be a non-empty string")
        self.generation_budget, self.batch_size = generation_budget, batch_size
        self.dist_type, self.prior_params = dist_type, params
        self.refine_prompt = refine_prompt
        self.temperature, self.top_p, self.max_tokens = float(temperature), float(top_p), int(max_tokens)

    def posterior(self) -> Posterior:
        return Posterior(self.dist_type, self.prior_params)

    # ---- ask: where the next answer is generated ------------------------------------
    def choose(self, node: ABNode, rng: np.random.Generator) -> str:
        """GEN or CONT at a node with children (treequest `select_next`, thompson)."""
        if node.gen is None:
            node.gen, node.cont = self.posterior(), self.posterior()
        if not node.child_post:
            return "GEN"
        g, c = node.gen.draw(rng), node.cont.draw(rng)  # ties: the first, GEN
        return "GEN" if g >= c else "CONT"

    def ask(self, root: ABNode, rng: np.random.Generator, log: list[str]) -> ABNode:
        node = root
        while node.children:
            choice = self.choose(node, rng)
            log.append(choice)
            if choice == "GEN":
                return node
            draws = [p.draw(rng) for p in node.child_post]
            node = node.children[int(np.argmax(draws))]
        self.choose(node, rng)  # a leaf: its posteriors are created, GEN
        return node

    # ---- tell: the score goes up the path -------------------------------------------
    def tell(self, parent: ABNode, child: ABNode) -> None:
        s = child.score
        if parent.gen is None:
            parent.gen, parent.cont = self.posterior(), self.posterior()
        parent.children.append(child)
        post = self.posterior()
        post.tell(s)  # register_new_child_node
        parent.child_post.append(post)
        parent.gen.tell(s)  # update_action_reward
        cur = parent
        while cur.parent is not None:  # update_node_reward
            up = cur.parent
            assert up.cont is not None
            up.cont.tell(s)
            up.child_post[up.children.index(cur)].tell(s)
            cur = up

    # ---- the search ---------------------------------------------------------------
    def prompt_for(self, ctx: SolveContext, base: list[int], parent: ABNode) -> list[int]:
        if parent.parent is None:
            return base
        return base + list(ctx.tokenizer.encode(parent.text + self.refine_prompt))

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        base = ctx.prompt_ids(problem)
        wants_lp = ctx.verifier is not None and ctx.verifier.needs_logprobs
        root = ABNode(parent=None)
        nodes: list[ABNode] = []
        log: list[str] = []
        stop = "generation_budget"
        while len(nodes) < self.generation_budget:
            k = min(self.batch_size, self.generation_budget - len(nodes))
            left = ctx.ledger.remaining_tokens
            if left is not None:
                k = min(k, left // self.max_tokens)
            calls = ctx.ledger.remaining_verifier_calls
            if calls is not None:
                k = min(k, calls)
            if k < 1 or ctx.ledger.exhausted:
                stop = "budget"
                break
            parents = [self.ask(root, ctx.rng, log) for _ in range(k)]
            reqs = [GenerationRequest(prompt_token_ids=self.prompt_for(ctx, base, p), n=1, temperature=self.temperature,
                                      top_p=self.top_p, max_tokens=self.max_tokens, logprobs=1 if wants_lp else None)
                    for p in parents]
            outs = await asyncio.gather(*(ctx.generate(r) for r in reqs))
            cands = []
            for out in outs:
                c = out.completions[0]
                cands.append(Candidate(text=c.text, answer=ctx.extract_answer(c.text), num_tokens=len(c.token_ids),
                                       finish_reason=c.finish_reason, mean_logprob=c.mean_logprob))
            await score_candidates(problem, ctx, cands)
            for p, cand in zip(parents, cands):
                child = ABNode(parent=p, text=cand.text, score=cand.score if cand.score is not None else 0.0,
                               candidate=cand, depth=p.depth + 1, id=len(nodes) + 1)
                cand.extra.update({"node": child.id, "parent": p.id, "depth": child.depth})
                nodes.append(child)
                self.tell(p, child)
            if any(c.score is None for c in cands):  # the verifier budget did not cover them
                stop = "budget"
                break
        return self.result(problem, ctx, root, nodes, log, stop)

    def result(self, problem: Problem, ctx: SolveContext, root: ABNode, nodes: list[ABNode], log: list[str],
               stop: str) -> Result:
        cands = [n.candidate for n in nodes if n.candidate is not None]
        cluster_answers(ctx.task, cands)
        scored = [i for i, c in enumerate(cands) if c.score is not None]
        scored = [i for i in scored if cands[i].answer is not None] or scored  # an answer first
        sel = max(scored, key=lambda i: (cands[i].score, -i)) if scored else (0 if cands else None)
        u = ctx.ledger.usage
        stats: dict[str, Any] = {
            "generations": len(nodes), "stopped": stop, "choices": log,
            "gen_choices": log.count("GEN"), "cont_choices": log.count("CONT"),
            "root_children": len(root.children), "max_depth": max((n.depth for n in nodes), default=0),
            "refinements": sum(n.depth > 1 for n in nodes), "budget_exhausted": stop == "budget" or ctx.ledger.exhausted,
            "generated_tokens": u.generated_tokens, "verifier_calls": u.verifier_calls,
        }
        return Result(problem_id=problem.id, answer=cands[sel].answer if sel is not None else None, candidates=cands,
                      selected=sel, stats=stats)
