"""Generating one step of several sequences, continued across engine requests.

A step search asks for the next step of some partial solutions: `n` continuations of a
prefix in one request, stopped at the step delimiter. One request generates at most
`chunk` tokens (`strategy.step.max_step_tokens`); a continuation cut there has not ended
its step, so it goes on in a further request (prompt = prefix + what it generated, as
token IDs, so the prefix cache serves it) until it reaches the delimiter, the end of
sequence, or its trajectory's token allowance. The caller gets one merged completion
per sequence: the step as if it had been generated in one request.

Rounds. The first requests of every job are launched together (one `asyncio.gather`);
then the continuations still cut, one request each (`n = 1`), launched together; and so
on. Seeds are drawn in a fixed order within each round, so a run is deterministic
whatever order the engine answers in.

Budget. Under a token budget, what is left is shared among a round's sequences *before*
it is launched (each gets at most `remaining // sequences` tokens; when fewer tokens are
left than sequences, the later ones get none), so requests in flight together can never
overrun `budget.max_tokens`. A sequence the budget cannot pay for is cut: its first
request refused, it yields nothing; refused later, it comes back with `budget_cut` set.

A delimiter split across two requests (a chunk ending in "\\n", the next starting with
"\\n") is found after the merge and the step ends there, as the engine's stop string
would have ended it in one request.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

from ttscale.budget import BudgetExhausted
from ttscale.context import SolveContext
from ttscale.engine import Completion, GenerationRequest


@dataclass(frozen=True)
class StepJob:
    """`n` next steps of one prefix."""

    prefix_ids: Sequence[int]  # the prompt plus the partial solution, as token IDs
    n: int
    allowance: int  # tokens the trajectory may still generate (its max_total_tokens left)
    stop: tuple[str, ...]  # the step delimiter; () for a last step that runs to the end
    carry_on: bool = True  # a chunk cut at `chunk` tokens goes on in the next request


@dataclass
class StepPiece:
    """One sequence's step, merged over its requests."""

    completion: Completion
    budget_cut: bool = False  # the budget refused a continuation: the step did not end
    requests: int = 1


@dataclass
class RoundStats:
    requests: int = 0
    waves: list[int] = field(default_factory=list)  # requests launched together, per round
    refused: bool = False  # the budget did not cover some sequence


