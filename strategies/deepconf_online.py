"""DeepConf online: calibrate a confidence threshold on warm-up traces, then stop every
further trace in the engine as soon as its windowed confidence falls below it.

Fu, Wang, Tian, Zhao 2025, "Deep Think with Confidence" (arXiv:2508.15260), Algorithm 2;
reference code facebookresearch/deepconf (`wrapper.py` `_deepthink_online`). Names as there:
`warmup_traces` (N_init) traces are sampled in full with their top-`conf_topk`
log-probabilities; the threshold s is the (100 - `eta`)th percentile of their lowest group
confidences (`min_window`, groups of `window_size` tokens): `eta` = 10 is DeepConf-low
(aggressive), 90 DeepConf-high. The other `n - warmup_traces` traces (`n`: the paper's total
budget B) are generated with `GenerationRequest.confidence_stop`: the engine ends a trace at
the first position whose window mean is below s (backends/confidence_stop.py on vLLM; the
fake engine does the same), so the ledger charges only the tokens generated. The vote, as
the reference: a majority weighted by `min_window` over the warm-up traces at or above s and
the final traces that were not stopped. `consensus_threshold` (tau, the paper's 0.95;
null = off) adds the paper's adaptive sampling: the final traces come in waves of
`wave_size`, and sampling stops once the leading answer holds tau of the vote's weight.
Records: `stats.threshold`, `stats.confidence_stopped`, `stats.samples`; stopped
candidates carry `extra.confidence_stopped`.
"""

from __future__ import annotations

import numpy as np

from ttscale.confidence_vote import vote_index
from ttscale.context import SolveContext
from ttscale.engine import ConfidenceStop
from ttscale.strategies.confidence_sampling import ConfidenceSettings, assign_classes, sample_with_confidence
from ttscale.strategy import RequestShape, Strategy
from ttscale.types import Candidate, Problem, Result


def lowest_group(c: Candidate) -> float | None:
    info = c.extra.get("confidence")
    return None if not info else float(info["scores"]["min_window"])


class DeepConfOnline(Strategy):
    name = "deepconf_online"
    count_params = ("n", "warmup_traces", "conf_topk", "window_size", "wave_size")
    independent_samples = False  # stopped traces are truncated: no curves over k

    def __init__(
        self,
        n: int = 16,
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_tokens: int = 256,
        warmup_traces: int = 4,
        eta: float = 10.0,
        conf_topk: int = 20,
        window_size: int = 2048,
        consensus_threshold: float | None = None,
        wave_size: int | None = None,
    ) -> None:
        self.n, self.temperature, self.top_p, self.max_tokens = n, temperature, top_p, max_tokens
        self.warmup_traces, self.eta, self.conf_topk, self.window_size = warmup_traces, eta, conf_topk, window_size
        self.consensus_threshold = consensus_threshold
        self.wave_size = wave_size if wave_size is not None else max(1, n - warmup_traces)

    def check(self) -> None:
        super().check()
        if self.warmup_traces > self.n:
            raise ValueError(f"strategy.warmup_traces must be <= strategy.n, got {self.warmup_traces} > {self.n}")
        if isinstance(self.eta, bool) or not isinstance(self.eta, (int, float)) or not 0 < self.eta <= 100:
            raise ValueError(f"strategy.eta must be a percentage in (0, 100], got {self.eta!r}")
        tau = self.consensus_threshold
        if tau is not None and (isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.5 < tau <= 1):
            raise ValueError(f"strategy.consensus_threshold must be null or in (0.5, 1], got {tau!r}")

    def request_shape(self) -> RequestShape:
        return RequestShape(self.warmup_traces, self.max_tokens, "max_tokens")

    def _settings(self) -> ConfidenceSettings:
        return ConfidenceSettings(self.conf_topk, self.window_size, self.window_size)

    def _voters(self, warm: list[Candidate], final: list[Candidate], s: float) -> list[Candidate]:
        keep = [c for c in warm if (lowest_group(c) or 0.0) >= s]
        return keep + [c for c in final if not c.extra.get("confidence_stopped")]

    def _consensus(self, voters: list[Candidate]) -> bool:
        if self.consensus_threshold is None:
            return False
        totals: dict[int, float] = {}
        for c in voters:
            if c.cluster is not None:
                totals[c.cluster] = totals.get(c.cluster, 0.0) + (lowest_group(c) or 0.0)
        total = sum(totals.values())
        return total > 0 and max(totals.values()) / total >= self.consensus_threshold

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        cs = self._settings()
        args = (self.temperature, self.top_p, self.max_tokens, cs)
        warm = await sample_with_confidence(problem, ctx, self.warmup_traces, *args)
        lows = [x for x in map(lowest_group, warm) if x is not None]
        s = float(np.percentile(lows, 100 - self.eta)) if lows else float("-inf")
        final: list[Candidate] = []
        stop = ConfidenceStop(threshold=s, window_size=self.window_size, conf_topk=self.conf_topk)
        while len(warm) + len(final) < self.n and warm:
            assign_classes(ctx, warm + final)
            if self._consensus(self._voters(warm, final, s)):
                break
            size = min(self.wave_size, self.n - len(warm) - len(final))
            got = await sample_with_confidence(problem, ctx, size, *args, confidence_stop=stop)
            if not got:  # budget spent
                break
            final += got
        cands = warm + final
        assign_classes(ctx, cands)
        voters = self._voters(warm, final, s)
        ids = {id(c) for c in voters}
        weights = [lowest_group(c) if id(c) in ids else None for c in cands]
        sel = vote_index([c.cluster if id(c) in ids else None for c in cands], weights)
        return Result(
            problem_id=problem.id,
            answer=cands[sel].answer if sel is not None else None,
            candidates=cands,
            selected=sel,
            stats={"samples": len(cands), "warmup": len(warm), "threshold": s if np.isfinite(s) else None, "voters": len(voters),
                   "confidence_stopped": sum(1 for c in final if c.extra.get("confidence_stopped"))},
        )
