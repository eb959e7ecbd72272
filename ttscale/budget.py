"""The compute ledger: every cost of a problem is debited here, and budgets are enforced here.

FLOP model (documented in the README): a forward pass over one token costs
2 x (active parameters) FLOPs. Prefill counts only prompt tokens the engine
computed (prefix-cache hits are free); decode counts generated tokens; a
verifier's tokens are charged with the verifier's own parameter count.

`Budget.max_tokens` limits the *generated* tokens of the policy for one
problem; `Budget.max_verifier_calls` limits verifier calls (one call = one
candidate or one step prefix scored). A request that would overrun the token
budget has its `max_tokens` clamped so the limit is never exceeded; a request
made with nothing left raises `BudgetExhausted`, which strategies treat as
"stop expanding". Requests of one problem in flight together cannot overrun the
budget either: each holds `n x max_tokens` of it until its output is charged.
Parallel sampling never relies on the clamp: it draws complete samples in waves, each
sample holding its whole `max_tokens` before it is launched (`strategies/sampling.py`),
so no sample is cut by the budget.

Verifier calls are granted *before* scoring: `verifier_allowance_for(costs)` takes what
each item would cost (a process scorer knows how many uncached step prefixes a path
needs) and grants the leading items the budget pays for in full, so the cap holds
exactly. When a batch is cut short the verifier budget counts as exhausted (a search
stops expanding instead of growing paths nobody can score).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from ttscale.engine import Engine, GenerationOutput, GenerationRequest
from ttscale.types import Usage


class BudgetExhausted(Exception):
    """Raised when a request is made after the problem's budget is spent."""


SAMPLE_RULES = ("complete", "split")  # `budget.samples`


@dataclass
class Budget:
    max_tokens: int | None = None  # generated policy tokens per problem
    max_verifier_calls: int | None = None  # verifier calls per problem
    # How parallel sampling meets a token budget: "complete" (default) draws complete
    # samples in waves until one more does not fit; "split" (the older rule) sends the n
    # samples at once and the clamp cuts each to about max_tokens / n.
    samples: str = "complete"

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_verifier_calls"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"budget.{name} must be >= 1 or null, got {v}")
        if self.samples not in SAMPLE_RULES:
            raise ValueError(f"budget.samples must be one of {SAMPLE_RULES}, got {self.samples!r}")


class Ledger:
    """Per-problem account of compute. Wraps the engine so nothing goes uncounted."""

    def __init__(self, engine: Engine, budget: Budget | None = None) -> None:
        self.engine = engine
        self.budget = budget or Budget()
        self.usage = Usage()
        self._params = float(getattr(engine, "num_parameters", 0) or 0)
        self._reserved = 0  # generated tokens held by requests in flight (see `generate`)
        self._verifier_denied = False  # a scoring batch was cut short by the verifier budget

    # ---- budget queries -------------------------------------------------
    @property
    def remaining_tokens(self) -> int | None:
        if self.budget.max_tokens is None:
            return None
        return max(0, self.budget.max_tokens - self.usage.generated_tokens - self._reserved)

    @property
    def remaining_verifier_calls(self) -> int | None:
        if self.budget.max_verifier_calls is None:
            return None
        return max(0, self.budget.max_verifier_calls - self.usage.verifier_calls)

    @property
    def tokens_exhausted(self) -> bool:
        r = self.remaining_tokens
        return r is not None and r <= 0

    @property
    def verifier_exhausted(self) -> bool:
        r = self.remaining_verifier_calls
        return r is not None and (r <= 0 or self._verifier_denied)

    @property
    def exhausted(self) -> bool:
        return self.tokens_exhausted or self.verifier_exhausted

    # ---- generation -----------------------------------------------------
    def clamp(self, request: GenerationRequest) -> GenerationRequest:
        """The request cut to what the budget still allows; raises when nothing is left."""
        r = self.remaining_tokens
        if r is None:
            return request
        if r < request.n:
            raise BudgetExhausted(f"{r} generated tokens left, {request.n} sequences asked")
        per_seq = min(request.max_tokens, r // request.n)
        if per_seq == request.max_tokens:
            return request
        return dataclasses.replace(request, max_tokens=per_seq)

    async def generate(self, request: GenerationRequest) -> GenerationOutput:
        request = self.clamp(request)
        # Under a token budget the request holds what it may generate until it is charged, so
        # requests launched together (asyncio.gather) share what is left instead of each
        # seeing all of it.
        hold = request.n * request.max_tokens if self.budget.max_tokens is not None else 0
        self._reserved += hold
        try:
            out = await self.engine.generate(request)
        finally:
            self._reserved -= hold
        self.charge_generation(out)
        return out

    def charge_generation(self, out: GenerationOutput) -> None:
        """Charge one engine answer. Cache hits the engine did not report (None) are
        unknown: its prompt tokens count as computed (FLOPs an upper bound) and in
        `cache_unknown_prompt_tokens`, so the record says unknown rather than 0."""
        u = self.usage
        u.requests += 1
        u.prompt_tokens += out.prompt_tokens
        cached = out.cached_prompt_tokens
        if cached is None:
            u.cache_unknown_prompt_tokens += out.prompt_tokens
            cached = 0
        u.cached_prompt_tokens += cached
        gen = out.generated_tokens
        u.generated_tokens += gen
        u.prefill_flops += 2.0 * self._params * (out.prompt_tokens - cached)
        u.decode_flops += 2.0 * self._params * gen

    # ---- verifier -------------------------------------------------------
    def verifier_allowance(self, wanted: int) -> int:
        """How many of `wanted` verifier calls (one call each) the budget still allows."""
        return self.verifier_allowance_for([1] * max(0, wanted))

    def verifier_allowance_for(self, costs: Sequence[int]) -> int:
        """How many of the leading items the verifier budget pays for in full, scoring item i
        costing `costs[i]` calls (given the items before it). Items the budget does not cover
        stay unscored, and the verifier budget then counts as exhausted."""
        r = self.remaining_verifier_calls
        if r is None:
            return len(costs)
        allowed, spent = 0, 0
        for c in costs:
            if spent + max(0, int(c)) > r:
                self._verifier_denied = True
                break
            spent += max(0, int(c))
            allowed += 1
        return allowed

    def charge_verifier(
        self,
        calls: int,
        tokens: int = 0,
        cached_tokens: int | None = 0,
        parameters: float = 0.0,
    ) -> None:
        """Charge verifier work; `cached_tokens=None`: the engine did not report its cache
        hits (unknown; the tokens count as computed, as in `charge_generation`)."""
        u = self.usage
        u.verifier_calls += calls
        u.verifier_tokens += tokens
        if cached_tokens is None:
            u.verifier_cache_unknown_tokens += tokens
            cached_tokens = 0
        u.verifier_cached_tokens += cached_tokens
        u.verifier_flops += 2.0 * float(parameters) * max(0, tokens - cached_tokens)
