"""Entropy-aware branching (EAGer): fork a new sequence only where the model is unsure.

Scalena, Zotos, Fersini, Nissim and Üstün 2025, "EAGer: Entropy-Aware GEneRation for
Adaptive Inference-Time Scaling" (arXiv:2510.11170).

EAGer-init. A problem starts with one sequence. At every generated token the top-K
entropy of the next-token distribution is read,

    H_t = - sum_{v in top-K} p~_v log p~_v     (p~: the top-K probabilities renormalised),

and where `H_t` exceeds the threshold the sequence *branches*. At most `M` sequences per
problem (`max_sequences` in the paper's code). Where the model is sure, nothing is
duplicated, so an easy problem costs far less than `M` full samples.

The reference code (Omega-Reasoning/EAGer, `eager/entropy_generator_vllm.py`,
`VLLMGenerator.entropy_aware_generation`) is followed by default; each deviation is a
named option, the reference one override away:

- `fork: top2` (reference): at a fork the parent takes the most likely token (rank 1 of
  the top-K) and the new branch the second most likely (rank 2); both then go on by
  sampling. `fork: resample` (ttscale's earlier rule): the parent keeps its sampled token
  and the branch re-samples token t from the same distribution.
- `dynamic_entropy: true` (reference): the threshold at token t is
  `max(theta, percentile_q(entropies so far))`, q = `entropy_percentile` (99), over the
  entropies the problem's sequences produced themselves at earlier positions (a branch's
  shared prefix is not counted twice, its fork token is, as in the reference).
  `dynamic_entropy: false`: the fixed `theta`.
- `theta: 2.5` and `top_k: 20` are the reference's defaults (`main_vllm.py main`).

Decoding granularity. Generating token by token through the engine would be far too
slow, so sequences are decoded in chunks (`chunk_tokens`, one request per active
sequence per round, all rounds' requests awaited together, prefix as token IDs so the
engine's prefix cache serves it) with `logprobs=K`. The positions of a chunk whose
entropy exceeds the threshold are known exactly after the chunk; each one becomes a
fork, in a fixed order (round by round; within a round by position, then sequence id)
until `M` sequences exist. Under `fork: top2` the branch is `prefix[:t] + top-2 token`;
the parent keeps its continuation when its sampled token t was the top-1, otherwise it is
cut back to `prefix[:t] + top-1 token` and the rest of its chunk is discarded (those
tokens were paid for: `discarded_tokens`). Under `fork: resample` the branch's prompt is
`prompt + prefix[:t]` and it samples token t itself; nothing is discarded. A branch does
not fork again at its own first position (that is the fork it came from); a position
over the threshold met once the cap is reached is counted as a denied fork. With
`chunk_tokens: 1` and `fork: top2` every sequence advances one token per round, as in
the reference's token-synchronous loop (same forks, same dynamic threshold); larger
chunks differ only in *which* positions win the last slots when more than `M` would
fork, and in the dynamic threshold not yet seeing the tokens of branches still behind.
`max_tokens_without_branch` (reference: 1000): once that many positions pass without a
fork, branching ends for the problem (the reference then finishes every sequence without
logprobs); null: never. Not implemented: the reference's no-fork-after-`</think>` rule
(reasoning models).

EAGer-adapt: reallocating the budget without labels. Full parallel sampling spends `M`
sequences on every problem. A problem whose branching never reached `M` sequences
("the model agreed with itself") returns its unused sequences `M - used` to a
`BudgetPool`; a problem that reached the cap (it kept hitting high-entropy tokens: it
looks hard) draws up to `adapt_max_extra` sequences from the pool (default `3 M`, the
reference's `min(share, int(3*max_sequences))` in `main_vllm.py
run_and_evaluate_entropy_with_budget_easy`, the label-free "eager_adapt"). With
`adapt_generation: branching` (reference) they are produced by entropy-aware generation
again from the prompt, runs of EAGer-init capped at what is still missing, until the
drawn number exists (from the third run on with theta lowered by 10%, as the reference
does); each run is capped so the drawn number is never exceeded (the reference may
overshoot its share). `adapt_generation: sampling` (ttscale's earlier rule) samples them
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
import math
from typing import Any

from ttscale.strategy import RequestShape, Strategy
from ttscale.strategies.eager_rules import BudgetPool, dynamic_threshold
from ttscale.strategies.eager_rules import Seq as _Seq
from ttscale.strategies.sampling import draw_complete, plurality, score_candidates
from ttscale.strategies.steps import SELECTIONS as STEP_SELECTIONS
from ttscale.strategies.steps import select
from ttscale.task import cluster_answers
from ttscale.budget import BudgetExhausted
from ttscale.context import SolveContext
from ttscale.engine import GenerationRequest, entropy_from_logprobs
from ttscale.policy_tokens import remember
from ttscale.types import Candidate, Problem, Result

SELECTIONS = ("majority",) + STEP_SELECTIONS  # majority | argmax | weighted_vote
FORKS = ("top2", "resample")  # reference | ttscale's earlier rule
ADAPT_GENERATIONS = ("branching", "sampling")  # reference | ttscale's earlier rule


class EntropyBranching(Strategy):
    name = "entropy_branching"
    score_needs = {"selection=weighted_vote": (0.0, math.inf, "the vote weighs an answer class by the sum of its "
                                                           "scores, so negative scores would make a larger class weigh less")}
    count_params = ("M", "chunk_tokens", "max_tokens")

    def request_shape(self) -> RequestShape:
        return RequestShape(1, self.chunk_tokens, "chunk_tokens")  # one sequence, one chunk

    def __init__(
        self,
        M: int = 8,
        theta: float = 2.5,
        top_k: int = 20,
        chunk_tokens: int = 32,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 1.0,
        adapt: bool = True,
        adapt_max_extra: int | None = None,
        selection: str = "majority",
        pool: BudgetPool | None = None,
        fork: str = "top2",
        dynamic_entropy: bool = True,
        entropy_percentile: float = 99.0,
        adapt_generation: str = "branching",
        max_tokens_without_branch: int | None = 1000,
    ) -> None:
        if M < 1:
            raise ValueError(f"strategy.M must be >= 1, got {M}")
        if top_k < 2:
            raise ValueError(f"strategy.top_k must be >= 2 (entropy of the top-k), got {top_k}")
        if chunk_tokens < 1 or max_tokens < 1:
            raise ValueError("strategy.chunk_tokens and strategy.max_tokens must be >= 1")
        if selection not in SELECTIONS:
            raise ValueError(f"strategy.selection must be one of {SELECTIONS}, got {selection!r}")
        if fork not in FORKS:
            raise ValueError(f"strategy.fork must be one of {FORKS}, got {fork!r}")
        if adapt_generation not in ADAPT_GENERATIONS:
            raise ValueError(f"strategy.adapt_generation must be one of {ADAPT_GENERATIONS}, got {adapt_generation!r}")
        if not 0.0 <= entropy_percentile <= 100.0:
            raise ValueError(f"strategy.entropy_percentile must be in [0, 100], got {entropy_percentile}")
        if max_tokens_without_branch is not None and max_tokens_without_branch < 1:
            raise ValueError(f"strategy.max_tokens_without_branch must be >= 1 or null, got {max_tokens_without_branch}")
        self.max_tokens_without_branch = max_tokens_without_branch
        self.fork, self.dynamic_entropy = fork, bool(dynamic_entropy)
        self.entropy_percentile, self.adapt_generation = float(entropy_percentile), adapt_generation
        self.M, self.theta, self.top_k = M, theta, top_k
        self.chunk_tokens, self.max_tokens = chunk_tokens, max_tokens
        self.temperature, self.top_p = temperature, top_p
        self.adapt = adapt
        self.adapt_max_extra = 3 * M if adapt_max_extra is None else adapt_max_extra
        self.selection = selection
        self.pool = pool or BudgetPool()

    @property
    def requires_verifier(self) -> bool:  # type: ignore[override]
        return self.selection != "majority"

    # ---- EAGer-init ---------------------------------------------------------
    async def _branch(
        self, prompt: list[int], ctx: SolveContext, cap: int | None = None, theta: float | None = None
    ) -> tuple[list[_Seq], dict[str, Any]]:
        """One EAGer-init run from the prompt: at most `cap` sequences (default `M`), base
        threshold `theta` (default `self.theta`)."""
        cap = self.M if cap is None else cap
        theta = self.theta if theta is None else theta
        eos = getattr(ctx.tokenizer, "eos_token_id", None)
        seqs = [_Seq(id=0, ids=[], lps=[])]
        forks: list[dict[str, Any]] = []
        denied = rounds = requests = forced = discarded = 0
        budget_stop = branching_off = False
        last_fork = -1  # position of the latest fork (the reference's tokens_since_last_branch)
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
                    max_tokens=cap_s, logprobs=self.top_k, seed=ctx.next_seed(),
                )
                for s, cap_s in jobs
            ]
            outs = await asyncio.gather(*(ctx.generate(r) for r in reqs), return_exceptions=True)
            rounds += 1
            requests += len(reqs)
            wanted: list[tuple[int, int, float, dict[int, float]]] = []  # (position, seq id, entropy, top-K)
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
                tops = list(comp.top_logprobs or [])
                for i in range(len(comp.token_ids)):
                    top = tops[i] if i < len(tops) else None
                    h = entropy_from_logprobs(top) if top else math.nan
                    s.hs.append(h)
                    p = start + i
                    if top and h > theta and p != s.fork_at:
                        wanted.append((p, s.id, h, top))
                if comp.finish_reason != "length":
                    s.finished, s.finish_reason = True, comp.finish_reason  # "stop" | "abort"
                elif len(s.ids) >= self.max_tokens:
                    s.finished, s.finish_reason = True, "length"
            for p, sid, h, top in sorted(wanted, key=lambda w: (w[0], w[1])):
                parent = seqs[sid]
                if p >= len(parent.ids):  # cut away by an earlier top-1 fork of this round
                    continue
                gap = self.max_tokens_without_branch
                if branching_off or (gap is not None and p > last_fork + gap):
                    branching_off = True  # as the reference: once off, off for good
                    continue
                threshold = dynamic_threshold([s.hs for s in seqs], p, theta, self.entropy_percentile) if self.dynamic_entropy else theta
                if not h > threshold:
                    continue
                if len(seqs) >= cap:
                    denied += 1
                    continue
                if self.fork == "top2":
                    ranked = sorted(top.items(), key=lambda kv: (-kv[1], kv[0]))
                    if len(ranked) < 2:
                        continue
                    (t1, lp1), (t2, lp2) = ranked[0], ranked[1]
                    if parent.ids[p] != t1:  # the parent takes the top-1 token: cut back and go on from it
                        discarded += len(parent.ids) - p
                        forced += 1
                        del parent.ids[p:], parent.lps[p:], parent.hs[p + 1:]
                        parent.ids.append(t1)
                        parent.lps.append(lp1)
                        self._settle(parent, eos)
                    child = _Seq(id=len(seqs), ids=parent.ids[:p] + [t2], lps=parent.lps[:p] + [lp2],
                                 hs=[math.nan] * p + [h], parent=sid, fork_at=p)
                    forced += 1
                    self._settle(child, eos)
                else:
                    child = _Seq(id=len(seqs), ids=parent.ids[:p], lps=parent.lps[:p], hs=[math.nan] * p,
                                 parent=sid, fork_at=p)
                seqs.append(child)
                last_fork = max(last_fork, p)
                forks.append({"parent": sid, "child": child.id, "pos": p, "entropy": h,
                              "threshold": threshold})
        for s in seqs:
            if not s.finished:  # the budget stopped it
                s.finished, s.finish_reason = True, "budget"
        return seqs, {"forks": forks, "denied_forks": denied, "rounds": rounds, "requests": requests,
                      "budget_exhausted": budget_stop, "forced_tokens": forced, "discarded_tokens": discarded,
                      "branching_ended": branching_off}

    def _settle(self, s: _Seq, eos: int | None) -> None:
        """Whether a sequence that just took a forced token is finished."""
        if eos is not None and s.ids and s.ids[-1] == eos:
            s.finished, s.finish_reason = True, "stop"
        elif len(s.ids) >= self.max_tokens:
            s.finished, s.finish_reason = True, "length"
        else:
            s.finished, s.finish_reason = False, None

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
    async def _extra_branching(self, prompt: list[int], ctx: SolveContext, n: int, first_id: int) -> tuple[list[_Seq], int]:
        """`n` more sequences by entropy-aware generation (the reference's eager_adapt): EAGer-init
        runs from the prompt, each capped at what is still missing, theta lowered by 10% from
        the third run on. Stops early only when the budget is spent. Returns (sequences, runs)."""
        out: list[_Seq] = []
        runs = 0
        while len(out) < n:
            runs += 1
            theta = self.theta * 0.9 if runs > 2 else self.theta
            got, st = await self._branch(prompt, ctx, cap=n - len(out), theta=theta)
            offset = first_id + len(out)
            for s in got:
                s.id += offset
                if s.parent is not None:
                    s.parent += offset
            out += got
            if st["budget_exhausted"]:
                break
        return out, runs

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
        drawn = deposited = extra_runs = 0
        if self.adapt:
            if hit_cap:
                drawn = self.pool.draw(self.adapt_max_extra)
                if self.adapt_generation == "branching":
                    extra_seqs, extra_runs = await self._extra_branching(prompt, ctx, drawn, len(seqs))
                else:
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
            "fork_rule": self.fork,
            "dynamic_entropy": self.dynamic_entropy,
            "hit_cap": hit_cap,
            "extra_sequences": len(extra_seqs),
            "extra_runs": extra_runs,
            "pool_drawn": drawn,
            "pool_deposited": deposited,
            "pool": self.pool.snapshot(),
            "init_generated_tokens": init_tokens,
            "generated_tokens": ctx.ledger.usage.generated_tokens,
            "full_parallel_tokens": full_parallel,
            "tokens_saved": full_parallel - init_tokens,
            # every token of the init sequences is shared, kept-generated or forced
            "prefix_shared_tokens": sum(lengths) - (init_tokens - stats["discarded_tokens"]) - stats["forced_tokens"],
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
        remember(ctx, text, s.ids)  # for a judge riding the policy's cache (ttscale.policy_tokens)
        return Candidate(
            text=text,
            answer=ctx.extract_answer(text),
            num_tokens=len(s.ids),
            finish_reason=s.finish_reason,
            mean_logprob=(sum(s.lps) / len(s.lps)) if s.lps else None,
            extra={"seq": s.id, "parent": s.parent, "fork_at": s.fork_at, "own_tokens": s.own},
        )
