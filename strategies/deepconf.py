"""DeepConf offline: sample N traces with their token confidence, vote with the confidence.

Fu, Wang, Tian, Zhao 2025, "Deep Think with Confidence" (arXiv:2508.15260; reference code
facebookresearch/deepconf). Each trace's confidence comes from the top-`conf_topk`
log-probabilities of its tokens (`ttscale.confidence`); the answer is a majority over the
answered traces, optionally only the top `eta` percent of them by a trace score (the paper's
DeepConf-low keeps eta = 10, DeepConf-high eta = 90), weighted by that score
(`weighting: confidence`), by 1 / mean top-k entropy (`inverse_entropy`, "The Sequential
Edge", 2025), or unweighted (`none`). `confidence` names the score as the reference code
does: `mean`, `tail` (last `tail_tokens`), `bottom_window` (lowest `bottom_percent` of the
`window_size` groups), `min_window` (the lowest group). The paper's defaults: k = 20, window
and tail 2048 tokens; traces shorter than the window have one group (their mean).

Every candidate keeps its confidence summary, so the other voters' @k curves come from the
same pool (`ttscale.confidence_curves`) and `scripts/replay.py` can re-vote it.
"""

from __future__ import annotations

from ttscale.confidence import SCORES, candidate_weight
from ttscale.confidence_vote import vote_index
from ttscale.context import SolveContext
from ttscale.strategies.confidence_sampling import ConfidenceSettings, assign_classes, sample_with_confidence
from ttscale.strategy import RequestShape, Strategy
from ttscale.types import Candidate, Problem, Result

WEIGHTINGS = ("confidence", "inverse_entropy", "none")


def check_voter(weighting: str, confidence: str, eta: float) -> None:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"strategy.weighting must be one of {list(WEIGHTINGS)}, got {weighting!r}")
    if confidence not in SCORES:
        raise ValueError(f"strategy.confidence must be one of {list(SCORES)}, got {confidence!r}")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 < eta <= 100:
        raise ValueError(f"strategy.eta must be a percentage in (0, 100], got {eta!r}")


def confidence_vote(cands: list[Candidate], weighting: str, confidence: str, eta: float) -> int | None:
    weights = [candidate_weight(c.extra, weighting, confidence) for c in cands]
    fscores = [candidate_weight(c.extra, "confidence", confidence) for c in cands]
    return vote_index([c.cluster for c in cands], weights, fscores, eta)


class DeepConfOffline(Strategy):
    name = "deepconf_offline"
    count_params = ("n", "conf_topk", "window_size", "tail_tokens")
    independent_samples = True

    def __init__(
        self,
        n: int = 16,
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_tokens: int = 256,
        conf_topk: int = 20,
        window_size: int = 2048,
        tail_tokens: int = 2048,
        bottom_percent: float = 0.1,
        confidence: str = "min_window",
        eta: float = 10.0,
        weighting: str = "confidence",
    ) -> None:
        self.n, self.temperature, self.top_p, self.max_tokens = n, temperature, top_p, max_tokens
        self.conf_topk, self.window_size, self.tail_tokens, self.bottom_percent = conf_topk, window_size, tail_tokens, bottom_percent
        self.confidence, self.eta, self.weighting = confidence, eta, weighting

    def check(self) -> None:
        super().check()
        check_voter(self.weighting, self.confidence, self.eta)
        if not 0 < self.bottom_percent <= 1:
            raise ValueError(f"strategy.bottom_percent must be in (0, 1], got {self.bottom_percent!r}")

    def request_shape(self) -> RequestShape:
        return RequestShape(self.n, self.max_tokens, "max_tokens")  # n whole samples

    @property
    def settings(self) -> ConfidenceSettings:
        return ConfidenceSettings(self.conf_topk, self.window_size, self.tail_tokens, self.bottom_percent)

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        cands = await sample_with_confidence(
            problem, ctx, self.n, self.temperature, self.top_p, self.max_tokens, self.settings
        )
        assign_classes(ctx, cands)
        sel = confidence_vote(cands, self.weighting, self.confidence, self.eta)
        return Result(
            problem_id=problem.id,
            answer=cands[sel].answer if sel is not None else None,
            candidates=cands,
            selected=sel,
            stats={"samples": len(cands), "answer_classes": len({c.cluster for c in cands if c.cluster is not None})},
        )
