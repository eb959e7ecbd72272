"""Independent sampling shared by the parallel strategies: complete samples (the engine
batches them), answers extracted, classes assigned.

Under a token budget (`budget.max_tokens`) samples are never cut by the budget. They are
drawn in waves: a wave launches as many samples as the budget can pay for *in full*
(`remaining // max_tokens`, each sample holding its whole `max_tokens`), and the next
wave sees what the finished ones really used. Drawing stops when `n` samples are drawn
or the budget cannot pay for one more complete sample, so the budget is never exceeded
and every sample may use `sampling.max_tokens` like an unbudgeted one. Fewer than `n`
samples may be drawn; the number drawn and the waves are recorded in `Result.stats`
(`samples`, `sample_waves`, `samples_budget_stopped`). Without a token budget the `n`
samples go in one request, as before. `budget.samples=split` brings back the older rule
(the n samples in one request, each clamped to about `budget.max_tokens / n`; a sample
cut that way ends with `finish_reason="budget"`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from ttscale.budget import BudgetExhausted
from ttscale.context import SolveContext
from ttscale.engine import Completion, GenerationRequest
from ttscale.policy_tokens import remember
from ttscale.types import Candidate, Problem
from ttscale.task import cluster_answers

T = TypeVar("T")


async def draw_complete(
    ctx: SolveContext, request: GenerationRequest, stats: dict[str, Any] | None = None
) -> list[Completion]:
    """`request.n` completions of `request`, none cut by the token budget (see the module
    doc): one request without a budget, else waves of what the budget pays for in full.
    `stats` (optional) gets `samples`, `sample_waves` and `samples_budget_stopped`."""
    n, cap = request.n, request.max_tokens
    out: list[Completion] = []
    waves: list[int] = []
    stopped = False
    split = ctx.ledger.budget.samples == "split"  # the older rule: one request, each sample clamped
    while len(out) < n:
        left = ctx.ledger.remaining_tokens
        k = n - len(out) if left is None or split else min(n - len(out), left // cap)
        if k < 1:
            stopped = True
            break
        try:
            got = await ctx.generate(_with_n(request, k))
        except BudgetExhausted:  # nothing left after all (cannot happen after the check)
            stopped = True
            break
        if split:  # a sample the clamp cut short says so
            out.extend(dataclasses.replace(c, finish_reason="budget")
                       if c.finish_reason == "length" and len(c.token_ids) < cap else c for c in got.completions)
            waves.append(k)
            break
        out.extend(got.completions)
        waves.append(k)
    if stats is not None:
        stats["samples"] = len(out)
        stats["sample_waves"] = waves
        stats["samples_budget_stopped"] = stopped
    return out


def _with_n(request: GenerationRequest, n: int) -> GenerationRequest:
    return request if request.n == n else dataclasses.replace(request, n=n)


async def sample_candidates(
    problem: Problem,
    ctx: SolveContext,
    n: int,
    temperature: float,
    top_p: float,
    max_tokens: int,
    stop: tuple[str, ...] = (),
    stats: dict[str, Any] | None = None,
) -> list[Candidate]:
    """Up to `n` independent samples of a complete solution, with answers and classes;
    under a token budget as many complete ones as it pays for (module doc). `stats`
    (optional) records how many were drawn.

    Log-probabilities are requested only when the verifier reads them (self-certainty),
    so plain sampling costs what a raw engine call costs."""
    if n < 1:
        raise ValueError(f"strategy.n must be >= 1, got {n}")
    wants_lp = ctx.verifier is not None and ctx.verifier.needs_logprobs
    req = GenerationRequest(
        prompt_token_ids=ctx.prompt_ids(problem),
        n=n,
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        stop=tuple(stop),
        logprobs=1 if wants_lp else None,
    )
    completions = await draw_complete(ctx, req, stats)
    for c in completions:  # for a judge riding the policy's cache (ttscale.policy_tokens)
        remember(ctx, c.text, c.token_ids)
    cands = [
        Candidate(
            text=c.text,
            answer=ctx.extract_answer(c.text),
            num_tokens=len(c.token_ids),
            finish_reason=c.finish_reason,
            mean_logprob=c.mean_logprob,
        )
        for c in completions
    ]
    cluster_answers(ctx.task, cands)
    return cands


def verifier_call_costs(verifier: Any, problem: Problem, cands: Sequence[Candidate], ctx: SolveContext) -> list[int]:
    """What scoring each candidate would cost the verifier budget (`Verifier.call_costs`;
    one call each for a scorer that does not say)."""
    costs = getattr(verifier, "call_costs", None)
    return list(costs(problem, cands, ctx)) if costs is not None else [1] * len(cands)


async def score_candidates(problem: Problem, ctx: SolveContext, cands: list[Candidate]) -> None:
    """Score candidates with the verifier, within the verifier-call budget (checked before
    scoring, with what each candidate costs: the leading ones the budget pays for in full
    are scored, the rest stay unscored); sets `.score`."""
    if ctx.verifier is None or not cands:
        return
    allowed = ctx.ledger.verifier_allowance_for(verifier_call_costs(ctx.verifier, problem, cands, ctx))
    if allowed <= 0:
        return
    scores = await score_each(lambda cs: ctx.verifier.score(problem, cs, ctx), cands[:allowed])
    for c, s in zip(cands, scores):
        if isinstance(s, Exception):  # this candidate stays unscored, the run goes on
            c.extra["verifier_error"] = f"{type(s).__name__}: {s}"
        else:
            c.score = float(s)


async def score_each(call: Callable[[list[T]], Awaitable[Sequence[Any]]], items: list[T]) -> list[Any]:
    """`await call(items)`, one result per item. When the batch call raises, each item is
    scored alone, so an item that makes the verifier raise gets its exception as its
    result and the others their scores: a failing verifier marks a candidate, not the run.
    A verifier that raises on every item is broken, not the items: that error is raised
    (the runner then records the problem as failed)."""
    try:
        return list(await call(items))
    except Exception:  # noqa: BLE001
        if len(items) <= 1:
            raise
    out: list[Any] = []
    for item in items:
        try:
            out.append((await call([item]))[0])
        except Exception as e:  # noqa: BLE001
            out.append(e)
    if all(isinstance(x, Exception) for x in out):
        raise out[0]
    return out


def plurality(cands: list[Candidate], weights: list[float] | None = None) -> int | None:
    """Index of a representative of the heaviest answer class (count, or sum of weights).

    Ties go to the class that appeared first, so the choice is deterministic."""
    totals: dict[int, float] = {}
    first: dict[int, int] = {}
    for i, c in enumerate(cands):
        if c.cluster is None:
            continue
        w = 1.0 if weights is None else weights[i]
        totals[c.cluster] = totals.get(c.cluster, 0.0) + w
        first.setdefault(c.cluster, i)
    if not totals:
        return None
    best = max(totals, key=lambda k: (totals[k], -first[k]))
    return first[best]
