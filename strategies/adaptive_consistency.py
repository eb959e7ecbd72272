"""Adaptive consistency: self-consistency that stops sampling a problem once its majority is
settled.

Aggarwal, Madaan, Yang, Mausam 2023, "Let's Sample Step by Step: Adaptive-Consistency for
Efficient Reasoning and Coding with LLMs" (arXiv:2305.11860), as also offered by its_hub.
Solutions are drawn in waves (`init_samples`, then `wave_size` each, or a doubling total with
`schedule: doubling`); after each wave the Beta stopping rule (`ttscale.stopping`, the paper's
`conf_thresh`, 0.95) decides whether to stop; `n` is the maximum number of samples. The
answer is the plurality of what was drawn. Records say how many samples each problem drew
(`stats.samples`, `stats.waves`, `stats.stopped_early`, `stats.stop_probability`).

With `conf_topk` set, each sample also stores its DeepConf confidence (so confidence voters
can replay the pool); off by default, so sampling costs what plain sampling costs.
"""

from __future__ import annotations

from ttscale.context import SolveContext
from ttscale.stopping import settled, wave_sizes
from ttscale.strategies.confidence_sampling import ConfidenceSettings, sample_with_confidence
from ttscale.strategies.sampling import plurality, sample_candidates
from ttscale.strategy import RequestShape, Strategy
from ttscale.task import cluster_answers
from ttscale.types import Candidate, Problem, Result


class AdaptiveConsistency(Strategy):
    name = "adaptive_consistency"
    count_params = ("n", "init_samples", "wave_size")
    independent_samples = False  # the pool size depends on the samples (optional stopping): no curves over k

    def __init__(
        self,
        n: int = 16,
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_tokens: int = 256,
        conf_thresh: float = 0.95,
        init_samples: int = 1,
        wave_size: int = 1,
        schedule: str = "fixed",
        conf_topk: int | None = None,
        window_size: int = 2048,
    ) -> None:
        self.n, self.temperature, self.top_p, self.max_tokens = n, temperature, top_p, max_tokens
        self.conf_thresh, self.init_samples, self.wave_size, self.schedule = conf_thresh, init_samples, wave_size, schedule
        self.conf_topk, self.window_size = conf_topk, window_size

    def check(self) -> None:
        super().check()
        if isinstance(self.conf_thresh, bool) or not isinstance(self.conf_thresh, (int, float)) or not 0.5 < self.conf_thresh <= 1:
            raise ValueError(f"strategy.conf_thresh must be in (0.5, 1], got {self.conf_thresh!r}")
        wave_sizes(1, 1, 1, self.schedule)  # raises on an unknown schedule
        if self.conf_topk is not None and (not isinstance(self.conf_topk, int) or self.conf_topk < 1):
            raise ValueError(f"strategy.conf_topk must be null or an integer >= 1, got {self.conf_topk!r}")

    def request_shape(self) -> RequestShape:
        return RequestShape(min(self.init_samples, self.n), self.max_tokens, "max_tokens")

    async def _wave(self, problem: Problem, ctx: SolveContext, size: int) -> list[Candidate]:
        if self.conf_topk is None:
            return await sample_candidates(problem, ctx, size, self.temperature, self.top_p, self.max_tokens)
        cs = ConfidenceSettings(self.conf_topk, self.window_size, self.window_size)
        return await sample_with_confidence(problem, ctx, size, self.temperature, self.top_p, self.max_tokens, cs)

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        cands: list[Candidate] = []
        waves, stop, p = 0, False, 0.0
        for size in wave_sizes(self.n, self.init_samples, self.wave_size, self.schedule):
            got = await self._wave(problem, ctx, size)
            if not got:  # budget spent
                break
            cands += got
            waves += 1
            cluster_answers(ctx.task, cands)  # classes over the whole pool, ids by first appearance
            stop, p = settled([c.cluster for c in cands], self.conf_thresh)
            if stop:
                break
        sel = plurality(cands)
        return Result(
            problem_id=problem.id,
            answer=cands[sel].answer if sel is not None else None,
            candidates=cands,
            selected=sel,
            stats={"samples": len(cands), "waves": waves, "stopped_early": stop and len(cands) < self.n,
                   "stop_probability": round(p, 6), "max_samples": self.n},
        )
