"""Independent sampling shared by the parallel strategies: one request with `n`
samples (the engine batches them), answers extracted, classes assigned."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Sequence, TypeVar

from ttscale.budget import BudgetExhausted
from ttscale.context import SolveContext
from ttscale.engine import GenerationRequest
from ttscale.types import Candidate, Problem
from ttscale.task import cluster_answers

T = TypeVar("T")


async def sample_candidates(
    problem: Problem,
    ctx: SolveContext,
    n: int,
    temperature: float,
    top_p: float,
    max_tokens: int,
    stop: tuple[str, ...] = (),
) -> list[Candidate]:
    """`n` independent samples of a complete solution, with answers and classes.

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
    try:
        out = await ctx.generate(req)
    except BudgetExhausted:
        return []
    cands = [
        Candidate(
            text=c.text,
            answer=ctx.extract_answer(c.text),
            num_tokens=len(c.token_ids),
            finish_reason=c.finish_reason,
            mean_logprob=c.mean_logprob,
        )
        for c in out.completions
    ]
    cluster_answers(ctx.task, cands)
    return cands


async def score_candidates(problem: Problem, ctx: SolveContext, cands: list[Candidate]) -> None:
    """Score candidates with the verifier, within the verifier-call budget; sets `.score`."""
    if ctx.verifier is None or not cands:
        return
    allowed = ctx.ledger.verifier_allowance(len(cands))
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
