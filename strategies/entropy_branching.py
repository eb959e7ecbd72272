"""Entropy-aware branching (EAGer): fork a new sequence only where the model is unsure.

Scalena, Zotos, Fersini, Nissim and Üstün 2025, "EAGer: Entropy-Aware GEneRation for
Adaptive Inference-Time Scaling" (arXiv:2510.11170).

EAGer-init. A problem starts with one sequence. At every generated token the top-K
entropy of the next-token distribution is read,

    H_t = - sum_{v in top-K} p~_v log p~_v     (p~: the top-K probabilities renormalised),

and where `H_t > theta` the sequence *branches*: a new sequence shares the prefix before
token t and samples its own token t (then goes on independently). At most `M` sequences
per problem (`max_sequences` in the paper's code). Where the model is sure, nothing is
duplicated, so an easy problem costs far less than `M` full samples.

Decoding granularity. Generating token by token through the engine would be far too
slow, so sequences are decoded in chunks (`chunk_tokens`, one request per active
sequence per round, all rounds' requests awaited together, prefix as token IDs so the
engine's prefix cache serves it) with `logprobs=K`. The positions of a chunk whose
entropy exceeds `theta` are known exactly after the chunk; each one becomes a fork: the
branch is a new sequence whose prompt is `prompt + prefix[:t]` and which resamples token
t. Nothing generated is thrown away (the parent keeps its own continuation), and forks
happen exactly at the positions with `H_t > theta` — never elsewhere — in a fixed order
(round by round; within a round by position, then sequence id) until `M` sequences
exist. A branch does not fork again at its own first position (that is the fork it came
from); a position with `H_t > theta` met once the cap is reached is counted as a denied
fork. This matches token-synchronous decoding except for *which* positions win the last
slots when more than `M` would fork.

EAGer-adapt: reallocating the budget without labels. Full parallel sampling spends `M`
sequences on every problem. A problem whose branching never reached `M` sequences
("the model agreed with itself") returns its unused sequences `M - used` to a
`BudgetPool`; a problem that reached the cap (it kept hitting high-entropy tokens: it
looks hard) draws up to `adapt_max_extra` sequences from the pool and samples them
afresh from the prompt (one request, `n = extra`). The pool belongs to the strategy
instance, which the runner builds once per run, so it is shared by all the problems the
run solves, concurrently. Its `deposit`/`draw` never await, so under asyncio each is
atomic; the invariant is that the sequences used by all problems together never exceed
`M` per problem solved so far. Reallocation is greedy in completion order: a hard
problem draws what easy problems have returned *by the time its EAGer-init ends* (the
paper reallocates after a first pass over the whole dataset; a streaming runner cannot
wait for that without blocking its workers). Deterministic given the order in which
problems finish. A per-problem ledger budget (`budget.max_tokens`) still caps each
problem's tokens; the pool only moves sequences.

Final answer: majority vote over all sequences (`selection: majority`), or with a
verifier `weighted_vote` (verifier-weighted majority) or `argmax` (highest score).

`Result.stats`: sequences, forks (parent, child, position, entropy), denied forks,
whether the cap was hit, rounds and requests, generated tokens, the tokens `M`
full parallel samples would have used (`M` x the mean length of the sequences
produced: an estimate, since those samples were never drawn) and the difference
(`tokens_saved`), the prefix tokens shared instead of regenerated (exact), and the
pool's deposits/draws.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ttscale.strategy import RequestShape, Strategy
from ttscale.strategies.sampling import draw_complete, plurality, score_candidates
from ttscale.strategies.steps import SELECTIONS as STEP_SELECTIONS
from ttscale.strategies.steps import select
from ttscale.task import cluster_answers
from ttscale.budget import BudgetExhausted
from ttscale.context import SolveContext
from ttscale.engine import GenerationRequest, entropy_from_logprobs
from ttscale.types import Candidate, Problem, Result

SELECTIONS = ("majority",) + STEP_SELECTIONS  # majority | argmax | weighted_vote


class BudgetPool:
    """Sequences returned by problems that did not need them, for problems that look hard.

    Shared by every problem a strategy instance solves. `deposit` and `draw` are plain
    synchronous methods (no `await` inside), so each runs atomically under asyncio."""

    def __init__(self) -> None:
        self.available = 0
        self.deposited = 0
        self.drawn = 0
        self.donors = 0
        self.takers = 0

    def deposit(self, sequences: int) -> None:
        if sequences > 0:
            self.available += sequences
            self.deposited += sequences
            self.donors += 1

    def draw(self, wanted: int) -> int:
        got = max(0, min(wanted, self.available))
        self.available -= got
        self.drawn += got
        if got:
            self.takers += 1
        return got

    def snapshot(self) -> dict[str, int]:
        return {"available": self.available, "deposited": self.deposited, "drawn": self.drawn,
                "donors": self.donors, "takers": self.takers}


@dataclass
class _Seq:
    id: int
    ids: list[int]  # every token of the sequence, shared prefix included
    lps: list[float]  # log-probability of each token (parallel to ids)
    parent: int | None = None
    fork_at: int | None = None  # position of its first own token (exempt from forking)
    own: int = 0  # tokens this sequence generated itself
    finished: bool = False
    finish_reason: str | None = None


class EntropyBranching(Strategy):
    name = "entropy_branching"
    count_params = ("M", "chunk_tokens", "max_tokens")

    def request_shape(self) -> RequestShape:
        return RequestShape(1, self.chunk_tokens, "chunk_tokens")  # one sequence, one chunk

    def __init__(
        self,
        M: int = 8,
        theta: float = 2.0,
        top_k: int = 20,
        chunk_tokens: int = 32,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 1.0,
        adapt: bool = True,
        adapt_max_extra: int | None = None,
        selection: str = "majority",
        pool: BudgetPool | None = None,
    ) -> None:
        if M < 1:
            raise ValueError(f"strategy.M must be >= 1, got {M}")
        if top_k < 2:
            raise ValueError(f"strategy.top_k must be >= 2 (entropy of the top-k), got {top_k}")
        if chunk_tokens < 1 or max_tokens < 1:
            raise ValueError("strategy.chunk_tokens and strategy.max_tokens must be >= 1")
        if selection not in SELECTIONS:
            raise ValueError(f"strategy.selection must be one of {SELECTIONS}, got {selection!r}")
        self.M, self.theta, self.top_k = M, theta, top_k
        self.chunk_tokens, self.max_tokens = chunk_tokens, max_tokens
        self.temperature, self.top_p = temperature, top_p
        self.adapt = adapt
        self.adapt_max_extra = M if adapt_max_extra is None else adapt_max_extra
        self.selection = selection
        self.pool = pool or BudgetPool()

    @property
    def requires_verifier(self) -> bool:  # type: ignore[override]
        return self.selection != "majority"

    # ---- EAGer-init ---------------------------------------------------------
    async def _branch(self, prompt: list[int], ctx: SolveContext) -> tuple[list[_Seq], dict[str, Any]]:
        seqs = [_Seq(id=0, ids=[], lps=[])]
        forks: list[dict[str, Any]] = []
        denied = rounds = requests = 0
        budget_stop = False
        while True:
            active = [s for s in seqs if not s.finished]
            if not active:
                break
            caps = self._caps(ctx, active)
            jobs = [(s, c) for s, c in zip(active, caps) if c > 0]
            if not jobs:
                budget_stop = True
                break
            reqs = [
                GenerationRequest(
                    prompt_token_ids=prompt + s.ids, n=1, temperature=self.temperature, top_p=self.top_p,
                    max_tokens=cap, logprobs=self.top_k, seed=ctx.next_seed(),
                )
                for s, cap in jobs
            ]
            outs = await asyncio.gather(*(ctx.generate(r) for r in reqs), return_exceptions=True)
            rounds += 1
            requests += len(reqs)
            wanted: list[tuple[int, int, float]] = []  # (position, seq id, entropy)
            for (s, _), out in zip(jobs, outs):
                if isinstance(out, BudgetExhausted):
                    s.finished, s.finish_reason = True, "budget"
                    budget_stop = True
                    continue
                if isinstance(out, BaseException):
                    raise out
                comp = out.completions[0]
                start = len(s.ids)
                s.ids.extend(comp.token_ids)
                s.lps.extend(comp.token_logprobs or [0.0] * len(comp.token_ids))
                s.own += len(comp.token_ids)
                for i, top in enumerate(comp.top_logprobs or []):
                    p = start + i
                    h = entropy_from_logprobs(top)
                    if h > self.theta and p != s.fork_at:
                        wanted.append((p, s.id, h))
                if comp.finish_reason != "length":
                    s.finished, s.finish_reason = True, comp.finish_reason  # "stop" | "abort"
                elif len(s.ids) >= self.max_tokens:
                    s.finished, s.finish_reason = True, "length"
            for p, sid, h in sorted(wanted, key=lambda w: (w[0], w[1])):
                if len(seqs) >= self.M:
                    denied += 1
                    continue
                parent = seqs[sid]
                child = _Seq(id=len(seqs), ids=parent.ids[:p], lps=parent.lps[:p], parent=sid, fork_at=p)
                seqs.append(child)
                forks.append({"parent": sid, "child": child.id, "pos": p, "entropy": h})
        for s in seqs:
            if not s.finished:  # the budget stopped it
                s.finished, s.finish_reason = True, "budget"
        return seqs, {"forks": forks, "denied_forks": denied, "rounds": rounds, "requests": requests,
                      "budget_exhausted": budget_stop}

    def _caps(self, ctx: SolveContext, active: list[_Seq]) -> list[int]:
        """Tokens each active sequence may generate this round: `chunk_tokens` (and what is
        left of `max_tokens`), with the ledger's remaining budget split among the round's
        requests *before* they are launched, so concurrent requests cannot overrun it."""
        want = [max(0, min(self.chunk_tokens, self.max_tokens - len(s.ids))) for s in active]
        left = ctx.ledger.remaining_tokens
        if left is None:
            return want
        caps = []
        share, extra = divmod(left, len(active))
        for i, w in enumerate(want):
            caps.append(min(w, share + (1 if i < extra else 0)))
        return caps

    # ---- EAGer-adapt: extra sequences for problems that hit the cap ------------
    async def _extra(self, prompt: list[int], ctx: SolveContext, n: int) -> list[_Seq]:
        if n <= 0:
            return []
        req = GenerationRequest(prompt_token_ids=prompt, n=n, temperature=self.temperature, top_p=self.top_p,
                                max_tokens=self.max_tokens, logprobs=1)
        # complete samples only: under a token budget as many as it pays for in full
        completions = await draw_complete(ctx, req)
        return [
            _Seq(id=-1, ids=list(c.token_ids), lps=list(c.token_logprobs or []), own=len(c.token_ids), finished=True,
                 finish_reason=c.finish_reason)
            for c in completions
        ]

    # ---- solve --------------------------------------------------------------
    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        prompt = ctx.prompt_ids(problem)
        seqs, stats = await self._branch(prompt, ctx)
        init_tokens = ctx.ledger.usage.generated_tokens
        hit_cap = len(seqs) >= self.M
        extra_seqs: list[_Seq] = []
        drawn = deposited = 0
        if self.adapt:
            if hit_cap:
                drawn = self.pool.draw(self.adapt_max_extra)
                extra_seqs = await self._extra(prompt, ctx, drawn)
                for i, s in enumerate(extra_seqs):
                    s.id = len(seqs) + i
            elif not stats["budget_exhausted"]:
                deposited = self.M - len(seqs)
                self.pool.deposit(deposited)

        every = seqs + extra_seqs
        cands = [self._candidate(ctx, s) for s in every]
        cluster_answers(ctx.task, cands)
        if self.selection == "majority":
            sel = plurality(cands)
        else:
            await score_candidates(problem, ctx, cands)
            weights = [c.score if c.score is not None else 0.0 for c in cands]
            sel = select(ctx, cands, weights, self.selection)

        lengths = [len(s.ids) for s in seqs]
        full_parallel = self.M * (sum(lengths) / len(lengths)) if lengths else 0.0
        stats.update({
            "sequences": len(seqs),
            "M": self.M,
            "theta": self.theta,
            "hit_cap": hit_cap,
            "extra_sequences": len(extra_seqs),
            "pool_drawn": drawn,
            "pool_deposited": deposited,
            "pool": self.pool.snapshot(),
            "init_generated_tokens": init_tokens,
            "generated_tokens": ctx.ledger.usage.generated_tokens,
            "full_parallel_tokens": full_parallel,
            "tokens_saved": full_parallel - init_tokens,
            "prefix_shared_tokens": sum(lengths) - init_tokens,
            "answer_classes": len({c.cluster for c in cands if c.cluster is not None}),
        })
        return Result(
            problem_id=problem.id,
            answer=cands[sel].answer if sel is not None else None,
            candidates=cands,
            selected=sel,
            stats=stats,
        )

    @staticmethod
    def _candidate(ctx: SolveContext, s: _Seq) -> Candidate:
        text = ctx.tokenizer.decode(s.ids)
        return Candidate(
            text=text,
            answer=ctx.extract_answer(text),
            num_tokens=len(s.ids),
            finish_reason=s.finish_reason,
            mean_logprob=(sum(s.lps) / len(s.lps)) if s.lps else None,
            extra={"seq": s.id, "parent": s.parent, "fork_at": s.fork_at, "own_tokens": s.own},
        )