def share_budget(left: int | None, ks: Sequence[int]) -> tuple[list[int], int | None]:
    """(sequences granted per job, tokens per sequence) when `left` tokens remain: at least
    one token per granted sequence, earlier jobs first; None: no budget."""
    if left is None:
        return list(ks), None
    room, out = left, []
    for k in ks:
        g = max(0, min(int(k), room))
        out.append(g)
        room -= g
    total = sum(out)
    return out, (left // total if total else 0)


async def generate_steps(
    ctx: SolveContext,
    jobs: Sequence[StepJob],
    chunk: int,
    temperature: float,
    top_p: float,
    logprobs: int | None,
    stats: RoundStats | None = None,
) -> list[list[StepPiece]]:
    """The steps of every job (see the module doc): one list of pieces per job, `[]` for a
    job the budget did not cover at all."""
    stats = stats if stats is not None else RoundStats()

    def request(prefix: Sequence[int], n: int, cap: int, stop: tuple[str, ...]) -> GenerationRequest:
        return GenerationRequest(
            prompt_token_ids=list(prefix), n=n, temperature=temperature, top_p=top_p, max_tokens=cap,
            stop=stop, include_stop_str_in_output=True, logprobs=logprobs,
        )

    async def call(req: GenerationRequest) -> list[Completion] | None:
        try:
            return (await ctx.generate(req)).completions
        except BudgetExhausted:
            return None

    # ---- round 1: n continuations of each prefix, one request per job
    ks, per_seq = share_budget(ctx.ledger.remaining_tokens, [j.n for j in jobs])
    launch = [i for i, k in enumerate(ks) if k > 0]
    caps = {i: _cap(jobs[i].allowance, 0, chunk, per_seq) for i in launch}
    outs = await asyncio.gather(*(call(request(jobs[i].prefix_ids, ks[i], caps[i], jobs[i].stop)) for i in launch))
    _count(stats, len(launch), outs)
    result: list[list[StepPiece]] = [[] for _ in jobs]
    for i, comps in zip(launch, outs):
        result[i] = [StepPiece(completion=c) for c in (comps or [])]
    if any(k < j.n for k, j in zip(ks, jobs)) or any(c is None for c in outs):
        stats.refused = True

    # ---- later rounds: every piece still cut mid-step, one request each
    while True:
        pending = [(i, p) for i, pieces in enumerate(result) for p in pieces if _goes_on(p, jobs[i], chunk)]
        if not pending:
            break
        granted, per_seq = share_budget(ctx.ledger.remaining_tokens, [1] * len(pending))
        todo = [(i, p) for (i, p), g in zip(pending, granted) if g]
        for (_, p), g in zip(pending, granted):
            if not g:
                p.budget_cut = True
                stats.refused = True
        if not todo:
            break
        reqs = [
            request(list(jobs[i].prefix_ids) + p.completion.token_ids, 1,
                    _cap(jobs[i].allowance, len(p.completion.token_ids), chunk, per_seq), jobs[i].stop)
            for i, p in todo
        ]
        outs = await asyncio.gather(*(call(r) for r in reqs))
        _count(stats, len(todo), outs)
        for (i, p), comps in zip(todo, outs):
            if not comps:
                p.budget_cut = stats.refused = True
                continue
            p.completion = _merge(p.completion, comps[0], jobs[i].stop, ctx)
            p.requests += 1
    return result


def _cap(allowance: int, used: int, chunk: int, per_seq: int | None) -> int:
    cap = max(1, min(chunk, allowance - used))
    return cap if per_seq is None else max(1, min(cap, per_seq))


def _count(stats: RoundStats, launched: int, outs: Sequence[list[Completion] | None]) -> None:
    stats.requests += launched
    if any(outs):
        stats.waves.append(launched)


def _goes_on(piece: StepPiece, job: StepJob, chunk: int) -> bool:
    c = piece.completion
    return (
        not piece.budget_cut
        and job.carry_on
        and c.finish_reason == "length"
        and len(c.token_ids) < job.allowance
    )


def _merge(head: Completion, tail: Completion, stop: tuple[str, ...], ctx: SolveContext) -> Completion:
    """`head` continued by `tail`; a stop string straddling the two ends the step there."""
    ids = list(head.token_ids) + list(tail.token_ids)
    text = head.text + tail.text
    lps = None if head.token_logprobs is None and tail.token_logprobs is None else \
        list(head.token_logprobs or []) + list(tail.token_logprobs or [])
    tops = None if head.top_logprobs is None and tail.top_logprobs is None else \
        list(head.top_logprobs or []) + list(tail.top_logprobs or [])
    merged = Completion(token_ids=ids, text=text, finish_reason=tail.finish_reason, stop_reason=tail.stop_reason,
                        token_logprobs=lps, top_logprobs=tops)
    for s in stop:
        start = text.find(s, max(0, len(head.text) - len(s) + 1))
        if 0 <= start < len(head.text):  # begins in head, ends in tail: cut after it
            return _cut_after(merged, head, s, start + len(s), ctx)
    return merged


def _cut_after(merged: Completion, head: Completion, stop: str, end: int, ctx: SolveContext) -> Completion:
    """`merged` cut at the first token of the tail whose text reaches `end` characters."""
    n_head = len(head.token_ids)
    tail_ids = merged.token_ids[n_head:]
    for j in range(1, len(tail_ids) + 1):
        piece = ctx.tokenizer.decode(tail_ids[:j])
        if len(head.text) + len(piece) >= end:
            k = n_head + j
            return dataclasses.replace(
                merged, token_ids=merged.token_ids[:k], text=head.text + piece, finish_reason="stop",
                stop_reason=stop,
                token_logprobs=None if merged.token_logprobs is None else merged.token_logprobs[:k],
                top_logprobs=None if merged.top_logprobs is None else merged.top_logprobs[:k],
            )
    return merged
