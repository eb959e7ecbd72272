"""Sampling that keeps each trace's confidence: the engine returns the top-`conf_topk`
log-probabilities of every generated token, and each candidate stores their summary
(`ttscale.confidence.summarize`: the DeepConf trace scores, the mean top-k entropy, the group
series downsampled) in `extra["confidence"]`, never the log-probabilities themselves."""

from __future__ import annotations

from dataclasses import dataclass

from ttscale.budget import BudgetExhausted
from ttscale.confidence import summarize
from ttscale.context import SolveContext
from ttscale.engine import Completion, ConfidenceStop, GenerationRequest
from ttscale.task import cluster_answers
from ttscale.types import Candidate, Problem


@dataclass(frozen=True)
class ConfidenceSettings:
    """DeepConf's names: `conf_topk` (k of the token confidence), `window_size` (the group
    window), `tail_tokens` (the tail score), `bottom_percent` (the bottom-window score)."""

    conf_topk: int = 20
    window_size: int = 2048
    tail_tokens: int = 2048
    bottom_percent: float = 0.1


def to_candidate(ctx: SolveContext, c: Completion, cs: ConfidenceSettings) -> Candidate:
    cand = Candidate(
        text=c.text,
        answer=ctx.extract_answer(c.text),
        num_tokens=len(c.token_ids),
        finish_reason=c.finish_reason,
        mean_logprob=c.mean_logprob,
    )
    if c.top_logprobs is not None:
        cand.extra["confidence"] = summarize(c.top_logprobs, cs.window_size, cs.tail_tokens, cs.bottom_percent)
    elif c.stored is not None and (c.stored.get("extra") or {}).get("confidence"):  # a replayed sample
        cand.extra["confidence"] = c.stored["extra"]["confidence"]
    if c.stop_reason == "confidence":  # ended in the engine by the online threshold
        cand.extra["confidence_stopped"] = True
    return cand


async def sample_with_confidence(
    problem: Problem,
    ctx: SolveContext,
    n: int,
    temperature: float,
    top_p: float,
    max_tokens: int,
    cs: ConfidenceSettings,
    confidence_stop: ConfidenceStop | None = None,
) -> list[Candidate]:
    """`n` samples in one request, each with its confidence summary; answers extracted
    (classes are assigned by the caller over the whole pool). [] when the budget is spent."""
    req = GenerationRequest(
        prompt_token_ids=ctx.prompt_ids(problem),
        n=n,
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        logprobs=cs.conf_topk,
        confidence_stop=confidence_stop,
    )
    try:
        out = await ctx.generate(req)
    except BudgetExhausted:
        return []
    return [to_candidate(ctx, c, cs) for c in out.completions]


def assign_classes(ctx: SolveContext, cands: list[Candidate]) -> None:
    cluster_answers(ctx.task, cands)
